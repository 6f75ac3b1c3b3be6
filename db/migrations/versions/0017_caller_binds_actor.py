"""The caller lookup names the actor too: `rollcall_caller` binds `app.actor` with the school.

The change feed (migration 0016) records who made each change from the transaction-local `app.actor`. A
request's first transaction is the one its caller was found in, so the function that binds the caller's
school binds the caller as the feed names them too (`user:<id>`, `api-token:<id>`,
`provisioning-token:<id>`: ids only), at no extra round trip. Otherwise the function is as before.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-02
"""

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

CALLER = """
CREATE OR REPLACE FUNCTION rollcall_caller(hash bytea, idle interval, touch_every interval)
RETURNS TABLE (school_id uuid, kind text, user_id uuid, username text, user_type text, is_admin boolean,
               must_change_password boolean, session_id uuid, token_id uuid, scopes text[])
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    found_school uuid;
    found_id uuid;
    found_user uuid;
    found_scopes text[];
    seen timestamptz;
    is_token boolean := false;
BEGIN
    -- Only the row with this hash is visible (its policy), and only for these two lookups.
    PERFORM set_config('app.token_hash', encode(hash, 'hex'), true);
    SELECT s.school_id, s.id, s.last_seen_at, s.user_id INTO found_school, found_id, seen, found_user
      FROM sessions s
     WHERE s.token_hash = hash AND s.revoked_at IS NULL AND s.expires_at > now()
       AND s.last_seen_at > now() - idle;
    IF found_id IS NULL THEN
        SELECT t.school_id, t.id, t.last_used_at, t.scopes INTO found_school, found_id, seen, found_scopes
          FROM api_tokens t WHERE t.token_hash = hash AND t.revoked_at IS NULL;
        is_token := found_id IS NOT NULL;
    END IF;
    PERFORM set_config('app.token_hash', '', true);
    IF found_id IS NULL THEN
        RETURN;
    END IF;
    IF NOT is_token THEN
        PERFORM set_config('app.school_id', found_school::text, true);
        PERFORM set_config('app.actor', 'user:' || found_user::text, true);
        RETURN QUERY
            SELECT found_school, 'SESSION'::text, u.id, u.username::text, u.type::text, u.is_admin,
                   u.must_change_password, found_id, NULL::uuid, '{}'::text[]
              FROM sessions s JOIN users u ON u.school_id = s.school_id AND u.id = s.user_id
             WHERE s.school_id = found_school AND s.id = found_id AND u.deleted_at IS NULL;
        IF NOT FOUND THEN
            PERFORM set_config('app.school_id', '', true);
            PERFORM set_config('app.actor', '', true);
            RETURN;
        END IF;
        IF seen < now() - touch_every THEN
            UPDATE sessions s SET last_seen_at = now()
             WHERE s.school_id = found_school AND s.id IN (
                   SELECT l.id FROM sessions l WHERE l.school_id = found_school AND l.id = found_id
                      AND l.last_seen_at < now() - touch_every FOR NO KEY UPDATE SKIP LOCKED);
        END IF;
        RETURN;
    END IF;
    PERFORM set_config('app.school_id', found_school::text, true);
    PERFORM set_config('app.actor',
        CASE WHEN 'PROVISION' = ANY(found_scopes) THEN 'provisioning-token:' ELSE 'api-token:' END
        || found_id::text, true);
    RETURN QUERY
        SELECT found_school, 'API_TOKEN'::text, NULL::uuid, ''::text, NULL::text, false, false, NULL::uuid,
               found_id, t.scopes
          FROM api_tokens t WHERE t.school_id = found_school AND t.id = found_id;
    IF seen IS NULL OR seen < now() - touch_every THEN
        UPDATE api_tokens t SET last_used_at = now()
         WHERE t.school_id = found_school AND t.id IN (
               SELECT l.id FROM api_tokens l WHERE l.school_id = found_school AND l.id = found_id
                  AND (l.last_used_at IS NULL OR l.last_used_at < now() - touch_every)
                  FOR NO KEY UPDATE SKIP LOCKED);
    END IF;
END
$$
"""

PREVIOUS = """
CREATE OR REPLACE FUNCTION rollcall_caller(hash bytea, idle interval, touch_every interval)
RETURNS TABLE (school_id uuid, kind text, user_id uuid, username text, user_type text, is_admin boolean,
               must_change_password boolean, session_id uuid, token_id uuid, scopes text[])
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    found_school uuid;
    found_id uuid;
    seen timestamptz;
    is_token boolean := false;
BEGIN
    -- Only the row with this hash is visible (its policy), and only for these two lookups.
    PERFORM set_config('app.token_hash', encode(hash, 'hex'), true);
    SELECT s.school_id, s.id, s.last_seen_at INTO found_school, found_id, seen
      FROM sessions s
     WHERE s.token_hash = hash AND s.revoked_at IS NULL AND s.expires_at > now()
       AND s.last_seen_at > now() - idle;
    IF found_id IS NULL THEN
        SELECT t.school_id, t.id, t.last_used_at INTO found_school, found_id, seen
          FROM api_tokens t WHERE t.token_hash = hash AND t.revoked_at IS NULL;
        is_token := found_id IS NOT NULL;
    END IF;
    PERFORM set_config('app.token_hash', '', true);
    IF found_id IS NULL THEN
        RETURN;
    END IF;
    IF NOT is_token THEN
        PERFORM set_config('app.school_id', found_school::text, true);
        RETURN QUERY
            SELECT found_school, 'SESSION'::text, u.id, u.username::text, u.type::text, u.is_admin,
                   u.must_change_password, found_id, NULL::uuid, '{}'::text[]
              FROM sessions s JOIN users u ON u.school_id = s.school_id AND u.id = s.user_id
             WHERE s.school_id = found_school AND s.id = found_id AND u.deleted_at IS NULL;
        IF NOT FOUND THEN
            PERFORM set_config('app.school_id', '', true);
            RETURN;
        END IF;
        IF seen < now() - touch_every THEN
            UPDATE sessions s SET last_seen_at = now()
             WHERE s.school_id = found_school AND s.id IN (
                   SELECT l.id FROM sessions l WHERE l.school_id = found_school AND l.id = found_id
                      AND l.last_seen_at < now() - touch_every FOR NO KEY UPDATE SKIP LOCKED);
        END IF;
        RETURN;
    END IF;
    PERFORM set_config('app.school_id', found_school::text, true);
    RETURN QUERY
        SELECT found_school, 'API_TOKEN'::text, NULL::uuid, ''::text, NULL::text, false, false, NULL::uuid,
               found_id, t.scopes
          FROM api_tokens t WHERE t.school_id = found_school AND t.id = found_id;
    IF seen IS NULL OR seen < now() - touch_every THEN
        UPDATE api_tokens t SET last_used_at = now()
         WHERE t.school_id = found_school AND t.id IN (
               SELECT l.id FROM api_tokens l WHERE l.school_id = found_school AND l.id = found_id
                  AND (l.last_used_at IS NULL OR l.last_used_at < now() - touch_every)
                  FOR NO KEY UPDATE SKIP LOCKED);
    END IF;
END
$$
"""


def upgrade() -> None:
    op.execute(CALLER)


def downgrade() -> None:
    op.execute(PREVIOUS)
