"""Signing in with a password in two statements: one before the password is checked, one after.

- `users.username_key`: the username as sign-in looks it up (`lower(username)`), a stored generated column,
  and the unique index of active usernames on it instead of on the expression. Under row-level security a
  condition with a function that is not leakproof (`lower`) is not used to scan an index ahead of the
  policy's; a plain equality on a column is, so the lookup is one index probe.
- `rollcall_count_attempt(own, everywhere, address, known, device, window, account_limit)`: an attempt
  counted in its throttle buckets (db/throttle.py says which and why), one statement.
- `rollcall_sign_in_attempt(slug, typed_name, ...)`: the school found by its exact slug and bound, the
  active user found by name (lowered by PostgreSQL's own `lower`, as the key is: Python's differs, 'İ'), and the attempt counted (in a trusted browser's own bucket when the device
  cookie names the user found), all in one statement; returns the hash to check.
- `rollcall_open_session(...)`: after a correct password, the session opened (only for an account still
  active with the very hash that was checked, upgraded to a new hash when given), the last sign-in time set,
  the audit event written and the attempt forgiven in the throttle, one statement; returns the user's row.
- `rollcall_reauth_attempt(school, session, user)` / `rollcall_reauth_result(school, session, ok)`:
  re-authentication's count on the session with the hash to check, then its outcome.

All run as the caller (SECURITY INVOKER) with a fixed search_path: row-level security applies as to any
statement of the application role; each binds the school it works in for its own transaction, as
`set_config(..., true)` does.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-10
"""

from alembic import op

from db.migrations.rls import app_role, execute_script

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

SEARCH_PATH = "SET search_path = pg_catalog, public, pg_temp"

# One bucket's upsert (db/throttle.py): the count starts afresh once its window has passed.
_UPSERT = """
    INSERT INTO sign_in_throttle AS t (key, attempts, window_ends_at)
    {rows}
    ON CONFLICT (key) DO UPDATE SET
        attempts = CASE WHEN t.window_ends_at <= now() THEN 1 ELSE t.attempts + 1 END,
        window_ends_at = CASE WHEN t.window_ends_at <= now() THEN now() + time_window
                         ELSE t.window_ends_at END
    RETURNING t.attempts"""

COUNT_ATTEMPT = f"""
CREATE FUNCTION rollcall_count_attempt(
    own_key bytea, wide_key bytea, client_key bytea, known boolean, device boolean, time_window interval,
    account_limit integer)
RETURNS TABLE (attempts integer, everywhere integer, from_client integer)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER {SEARCH_PATH}
AS $$
#variable_conflict use_column
BEGIN
    IF device THEN
        RETURN QUERY WITH own AS ({_UPSERT.format(rows="VALUES (own_key, 1, now() + time_window)")})
        SELECT own.attempts, 0, 0 FROM own;
        RETURN;
    END IF;
    -- The account from this address; the account everywhere, unless this address has used up its own limit
    -- for the account; and, at the account's first attempt from this address in the window (and only for an
    -- existing account), the address. A count this attempt does not add to is read as it stood before.
    RETURN QUERY
    WITH own AS ({_UPSERT.format(rows="VALUES (own_key, 1, now() + time_window)")}),
    wide AS ({
    _UPSERT.format(
        rows="SELECT wide_key, 1, now() + time_window FROM own WHERE own.attempts <= account_limit"
    )
}),
    address AS ({
    _UPSERT.format(rows="SELECT client_key, 1, now() + time_window FROM own WHERE own.attempts = 1 AND known")
})
    SELECT own.attempts, coalesce(
        (SELECT wide.attempts FROM wide),
        (SELECT s.attempts FROM sign_in_throttle s WHERE s.key = wide_key AND s.window_ends_at > now()),
        0
    ), coalesce(
        (SELECT address.attempts FROM address),
        (SELECT s.attempts FROM sign_in_throttle s WHERE s.key = client_key AND s.window_ends_at > now()),
        0
    )
    FROM own;
END
$$
"""

SIGN_IN_ATTEMPT = f"""
CREATE FUNCTION rollcall_sign_in_attempt(
    slug text, typed_name text, own_key bytea, wide_key bytea, client_key bytea, device_school uuid,
    device_user uuid, device_key bytea, time_window interval, account_limit integer)
RETURNS TABLE (school_id uuid, user_id uuid, password_hash text, device boolean, attempts integer,
               everywhere integer, from_client integer)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER {SEARCH_PATH}
AS $$
DECLARE
    found_school uuid;
    found_user uuid;
    found_hash text;
    trusted boolean;
BEGIN
    IF rollcall_sign_in_attempt.slug IS NOT NULL AND typed_name IS NOT NULL THEN
        -- Only the school with exactly this slug is visible (its policy), and only for this lookup.
        PERFORM set_config('app.school_slug', rollcall_sign_in_attempt.slug, true);
        SELECT s.id INTO found_school FROM schools s WHERE s.slug = rollcall_sign_in_attempt.slug;
        PERFORM set_config('app.school_slug', '', true);
        IF found_school IS NOT NULL THEN
            PERFORM set_config('app.school_id', found_school::text, true);
            SELECT u.id, u.password_hash INTO found_user, found_hash
              FROM users u
             WHERE u.school_id = found_school AND u.username_key = lower(typed_name)
               AND u.deleted_at IS NULL;
        END IF;
    END IF;
    trusted := found_user IS NOT NULL AND device_key IS NOT NULL AND device_school = found_school
               AND device_user = found_user;
    RETURN QUERY
        SELECT found_school, found_user, found_hash, trusted, c.attempts, c.everywhere, c.from_client
          FROM rollcall_count_attempt(
              CASE WHEN trusted THEN device_key ELSE own_key END, wide_key, client_key,
              found_user IS NOT NULL, trusted, time_window, account_limit) c;
END
$$
"""

OPEN_SESSION = f"""
CREATE FUNCTION rollcall_open_session(
    in_school uuid, in_user uuid, checked_hash text, new_hash text, token_hash bytea, lifetime interval,
    method text, action text, summary jsonb, own_key bytea, wide_key bytea, client_key bytea)
RETURNS SETOF users
LANGUAGE plpgsql VOLATILE SECURITY INVOKER {SEARCH_PATH}
AS $$
DECLARE
    opened_user uuid;
BEGIN
    PERFORM set_config('app.school_id', in_school::text, true);
    IF new_hash IS NOT NULL THEN
        -- An old hash upgraded to the current parameters, unless it has changed since it was checked.
        UPDATE users u SET password_hash = new_hash
         WHERE u.school_id = in_school AND u.id = in_user AND u.password_hash = checked_hash;
        IF NOT FOUND THEN
            RETURN;
        END IF;
    END IF;
    INSERT INTO sessions AS s (school_id, user_id, token_hash, expires_at, sign_in_method)
    SELECT u.school_id, u.id, rollcall_open_session.token_hash, now() + lifetime, method
      FROM users u
     WHERE u.school_id = in_school AND u.id = in_user AND u.deleted_at IS NULL
       AND u.password_hash = coalesce(new_hash, checked_hash)
    RETURNING s.user_id INTO opened_user;
    IF opened_user IS NULL THEN
        RETURN;
    END IF;
    INSERT INTO audit_events (school_id, actor_id, actor_label, action, target_user_ids, summary)
    SELECT in_school, in_user, u.username, action, ARRAY[in_user], summary
      FROM users u WHERE u.school_id = in_school AND u.id = in_user;
    -- A correct password: its own bucket starts afresh and the shared ones forget one attempt.
    DELETE FROM sign_in_throttle t WHERE t.key = own_key;
    UPDATE sign_in_throttle t SET attempts = greatest(t.attempts - 1, 0)
     WHERE t.key = wide_key OR t.key = client_key;
    RETURN QUERY UPDATE users u SET last_sign_in_at = now()
     WHERE u.school_id = in_school AND u.id = in_user
    RETURNING u.*;
END
$$
"""

REAUTH_ATTEMPT = f"""
CREATE FUNCTION rollcall_reauth_attempt(in_school uuid, in_session uuid, in_user uuid)
RETURNS TABLE (failures integer, password_hash text)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER {SEARCH_PATH}
AS $$
DECLARE
    counted integer;
BEGIN
    PERFORM set_config('app.school_id', in_school::text, true);
    UPDATE sessions s SET reauth_failures = s.reauth_failures + 1
     WHERE s.school_id = in_school AND s.id = in_session AND s.revoked_at IS NULL
    RETURNING s.reauth_failures INTO counted;
    RETURN QUERY SELECT counted, u.password_hash FROM users u WHERE u.school_id = in_school AND u.id = in_user;
END
$$
"""

REAUTH_RESULT = f"""
CREATE FUNCTION rollcall_reauth_result(in_school uuid, in_session uuid, passed boolean)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY INVOKER {SEARCH_PATH}
AS $$
BEGIN
    PERFORM set_config('app.school_id', in_school::text, true);
    IF passed THEN
        UPDATE sessions s SET reauth_failures = 0 WHERE s.school_id = in_school AND s.id = in_session;
    ELSE
        UPDATE sessions s SET revoked_at = now()
         WHERE s.school_id = in_school AND s.id = in_session AND s.revoked_at IS NULL;
    END IF;
END
$$
"""

SIGNATURES = (
    "rollcall_count_attempt(bytea, bytea, bytea, boolean, boolean, interval, integer)",
    "rollcall_sign_in_attempt(text, text, bytea, bytea, bytea, uuid, uuid, bytea, interval, integer)",
    "rollcall_open_session(uuid, uuid, text, text, bytea, interval, text, text, jsonb, bytea, bytea, bytea)",
    "rollcall_reauth_attempt(uuid, uuid, uuid)",
    "rollcall_reauth_result(uuid, uuid, boolean)",
)


def upgrade() -> None:
    execute_script("""
    ALTER TABLE users ADD COLUMN username_key text GENERATED ALWAYS AS (lower(username)) STORED;
    DROP INDEX uq_users_school_id_username_active;
    CREATE UNIQUE INDEX uq_users_school_id_username_active ON users (school_id, username_key)
        WHERE deleted_at IS NULL
    """)
    for function in (COUNT_ATTEMPT, SIGN_IN_ATTEMPT, OPEN_SESSION, REAUTH_ATTEMPT, REAUTH_RESULT):
        op.execute(function)
    for signature in SIGNATURES:
        op.execute(f"REVOKE ALL ON FUNCTION {signature} FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION {signature} TO {app_role()}")


def downgrade() -> None:
    for signature in reversed(SIGNATURES):
        op.execute(f"DROP FUNCTION {signature}")
    execute_script("""
    DROP INDEX uq_users_school_id_username_active;
    ALTER TABLE users DROP COLUMN username_key;
    CREATE UNIQUE INDEX uq_users_school_id_username_active ON users (school_id, lower(username))
        WHERE deleted_at IS NULL
    """)
