"""Provisioning over SCIM: the ids a school's provider knows its users and classes by.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from db.migrations.rls import execute_script

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_script("""
    ALTER TABLE users ADD COLUMN external_id varchar(255);
    ALTER TABLE users ADD COLUMN deprovisioned_at timestamptz;
    ALTER TABLE users ADD CONSTRAINT ck_users_deprovisioned_users_are_deleted
        CHECK (deprovisioned_at IS NULL OR deleted_at IS NOT NULL);
    -- A user the provider deleted keeps their row (soft-deleted) but frees their external id.
    CREATE UNIQUE INDEX uq_users_school_id_external_id ON users (school_id, external_id)
        WHERE external_id IS NOT NULL AND deprovisioned_at IS NULL;
    -- Providers look users up by userName, deleted (deactivated) ones included.
    CREATE INDEX ix_users_school_id_lower_username ON users (school_id, lower(username));
    ALTER TABLE classes ADD COLUMN external_id varchar(255);
    CREATE UNIQUE INDEX uq_classes_school_id_external_id ON classes (school_id, external_id)
        WHERE external_id IS NOT NULL;
    """)
