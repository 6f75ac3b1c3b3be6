"""When each user last signed in: `users.last_sign_in_at`, set by the statement that opens the session.

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
    op.execute("ALTER TABLE users DROP COLUMN last_sign_in_at")
