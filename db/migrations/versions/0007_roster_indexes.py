"""Indexes for the roster's hot reads: each ordering of the users table, and a user's classes.

A page of the users table is a range of one of these indexes (school, sort key, id), in either direction,
with the keyset condition as its start; the partial ones hold only users who are not deleted, which is what
the table shows unless asked otherwise. A user's registration and teaching classes are read from the
membership index alone.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28
"""

from db.migrations.rls import execute_script

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_script("""
    CREATE INDEX ix_users_roster_surname ON users (school_id, lower(surname), id) WHERE deleted_at IS NULL;
    CREATE INDEX ix_users_roster_first_name ON users (school_id, lower(first_name), id) WHERE deleted_at IS NULL;
    CREATE INDEX ix_users_roster_username ON users (school_id, lower(username), id) WHERE deleted_at IS NULL;
    CREATE INDEX ix_class_memberships_user_kind ON class_memberships (school_id, user_id, kind) INCLUDE (class_id);
    """)
