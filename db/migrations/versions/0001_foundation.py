"""Schools, users, classes, memberships, sessions, API tokens and audit events, under row-level security.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from alembic import op

from db.migrations.rls import CURRENT_SCHOOL, app_role, execute_script, protect_tenant_table

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_script("""
    CREATE TABLE schools (
        id uuid DEFAULT gen_random_uuid() NOT NULL,
        slug varchar(63) NOT NULL,
        name text NOT NULL,
        provider varchar(16) NOT NULL DEFAULT 'MANUAL',
        pupil_min_password_length integer NOT NULL DEFAULT 4,
        qr_sign_in_enabled boolean NOT NULL DEFAULT true,
        created_at timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT pk_schools PRIMARY KEY (id),
        CONSTRAINT uq_schools_slug UNIQUE (slug),
        CONSTRAINT ck_schools_provider CHECK (provider IN ('MANUAL', 'C2K', 'HWB', 'GLOW')),
        CONSTRAINT ck_schools_slug_format CHECK (slug ~ '^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$'),
        CONSTRAINT ck_schools_pupil_min_password_length CHECK (pupil_min_password_length BETWEEN 1 AND 128)
    );

    CREATE TABLE users (
        school_id uuid NOT NULL,
        id uuid DEFAULT gen_random_uuid() NOT NULL,
        username varchar(64) NOT NULL,
        first_name varchar(100) NOT NULL DEFAULT '',
        surname varchar(100) NOT NULL DEFAULT '',
        type varchar(16) NOT NULL,
        is_admin boolean NOT NULL DEFAULT false,
        password_hash text NOT NULL,
        must_change_password boolean NOT NULL DEFAULT false,
        version integer NOT NULL DEFAULT 1,
        deleted_at timestamptz,
        deleted_by uuid,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT pk_users PRIMARY KEY (school_id, id),
        CONSTRAINT fk_users_school_id_schools FOREIGN KEY (school_id) REFERENCES schools (id) ON DELETE CASCADE,
        CONSTRAINT fk_users_deleted_by_users FOREIGN KEY (school_id, deleted_by) REFERENCES users (school_id, id),
        CONSTRAINT ck_users_user_type CHECK (type IN ('PUPIL', 'TEACHER')),
        CONSTRAINT ck_users_only_teachers_are_admins CHECK (NOT is_admin OR type = 'TEACHER')
    );
    CREATE UNIQUE INDEX uq_users_school_id_username_active ON users (school_id, lower(username))
        WHERE deleted_at IS NULL;

    CREATE TABLE classes (
        school_id uuid NOT NULL,
        id uuid DEFAULT gen_random_uuid() NOT NULL,
        name varchar(100) NOT NULL,
        kind varchar(16) NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT pk_classes PRIMARY KEY (school_id, id),
        CONSTRAINT fk_classes_school_id_schools FOREIGN KEY (school_id) REFERENCES schools (id) ON DELETE CASCADE,
        CONSTRAINT uq_classes_school_id_id_kind UNIQUE (school_id, id, kind),
        CONSTRAINT ck_classes_class_kind CHECK (kind IN ('REGISTRATION', 'TEACHING'))
    );
    CREATE UNIQUE INDEX uq_classes_school_id_kind_name ON classes (school_id, kind, lower(name));

    CREATE TABLE class_memberships (
        school_id uuid NOT NULL,
        class_id uuid NOT NULL,
        user_id uuid NOT NULL,
        kind varchar(16) NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT pk_class_memberships PRIMARY KEY (school_id, class_id, user_id),
        CONSTRAINT fk_class_memberships_class FOREIGN KEY (school_id, class_id, kind)
            REFERENCES classes (school_id, id, kind) ON DELETE CASCADE ON UPDATE CASCADE,
        CONSTRAINT fk_class_memberships_user FOREIGN KEY (school_id, user_id)
            REFERENCES users (school_id, id) ON DELETE CASCADE,
        CONSTRAINT ck_class_memberships_membership_kind CHECK (kind IN ('REGISTRATION', 'TEACHING'))
    );
    -- At most ONE registration class per user: the database is the guarantee.
    CREATE UNIQUE INDEX uq_class_memberships_one_registration_class ON class_memberships (school_id, user_id)
        WHERE kind = 'REGISTRATION';
    CREATE INDEX ix_class_memberships_user ON class_memberships (school_id, user_id);

    CREATE TABLE sessions (
        school_id uuid NOT NULL,
        id uuid DEFAULT gen_random_uuid() NOT NULL,
        user_id uuid NOT NULL,
        token_hash bytea NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        last_seen_at timestamptz NOT NULL DEFAULT now(),
        expires_at timestamptz NOT NULL,
        revoked_at timestamptz,
        reauth_failures integer NOT NULL DEFAULT 0,
        CONSTRAINT pk_sessions PRIMARY KEY (school_id, id),
        CONSTRAINT fk_sessions_user FOREIGN KEY (school_id, user_id) REFERENCES users (school_id, id)
            ON DELETE CASCADE,
        CONSTRAINT uq_sessions_school_id_token_hash UNIQUE (school_id, token_hash)
    );
    CREATE INDEX ix_sessions_token_hash ON sessions (token_hash);
    CREATE INDEX ix_sessions_user ON sessions (school_id, user_id);

    CREATE TABLE api_tokens (
        school_id uuid NOT NULL,
        id uuid DEFAULT gen_random_uuid() NOT NULL,
        name varchar(100) NOT NULL,
        token_hash bytea NOT NULL,
        scopes text[] NOT NULL,
        created_by uuid,
        created_at timestamptz NOT NULL DEFAULT now(),
        last_used_at timestamptz,
        revoked_at timestamptz,
        CONSTRAINT pk_api_tokens PRIMARY KEY (school_id, id),
        CONSTRAINT fk_api_tokens_school_id_schools FOREIGN KEY (school_id) REFERENCES schools (id)
            ON DELETE CASCADE,
        CONSTRAINT uq_api_tokens_school_id_token_hash UNIQUE (school_id, token_hash)
    );
    CREATE INDEX ix_api_tokens_token_hash ON api_tokens (token_hash);

    CREATE TABLE audit_events (
        school_id uuid NOT NULL,
        id uuid DEFAULT gen_random_uuid() NOT NULL,
        actor_id uuid,
        actor_label varchar(200) NOT NULL DEFAULT '',
        action varchar(64) NOT NULL,
        target_user_ids uuid[] NOT NULL DEFAULT '{}',
        summary jsonb NOT NULL DEFAULT '{}',
        request_id varchar(64),
        created_at timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT pk_audit_events PRIMARY KEY (school_id, id),
        CONSTRAINT fk_audit_events_school_id_schools FOREIGN KEY (school_id) REFERENCES schools (id)
            ON DELETE CASCADE
    );
    CREATE INDEX ix_audit_events_school_id_created_at ON audit_events (school_id, created_at);
    """)

    role = app_role()
    # A school's own row, plus an exact-slug lookup for sign-in: no listing of other schools.
    op.execute("ALTER TABLE schools ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE schools FORCE ROW LEVEL SECURITY")
    op.execute(
        f"CREATE POLICY schools_bound_school ON schools USING (id = {CURRENT_SCHOOL}) "
        f"WITH CHECK (id = {CURRENT_SCHOOL})"
    )
    op.execute(
        "CREATE POLICY schools_lookup_by_slug ON schools FOR SELECT "
        "USING (slug = (select nullif(current_setting('app.school_slug', true), '')))"
    )
    op.execute(f"GRANT SELECT, UPDATE ON schools TO {role}")

    for table in ("users", "classes", "class_memberships", "sessions", "api_tokens"):
        protect_tenant_table(table)
    protect_tenant_table("audit_events", grants="SELECT, INSERT")

    # A bearer token names its own row (by its hash) before the school is known.
    token_hash = "(select decode(nullif(current_setting('app.token_hash', true), ''), 'hex'))"
    for table in ("sessions", "api_tokens"):
        op.execute(
            f"CREATE POLICY {table}_lookup_by_token ON {table} FOR SELECT USING (token_hash = {token_hash})"
        )
