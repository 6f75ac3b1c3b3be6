"""Import jobs: a roster CSV's preview, then its one application.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from db.migrations.rls import execute_script, protect_tenant_table

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_script("""
    CREATE TABLE import_jobs (
        school_id uuid NOT NULL,
        id uuid DEFAULT gen_random_uuid() NOT NULL,
        created_by uuid,
        file_name varchar(255) NOT NULL DEFAULT '',
        status varchar(16) NOT NULL DEFAULT 'PREVIEW',
        remove_missing_pupils boolean NOT NULL DEFAULT false,
        total integer NOT NULL DEFAULT 0,
        processed integer NOT NULL DEFAULT 0,
        totals jsonb NOT NULL DEFAULT '{}',
        columns jsonb NOT NULL DEFAULT '[]',
        rows jsonb NOT NULL DEFAULT '[]',
        new_classes jsonb NOT NULL DEFAULT '[]',
        warnings jsonb NOT NULL DEFAULT '[]',
        -- The passwords typed in the file, kept only while the job waits for confirmation.
        passwords jsonb,
        failure_reason text,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now(),
        expires_at timestamptz NOT NULL DEFAULT now() + interval '24 hours',
        CONSTRAINT pk_import_jobs PRIMARY KEY (school_id, id),
        CONSTRAINT fk_import_jobs_school_id_schools FOREIGN KEY (school_id) REFERENCES schools (id)
            ON DELETE CASCADE,
        CONSTRAINT ck_import_jobs_status CHECK (status IN ('PREVIEW', 'RUNNING', 'SUCCEEDED', 'FAILED')),
        CONSTRAINT ck_import_jobs_passwords_only_in_preview CHECK (passwords IS NULL OR status = 'PREVIEW')
    );
    CREATE INDEX ix_import_jobs_status ON import_jobs (status) WHERE status = 'RUNNING';
    """)
    protect_tenant_table("import_jobs")
