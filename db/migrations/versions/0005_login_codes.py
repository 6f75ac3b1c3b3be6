"""QR login codes: a per-user login-code version, and the day each school's year ends (when cards expire).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from db.migrations.rls import execute_script

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Constant defaults: PostgreSQL adds these columns without rewriting either table.
    execute_script("""
    ALTER TABLE users
        ADD COLUMN login_code_version integer NOT NULL DEFAULT 1,
        ADD CONSTRAINT ck_users_login_code_version CHECK (login_code_version >= 1);

    ALTER TABLE schools
        ADD COLUMN school_year_end_month smallint NOT NULL DEFAULT 8,
        ADD COLUMN school_year_end_day smallint NOT NULL DEFAULT 31,
        ADD CONSTRAINT ck_schools_school_year_ends CHECK (
            school_year_end_month BETWEEN 1 AND 12
            AND school_year_end_day BETWEEN 1 AND CASE
                WHEN school_year_end_month = 2 THEN 29
                WHEN school_year_end_month IN (4, 6, 9, 11) THEN 30
                ELSE 31
            END
        );
    """)
