"""School settings, staff email, and how each session was opened.

- `schools.teachers_can_reset_pupil_passwords`: off until the school turns it on.
- `users.email`: staff only (a pupil's data stays minimal: the database refuses one), unique in the school
  among users who are not deleted, whatever its case.
- `sessions.sign_in_method`: rotating a pupil's login codes ends the sessions their cards opened, and only
  those.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from db.migrations.rls import execute_script

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Constant defaults: PostgreSQL adds these columns without rewriting the tables.
    execute_script("""
    ALTER TABLE schools ADD COLUMN teachers_can_reset_pupil_passwords boolean NOT NULL DEFAULT false;

    ALTER TABLE users
        ADD COLUMN email varchar(254),
        ADD CONSTRAINT ck_users_only_staff_have_email CHECK (email IS NULL OR type = 'TEACHER');
    CREATE UNIQUE INDEX uq_users_school_id_email_active ON users (school_id, lower(email))
        WHERE email IS NOT NULL AND deleted_at IS NULL;

    ALTER TABLE sessions
        ADD COLUMN sign_in_method varchar(16) NOT NULL DEFAULT 'password',
        ADD CONSTRAINT ck_sessions_sign_in_method CHECK (sign_in_method IN ('password', 'qr'));
    """)
