"""Which users a school's provider provisioned: the only ones it may see and change over SCIM.

Users the provider created before this column existed are the ones with an `externalId` (only SCIM sets one)
or whose `user.created` audit event names a provisioning token as its actor.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28
"""

from alembic import op

from db.migrations.rls import execute_script

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# Row-level security is forced on users and audit_events, even for their owner: lifted for this one
# statement, inside the migration's transaction, so that it sees every school.
BACKFILL = """
UPDATE users SET provisioned_at = users.created_at
WHERE provisioned_at IS NULL AND (external_id IS NOT NULL OR EXISTS (
    SELECT 1 FROM audit_events e
    WHERE e.school_id = users.school_id AND e.action = 'user.created' AND users.id = ANY (e.target_user_ids)
      AND e.actor_id IS NULL AND e.actor_label LIKE 'provisioning-token:%'))
"""


def upgrade() -> None:
    op.execute("ALTER TABLE users ADD COLUMN provisioned_at timestamptz")
    execute_script("""
    ALTER TABLE users NO FORCE ROW LEVEL SECURITY;
    ALTER TABLE audit_events NO FORCE ROW LEVEL SECURITY;
    """)
    op.execute(BACKFILL)
    execute_script("""
    ALTER TABLE users FORCE ROW LEVEL SECURITY;
    ALTER TABLE audit_events FORCE ROW LEVEL SECURITY
    """)
