"""When each user last signed in: `users.last_sign_in_at`, set by the statement that opens the session.

Signing in is not a change the change feed reports (a roster app reads who is in the school, not who signed
in when): the feed's trigger on users leaves the new column out, as it leaves out password hashes.

Users who signed in before this column existed get the time of their latest `user.signed_in` audit event
(the audit log itself is not changed).

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-09
"""

from alembic import op

from db.migrations.rls import execute_script

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

# The change feed's trigger on users (migration 0016), with the new column among those it does not report.
USER_CHANGES = """
CREATE OR REPLACE FUNCTION rollcall_record_user_changes() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO changes (school_id, kind, entity_id, operation)
        SELECT n.school_id, 'USER', n.id, CASE WHEN n.deleted_at IS NULL THEN 'UPSERT' ELSE 'DELETE' END
        FROM new_rows n;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO changes (school_id, kind, entity_id, operation)
        SELECT n.school_id, 'USER', n.id, CASE WHEN n.deleted_at IS NULL THEN 'UPSERT' ELSE 'DELETE' END
        FROM new_rows n LEFT JOIN old_rows o ON o.school_id = n.school_id AND o.id = n.id
        WHERE o.id IS NULL
           OR to_jsonb(n) - '{password_hash,login_code_version,deleted_by,last_sign_in_at}'::text[] IS DISTINCT FROM to_jsonb(o) - '{password_hash,login_code_version,deleted_by,last_sign_in_at}'::text[];
    ELSE
        INSERT INTO changes (school_id, kind, entity_id, operation)
        SELECT o.school_id, 'USER', o.id, 'DELETE' FROM old_rows o
        WHERE EXISTS (SELECT FROM schools s WHERE s.id = o.school_id);
    END IF;
    RETURN NULL;
END
$$
"""

PREVIOUS_USER_CHANGES = """
CREATE OR REPLACE FUNCTION rollcall_record_user_changes() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO changes (school_id, kind, entity_id, operation)
        SELECT n.school_id, 'USER', n.id, CASE WHEN n.deleted_at IS NULL THEN 'UPSERT' ELSE 'DELETE' END
        FROM new_rows n;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO changes (school_id, kind, entity_id, operation)
        SELECT n.school_id, 'USER', n.id, CASE WHEN n.deleted_at IS NULL THEN 'UPSERT' ELSE 'DELETE' END
        FROM new_rows n LEFT JOIN old_rows o ON o.school_id = n.school_id AND o.id = n.id
        WHERE o.id IS NULL
           OR to_jsonb(n) - '{password_hash,login_code_version,deleted_by}'::text[] IS DISTINCT FROM to_jsonb(o) - '{password_hash,login_code_version,deleted_by}'::text[];
    ELSE
        INSERT INTO changes (school_id, kind, entity_id, operation)
        SELECT o.school_id, 'USER', o.id, 'DELETE' FROM old_rows o
        WHERE EXISTS (SELECT FROM schools s WHERE s.id = o.school_id);
    END IF;
    RETURN NULL;
END
$$
"""

# Row-level security is forced on users and audit_events, even for their owner: lifted for this one
# statement, inside the migration's transaction, so that it sees every school.
BACKFILL = """
UPDATE users SET last_sign_in_at = signed_in.at
FROM (
    SELECT e.school_id, e.actor_id AS user_id, max(e.created_at) AS at FROM audit_events e
    WHERE e.action = 'user.signed_in' AND e.actor_id IS NOT NULL
    GROUP BY e.school_id, e.actor_id
) signed_in
WHERE users.school_id = signed_in.school_id AND users.id = signed_in.user_id
"""


def upgrade() -> None:
    op.execute("ALTER TABLE users ADD COLUMN last_sign_in_at timestamptz")
    op.execute(USER_CHANGES)
    execute_script("""
    ALTER TABLE users NO FORCE ROW LEVEL SECURITY;
    ALTER TABLE audit_events NO FORCE ROW LEVEL SECURITY
    """)
    op.execute(BACKFILL)
    execute_script("""
    ALTER TABLE users FORCE ROW LEVEL SECURITY;
    ALTER TABLE audit_events FORCE ROW LEVEL SECURITY
    """)


def downgrade() -> None:
    op.execute(PREVIOUS_USER_CHANGES)
    op.execute("ALTER TABLE users DROP COLUMN last_sign_in_at")
