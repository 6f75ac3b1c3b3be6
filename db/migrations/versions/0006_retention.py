"""Retention: how long a school keeps deleted users, and the owner's view of every school for maintenance.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE schools ADD COLUMN deleted_user_retention_days integer NOT NULL DEFAULT 30")
    op.execute(
        "ALTER TABLE schools ADD CONSTRAINT ck_schools_deleted_user_retention_days "
        "CHECK (deleted_user_retention_days BETWEEN 1 AND 3650)"
    )
    # Maintenance (purge, failing stale imports) walks every school as the owner; the application role
    # still sees only the school bound to its transaction.
    op.execute(
        "CREATE POLICY schools_listed_for_maintenance ON schools FOR SELECT TO CURRENT_USER USING (true)"
    )
