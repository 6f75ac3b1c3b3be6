"""OneRoster's OAuth 2.0 access tokens, and the caller lookup that reads them.

An app exchanges its API token (its client id and secret) at `POST /oauth/token` for a short-lived access
token (RFC 6749 section 4.4). Only the SHA-256 of the access token is stored, with the scopes it was granted,
its client (the API token) and when it expires. `rollcall_caller` finds it in the same one round trip as
sessions and API tokens (kind `OAUTH`), and only while its client is not revoked: revoking the API token
ends its access tokens on the very next request. The change feed gets an index by entity, which OneRoster's
`dateLastModified` reads.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-04
"""

from alembic import op

from db.migrations.rls import execute_script, protect_tenant_table

revision = "0019"
down_revision = "0018"
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
    found_client uuid;
    seen timestamptz;
    is_token boolean := false;
    is_access boolean := false;
BEGIN
    -- Only the row with this hash is visible (its policy), and only for these three lookups.
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
    IF found_id IS NULL THEN
        SELECT a.school_id, a.id, a.client_id, a.scopes INTO found_school, found_id, found_client, found_scopes
          FROM oauth_access_tokens a WHERE a.token_hash = hash AND a.expires_at > now();
        is_access := found_id IS NOT NULL;
    END IF;
    PERFORM set_config('app.token_hash', '', true);
    IF found_id IS NULL THEN
        RETURN;
    END IF;
    IF is_access THEN
        -- An access token works while its client (the API token it was issued to) does.
        PERFORM set_config('app.school_id', found_school::text, true);
        SELECT t.last_used_at INTO seen FROM api_tokens t
         WHERE t.school_id = found_school AND t.id = found_client AND t.revoked_at IS NULL
           AND 'ROSTER_READ' = ANY(t.scopes);
        IF NOT FOUND THEN
            PERFORM set_config('app.school_id', '', true);
            RETURN;
        END IF;
        PERFORM set_config('app.actor', 'api-token:' || found_client::text, true);
        RETURN QUERY
            SELECT found_school, 'OAUTH'::text, NULL::uuid, ''::text, NULL::text, false, false, NULL::uuid,
                   found_client, found_scopes;
        IF seen IS NULL OR seen < now() - touch_every THEN
            UPDATE api_tokens t SET last_used_at = now()
             WHERE t.school_id = found_school AND t.id IN (
                   SELECT l.id FROM api_tokens l WHERE l.school_id = found_school AND l.id = found_client
                      AND (l.last_used_at IS NULL OR l.last_used_at < now() - touch_every)
                      FOR NO KEY UPDATE SKIP LOCKED);
        END IF;
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

TOKEN_HASH = "(select decode(nullif(current_setting('app.token_hash', true), ''), 'hex'))"


def upgrade() -> None:
    execute_script("""
    CREATE TABLE oauth_access_tokens (
        school_id uuid NOT NULL,
        id uuid NOT NULL DEFAULT gen_random_uuid(),
        client_id uuid NOT NULL,
        token_hash bytea NOT NULL,
        scopes text[] NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        expires_at timestamptz NOT NULL,
        CONSTRAINT pk_oauth_access_tokens PRIMARY KEY (school_id, id),
        CONSTRAINT fk_oauth_access_tokens_client FOREIGN KEY (school_id, client_id)
            REFERENCES api_tokens (school_id, id) ON DELETE CASCADE,
        CONSTRAINT uq_oauth_access_tokens_school_id_token_hash UNIQUE (school_id, token_hash)
    );
    CREATE INDEX ix_oauth_access_tokens_token_hash ON oauth_access_tokens (token_hash);
    CREATE INDEX ix_oauth_access_tokens_expires_at ON oauth_access_tokens (school_id, expires_at);
    CREATE INDEX ix_changes_school_id_kind_entity ON changes (school_id, kind, entity_id, at)
    """)
    protect_tenant_table("oauth_access_tokens", grants="SELECT, INSERT, DELETE")
    op.execute(
        "CREATE POLICY oauth_access_tokens_lookup_by_token ON oauth_access_tokens FOR SELECT "
        f"USING (token_hash = {TOKEN_HASH})"
    )
    op.execute(CALLER)


def downgrade() -> None:
    op.execute(PREVIOUS)
    execute_script("""
    DROP INDEX ix_changes_school_id_kind_entity;
    DROP TABLE oauth_access_tokens
    """)
