"""Rollovers: the new school year's moves of every registration class at once, previewed, applied, undone.

- `rollover_jobs`: one rollover: its plan (the steps asked for, the teaching classes' action, whether login
  cards rotate), the preview per class, the totals, progress, and once applied what it did to classes (names
  before and after, the classes it created, the rows of those it deleted) so a revert can put them back.
- `rollover_pupils`: per pupil, where the plan takes them (the preview), then where the apply took them.
  Ids only, no names: a pupil purged later leaves an id, as the audit log does.
- `rollover_memberships`: every membership the apply removed (with its row as it was) or added, for the
  revert to put back exactly.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-08
"""

from db.migrations.rls import execute_script, protect_tenant_table

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_script("""
    CREATE TABLE rollover_jobs (
        school_id uuid NOT NULL,
        id uuid DEFAULT gen_random_uuid() NOT NULL,
        created_by uuid,
        status varchar(16) NOT NULL DEFAULT 'PREVIEW',
        teaching_action varchar(16) NOT NULL DEFAULT 'KEEP',
        rotate_login_codes boolean NOT NULL DEFAULT true,
        steps jsonb NOT NULL DEFAULT '[]',
        classes jsonb NOT NULL DEFAULT '[]',
        totals jsonb NOT NULL DEFAULT '{}',
        leaving integer NOT NULL DEFAULT 0,
        pupils integer NOT NULL DEFAULT 0,
        total integer NOT NULL DEFAULT 0,
        processed integer NOT NULL DEFAULT 0,
        undo jsonb NOT NULL DEFAULT '{}',
        conflicts jsonb NOT NULL DEFAULT '[]',
        failure_reason text,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now(),
        expires_at timestamptz NOT NULL DEFAULT now() + interval '24 hours',
        applied_at timestamptz,
        reverted_at timestamptz,
        CONSTRAINT pk_rollover_jobs PRIMARY KEY (school_id, id),
        CONSTRAINT fk_rollover_jobs_school_id_schools FOREIGN KEY (school_id) REFERENCES schools (id)
            ON DELETE CASCADE,
        CONSTRAINT ck_rollover_jobs_status
            CHECK (status IN ('PREVIEW', 'RUNNING', 'SUCCEEDED', 'FAILED', 'REVERTED')),
        CONSTRAINT ck_rollover_jobs_teaching_action CHECK (teaching_action IN ('KEEP', 'EMPTY', 'DELETE'))
    );
    CREATE INDEX ix_rollover_jobs_status ON rollover_jobs (status) WHERE status = 'RUNNING';
    CREATE TABLE rollover_pupils (
        school_id uuid NOT NULL,
        job_id uuid NOT NULL,
        user_id uuid NOT NULL,
        outcome varchar(16) NOT NULL,
        from_class_id uuid,
        from_class_name varchar(100),
        to_class_id uuid,
        to_class_name varchar(100),
        version_after integer,
        CONSTRAINT pk_rollover_pupils PRIMARY KEY (school_id, job_id, user_id),
        CONSTRAINT fk_rollover_pupils_job FOREIGN KEY (school_id, job_id)
            REFERENCES rollover_jobs (school_id, id) ON DELETE CASCADE,
        CONSTRAINT ck_rollover_pupils_outcome CHECK (outcome IN ('MOVED', 'RENAMED', 'LEAVING', 'UNCHANGED'))
    );
    CREATE TABLE rollover_memberships (
        school_id uuid NOT NULL,
        job_id uuid NOT NULL,
        change varchar(8) NOT NULL,
        class_id uuid NOT NULL,
        user_id uuid NOT NULL,
        kind varchar(16) NOT NULL,
        created_at timestamptz NOT NULL,
        CONSTRAINT pk_rollover_memberships PRIMARY KEY (school_id, job_id, change, class_id, user_id),
        CONSTRAINT fk_rollover_memberships_job FOREIGN KEY (school_id, job_id)
            REFERENCES rollover_jobs (school_id, id) ON DELETE CASCADE,
        CONSTRAINT ck_rollover_memberships_change CHECK (change IN ('ADDED', 'REMOVED')),
        CONSTRAINT ck_rollover_memberships_kind CHECK (kind IN ('REGISTRATION', 'TEACHING'))
    )
    """)
    for table in ("rollover_jobs", "rollover_pupils", "rollover_memberships"):
        protect_tenant_table(table)


def downgrade() -> None:
    execute_script("""
    DROP TABLE rollover_memberships;
    DROP TABLE rollover_pupils;
    DROP TABLE rollover_jobs
    """)
