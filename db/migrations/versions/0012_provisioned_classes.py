"""Which classes a school's provider created: the only ones it may see and change over SCIM; and the caller
function's search_path with pg_temp last.

- `classes.provisioned_at`, as `users.provisioned_at` (migration 0008) is for users. Classes the provider
  created before this column existed are the ones with an `externalId` (only SCIM sets one) or whose
  `class.created` audit event names a provisioning token as its actor.
- `rollcall_caller` runs as its owner (SECURITY DEFINER): PostgreSQL searches `pg_temp` first unless the
  search_path names it, so it is named, last, and no temporary object of the caller's can stand in for a
  table or function of the owner's.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

from alembic import op

from db.migrations.rls import execute_script

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# Row-level security is forced on classes and audit_events, even for their owner: lifted for this one
# statement, inside the migration's transaction, so that it sees every school. The audit events are read
# once (a hashed subquery), not once per class.
BACKFILL = """
UPDATE classes SET provisioned_at = classes.created_at
WHERE provisioned_at IS NULL AND (external_id IS NOT NULL OR (school_id, id::text) IN (
    SELECT e.school_id, e.summary ->> 'class_id' FROM audit_events e
    WHERE e.action = 'class.created' AND e.actor_id IS NULL AND e.actor_label LIKE 'provisioning-token:%'))
"""

CALLER = "rollcall_caller(bytea, interval, interval)"


def upgrade() -> None:
    op.execute("ALTER TABLE classes ADD COLUMN provisioned_at timestamptz")
    execute_script("""
    ALTER TABLE classes NO FORCE ROW LEVEL SECURITY;
    ALTER TABLE audit_events NO FORCE ROW LEVEL SECURITY
    """)
    op.execute(BACKFILL)
    execute_script("""
    ALTER TABLE classes FORCE ROW LEVEL SECURITY;
    ALTER TABLE audit_events FORCE ROW LEVEL SECURITY
    """)
    op.execute(f"ALTER FUNCTION {CALLER} SET search_path = pg_catalog, public, pg_temp")


def downgrade() -> None:
    op.execute(f"ALTER FUNCTION {CALLER} SET search_path = pg_catalog, public")
    op.execute("ALTER TABLE classes DROP COLUMN provisioned_at")
