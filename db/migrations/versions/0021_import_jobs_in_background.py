"""Imports applied in the background: who confirmed a job and when it finished, and the passwords the apply
generated, sealed until the admin who confirmed it takes them (once, within an hour of the end).

- `confirmed_by`: the admin who confirmed the job (the only one who may take its generated passwords).
- `finished_at`: when the apply ended, SUCCEEDED or FAILED.
- `sealed_generated_passwords`: the generated passwords of a SUCCEEDED job, sealed as the typed ones are
  (db.imports.sealed_passwords), until they are taken or their hour is over; never plain.
- `generated_passwords`: how many the apply generated (so a job whose passwords are gone says why).
- `generated_passwords_taken_at`: when they were taken.

The table keeps its row-level security and grants (migration 0003): the new columns are the school's as
every other column of the row is. Jobs that ended before this revision keep no `finished_at` (their
passwords were shown at confirmation and never stored).

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-10
"""

from db.migrations.rls import execute_script

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_script("""
    ALTER TABLE import_jobs ADD COLUMN confirmed_by uuid;
    ALTER TABLE import_jobs ADD COLUMN finished_at timestamptz;
    ALTER TABLE import_jobs ADD COLUMN sealed_generated_passwords bytea;
    ALTER TABLE import_jobs ADD COLUMN generated_passwords integer NOT NULL DEFAULT 0;
    ALTER TABLE import_jobs ADD COLUMN generated_passwords_taken_at timestamptz;
    ALTER TABLE import_jobs ADD CONSTRAINT ck_import_jobs_generated_passwords_only_when_succeeded
        CHECK (sealed_generated_passwords IS NULL OR status = 'SUCCEEDED')
    """)


def downgrade() -> None:
    execute_script("""
    ALTER TABLE import_jobs DROP CONSTRAINT ck_import_jobs_generated_passwords_only_when_succeeded;
    ALTER TABLE import_jobs DROP COLUMN generated_passwords_taken_at;
    ALTER TABLE import_jobs DROP COLUMN generated_passwords;
    ALTER TABLE import_jobs DROP COLUMN sealed_generated_passwords;
    ALTER TABLE import_jobs DROP COLUMN finished_at;
    ALTER TABLE import_jobs DROP COLUMN confirmed_by
    """)
