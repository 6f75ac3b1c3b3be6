"""Sign-in throttling, shared by every worker.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from alembic import op

from db.migrations.rls import app_role

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Keys are SHA-256 hashes of "account:<school>:<username>" or "client:<address>": no school's data,
    # so this is not a tenant table; it stores no usernames or addresses in the clear.
    op.execute("""
    CREATE TABLE sign_in_throttle (
        key bytea NOT NULL,
        attempts integer NOT NULL,
        window_ends_at timestamptz NOT NULL,
        CONSTRAINT pk_sign_in_throttle PRIMARY KEY (key)
    )
    """)
    op.execute("CREATE INDEX ix_sign_in_throttle_window_ends_at ON sign_in_throttle (window_ends_at)")
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON sign_in_throttle TO {app_role()}")
