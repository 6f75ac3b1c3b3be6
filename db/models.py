"""The tables. Every tenant table carries `school_id`, and its keys include it (see docs/architecture.md, "Tenancy")."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Computed,
    DateTime,
    Enum,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, validates

from db.names import class_name_key

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Provider(enum.StrEnum):
    MANUAL = "MANUAL"
    C2K = "C2K"
    HWB = "HWB"
    GLOW = "GLOW"


class UserType(enum.StrEnum):
    PUPIL = "PUPIL"
    TEACHER = "TEACHER"


class SignInMethod(enum.StrEnum):
    """How a session was opened: rotating login codes ends the QR ones."""

    PASSWORD = "password"
    QR = "qr"


class ClassKind(enum.StrEnum):
    REGISTRATION = "REGISTRATION"
    TEACHING = "TEACHING"


def _enum(kind: type[enum.StrEnum], name: str) -> Enum:
    # Stored as text with a CHECK, so adding a value is a plain migration.
    return Enum(
        kind,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda k: [m.value for m in k],
    )


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        uuid.UUID: UUID(as_uuid=True),
        datetime: DateTime(timezone=True),
        str: Text,
    }


def _uuid_pk() -> Any:
    return mapped_column(primary_key=True, server_default=text("gen_random_uuid()"))


class School(Base):
    """A tenant. Its row is visible only while the school is bound (or looked up by its exact slug)."""

    __tablename__ = "schools"

    id: Mapped[uuid.UUID] = _uuid_pk()
    slug: Mapped[str] = mapped_column(String(63), unique=True)
    name: Mapped[str]
    provider: Mapped[Provider] = mapped_column(_enum(Provider, "provider"), default=Provider.MANUAL)
    pupil_min_password_length: Mapped[int] = mapped_column(Integer, default=4, server_default="4")
    qr_sign_in_enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default="true")
    # The last day of the school year, when login cards expire: 31 August unless the school says otherwise.
    school_year_end_month: Mapped[int] = mapped_column(SmallInteger, default=8, server_default="8")
    school_year_end_day: Mapped[int] = mapped_column(SmallInteger, default=31, server_default="31")
    deleted_user_retention_days: Mapped[int] = mapped_column(Integer, default=30, server_default="30")
    teachers_can_reset_pupil_passwords: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default="false"
    )
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    # How long the change feed keeps its records, and the last record `rollcall purge` removed (db/changes.py).
    feed_retention_days: Mapped[int] = mapped_column(Integer, default=30, server_default="30")
    feed_purged_xid: Mapped[int | None] = mapped_column(BigInteger)
    feed_purged_position: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        CheckConstraint("slug ~ '^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$'", name="slug_format"),
        CheckConstraint("pupil_min_password_length BETWEEN 1 AND 128", name="pupil_min_password_length"),
        CheckConstraint(
            "school_year_end_month BETWEEN 1 AND 12 AND school_year_end_day BETWEEN 1 AND "
            "CASE WHEN school_year_end_month = 2 THEN 29 "
            "WHEN school_year_end_month IN (4, 6, 9, 11) THEN 30 ELSE 31 END",
            name="school_year_ends",
        ),
        CheckConstraint("deleted_user_retention_days BETWEEN 1 AND 3650", name="deleted_user_retention_days"),
        CheckConstraint("feed_retention_days BETWEEN 1 AND 3650", name="feed_retention_days"),
    )


class User(Base):
    __tablename__ = "users"

    school_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    id: Mapped[uuid.UUID] = _uuid_pk()
    username: Mapped[str] = mapped_column(String(64))
    first_name: Mapped[str] = mapped_column(String(100), default="", server_default="")
    surname: Mapped[str] = mapped_column(String(100), default="", server_default="")
    type: Mapped[UserType] = mapped_column(_enum(UserType, "user_type"))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    password_hash: Mapped[str]
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # Bumped to rotate the user's login cards: codes signed for an older version stop working.
    login_code_version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    deleted_at: Mapped[datetime | None]
    deleted_by: Mapped[uuid.UUID | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())
    # The id the school's provider knows this user by (SCIM `externalId`).
    external_id: Mapped[str | None] = mapped_column(String(255))
    # Deleted by the provider (SCIM DELETE): gone from SCIM, kept here as a deleted user.
    deprovisioned_at: Mapped[datetime | None]
    # Created by the school's provider over SCIM; users made in Rollcall itself are never the provider's.
    provisioned_at: Mapped[datetime | None]
    # Staff only: a pupil's data stays minimal.
    email: Mapped[str | None] = mapped_column(String(254))
    # Set by the statement that opens a session (db/signin.py), with a password or a login card.
    last_sign_in_at: Mapped[datetime | None]
    # The username as sign-in looks it up, kept by PostgreSQL (migration 0022): an index under row-level
    # security is used for a column, not for an expression with a function that is not leakproof.
    username_key: Mapped[str] = mapped_column(Text, Computed("lower(username)", persisted=True))

    __table_args__ = (
        ForeignKeyConstraint(["school_id"], ["schools.id"], ondelete="CASCADE"),
        ForeignKeyConstraint(
            ["school_id", "deleted_by"], ["users.school_id", "users.id"], name="fk_users_deleted_by_users"
        ),
        Index(
            "uq_users_school_id_username_active",
            "school_id",
            "username_key",
            unique=True,
            postgresql_where=text("deleted_at IS NULL"),
        ),
        CheckConstraint("NOT is_admin OR type = 'TEACHER'", name="only_teachers_are_admins"),
        CheckConstraint("login_code_version >= 1", name="login_code_version"),
        CheckConstraint(
            "deprovisioned_at IS NULL OR deleted_at IS NOT NULL", name="deprovisioned_users_are_deleted"
        ),
        Index(
            "uq_users_school_id_external_id",
            "school_id",
            "external_id",
            unique=True,
            postgresql_where=text("external_id IS NOT NULL AND deprovisioned_at IS NULL"),
        ),
        Index("ix_users_school_id_lower_username", "school_id", func.lower(text("username"))),
        # The roster's orderings: a page of the users table is a range of one of these (migration 0007).
        *(
            Index(
                f"ix_users_roster_{name}",
                "school_id",
                func.lower(text(name)),
                "id",
                postgresql_where=text("deleted_at IS NULL"),
            )
            for name in ("surname", "first_name", "username")
        ),
        CheckConstraint("email IS NULL OR type = 'TEACHER'", name="only_staff_have_email"),
        Index(
            "uq_users_school_id_email_active",
            "school_id",
            func.lower(text("email")),
            unique=True,
            postgresql_where=text("email IS NOT NULL AND deleted_at IS NULL"),
        ),
    )


class SchoolClass(Base):
    __tablename__ = "classes"

    school_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    id: Mapped[uuid.UUID] = _uuid_pk()
    name: Mapped[str] = mapped_column(String(100))
    # What names are compared by (db.names.class_name_key): `P3` and a Cyrillic `Р3` are one class.
    name_key: Mapped[str]
    kind: Mapped[ClassKind] = mapped_column(_enum(ClassKind, "class_kind"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    # The id the school's provider knows this class by (SCIM Group `externalId`).
    external_id: Mapped[str | None] = mapped_column(String(255))
    # Created by the school's provider over SCIM; classes made in Rollcall itself are never the provider's.
    provisioned_at: Mapped[datetime | None]

    __table_args__ = (
        ForeignKeyConstraint(["school_id"], ["schools.id"], ondelete="CASCADE"),
        # Lets a membership name its class's kind, so the one-registration-class rule is a plain index.
        UniqueConstraint("school_id", "id", "kind", name="uq_classes_school_id_id_kind"),
        Index("uq_classes_school_id_kind_name_key", "school_id", "kind", "name_key", unique=True),
        Index(
            "uq_classes_school_id_external_id",
            "school_id",
            "external_id",
            unique=True,
            postgresql_where=text("external_id IS NOT NULL"),
        ),
    )

    @validates("name")
    def _keep_name_key(self, _: str, name: str) -> str:
        self.name_key = class_name_key(name)
        return name


class ClassMembership(Base):
    __tablename__ = "class_memberships"

    school_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    class_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    kind: Mapped[ClassKind] = mapped_column(_enum(ClassKind, "membership_kind"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (
        ForeignKeyConstraint(
            ["school_id", "class_id", "kind"],
            ["classes.school_id", "classes.id", "classes.kind"],
            name="fk_class_memberships_class",
            ondelete="CASCADE",
            onupdate="CASCADE",
        ),
        ForeignKeyConstraint(
            ["school_id", "user_id"],
            ["users.school_id", "users.id"],
            name="fk_class_memberships_user",
            ondelete="CASCADE",
        ),
        # At most ONE registration class per user: the database is the guarantee.
        Index(
            "uq_class_memberships_one_registration_class",
            "school_id",
            "user_id",
            unique=True,
            postgresql_where=text("kind = 'REGISTRATION'"),
        ),
        Index("ix_class_memberships_user", "school_id", "user_id"),
        Index(
            "ix_class_memberships_user_kind", "school_id", "user_id", "kind", postgresql_include=["class_id"]
        ),
    )


class Session(Base):
    """A signed-in browser or device. Only the SHA-256 of its token is stored."""

    __tablename__ = "sessions"

    school_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    id: Mapped[uuid.UUID] = _uuid_pk()
    user_id: Mapped[uuid.UUID]
    token_hash: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    last_seen_at: Mapped[datetime] = mapped_column(server_default=func.now())
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    reauth_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    sign_in_method: Mapped[SignInMethod] = mapped_column(
        Enum(
            SignInMethod,
            native_enum=False,
            create_constraint=False,
            length=16,
            values_callable=lambda k: [m.value for m in k],
        ),
        default=SignInMethod.PASSWORD,
        server_default="password",
    )

    __table_args__ = (
        ForeignKeyConstraint(
            ["school_id", "user_id"],
            ["users.school_id", "users.id"],
            name="fk_sessions_user",
            ondelete="CASCADE",
        ),
        CheckConstraint("sign_in_method IN ('password', 'qr')", name="sign_in_method"),
        UniqueConstraint("school_id", "token_hash", name="uq_sessions_school_id_token_hash"),
        Index("ix_sessions_token_hash", "token_hash"),
        Index("ix_sessions_user", "school_id", "user_id"),
    )


class ApiToken(Base):
    """A read-only token for a third-party app. Only the SHA-256 of its secret is stored."""

    __tablename__ = "api_tokens"

    school_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    id: Mapped[uuid.UUID] = _uuid_pk()
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[bytes] = mapped_column(LargeBinary)
    scopes: Mapped[list[str]] = mapped_column(ARRAY(Text))
    # Not a foreign key: a token outlives the admin who issued it.
    created_by: Mapped[uuid.UUID | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    __table_args__ = (
        ForeignKeyConstraint(["school_id"], ["schools.id"], ondelete="CASCADE"),
        UniqueConstraint("school_id", "token_hash", name="uq_api_tokens_school_id_token_hash"),
        Index("ix_api_tokens_token_hash", "token_hash"),
    )


class OAuthAccessToken(Base):
    """A short-lived OAuth 2.0 access token (OneRoster), issued to an API token (its client) at /oauth/token.
    Only the SHA-256 of the token is stored; it works while its client does (migration 0019)."""

    __tablename__ = "oauth_access_tokens"

    school_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    id: Mapped[uuid.UUID] = _uuid_pk()
    client_id: Mapped[uuid.UUID]
    token_hash: Mapped[bytes] = mapped_column(LargeBinary)
    scopes: Mapped[list[str]] = mapped_column(ARRAY(Text))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    expires_at: Mapped[datetime]

    __table_args__ = (
        ForeignKeyConstraint(
            ["school_id", "client_id"],
            ["api_tokens.school_id", "api_tokens.id"],
            name="fk_oauth_access_tokens_client",
            ondelete="CASCADE",
        ),
        UniqueConstraint("school_id", "token_hash", name="uq_oauth_access_tokens_school_id_token_hash"),
        Index("ix_oauth_access_tokens_token_hash", "token_hash"),
        Index("ix_oauth_access_tokens_expires_at", "school_id", "expires_at"),
    )


class AuditEvent(Base):
    """Who did what to whom, and when. Append-only for the application role."""

    __tablename__ = "audit_events"

    school_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    id: Mapped[uuid.UUID] = _uuid_pk()
    # Not a foreign key: the event outlives the user it names.
    actor_id: Mapped[uuid.UUID | None]
    actor_label: Mapped[str] = mapped_column(String(200), default="", server_default="")
    action: Mapped[str] = mapped_column(String(64))
    target_user_ids: Mapped[list[uuid.UUID]] = mapped_column(ARRAY(UUID(as_uuid=True)), server_default="{}")
    summary: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    request_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (
        ForeignKeyConstraint(["school_id"], ["schools.id"], ondelete="CASCADE"),
        Index("ix_audit_events_school_id_created_at", "school_id", "created_at"),
    )


class ImportStatus(enum.StrEnum):
    PREVIEW = "PREVIEW"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


class ImportJob(Base):
    """An uploaded roster file: its preview, then (once confirmed) its application."""

    __tablename__ = "import_jobs"

    school_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    id: Mapped[uuid.UUID] = _uuid_pk()
    created_by: Mapped[uuid.UUID | None]
    file_name: Mapped[str] = mapped_column(String(255), default="")
    status: Mapped[ImportStatus] = mapped_column(_enum(ImportStatus, "status"), default=ImportStatus.PREVIEW)
    remove_missing_pupils: Mapped[bool] = mapped_column(Boolean, default=False)
    total: Mapped[int] = mapped_column(Integer, default=0)
    processed: Mapped[int] = mapped_column(Integer, default=0)
    totals: Mapped[dict[str, int]] = mapped_column(JSONB, default=dict)
    columns: Mapped[list[str]] = mapped_column(JSONB, default=list)
    rows: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    new_classes: Mapped[list[dict[str, str]]] = mapped_column(JSONB, default=list)
    warnings: Mapped[list[str]] = mapped_column(JSONB, default=list)
    # The passwords typed into the file, sealed (db.imports.sealed_passwords) until the apply takes them; never plain.
    sealed_passwords: Mapped[bytes | None] = mapped_column(LargeBinary)
    failure_reason: Mapped[str | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    # Refreshed by every progress write, and by the apply's heartbeat while it runs: a RUNNING job whose
    # updated_at stands still has lost its worker (db.maintenance.STALE_IMPORT).
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(server_default=text("now() + interval '24 hours'"))
    # The admin who confirmed the job: the only one who may take its generated passwords.
    confirmed_by: Mapped[uuid.UUID | None]
    finished_at: Mapped[datetime | None]
    # The passwords the apply generated, sealed as the typed ones are, until taken (once) or their hour is over.
    sealed_generated_passwords: Mapped[bytes | None] = mapped_column(LargeBinary)
    generated_passwords: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    generated_passwords_taken_at: Mapped[datetime | None]

    __table_args__ = (
        ForeignKeyConstraint(["school_id"], ["schools.id"], ondelete="CASCADE"),
        CheckConstraint(
            "sealed_passwords IS NULL OR status = 'PREVIEW'", name="sealed_passwords_only_in_preview"
        ),
        CheckConstraint(
            "sealed_generated_passwords IS NULL OR status = 'SUCCEEDED'",
            name="generated_passwords_only_when_succeeded",
        ),
        Index("ix_import_jobs_status", "status", postgresql_where=text("status = 'RUNNING'")),
    )


class RolloverStatus(enum.StrEnum):
    PREVIEW = "PREVIEW"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    REVERTED = "REVERTED"


class TeachingAction(enum.StrEnum):
    """What a rollover does to every teaching class."""

    KEEP = "KEEP"
    EMPTY = "EMPTY"  # its pupils' memberships end; its teachers stay
    DELETE = "DELETE"


class RolloverOutcome(enum.StrEnum):
    """Where a rollover takes one pupil."""

    MOVED = "MOVED"  # into another registration class
    RENAMED = "RENAMED"  # stays in their class, which is renamed
    LEAVING = "LEAVING"  # leaves the school (soft-deleted)
    UNCHANGED = "UNCHANGED"


class RolloverJob(Base):
    """A school-year rollover: its preview, then its application, then maybe its revert (db/rollover/)."""

    __tablename__ = "rollover_jobs"

    school_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    id: Mapped[uuid.UUID] = _uuid_pk()
    created_by: Mapped[uuid.UUID | None]
    status: Mapped[RolloverStatus] = mapped_column(
        _enum(RolloverStatus, "status"), default=RolloverStatus.PREVIEW, server_default="PREVIEW"
    )
    teaching_action: Mapped[TeachingAction] = mapped_column(
        _enum(TeachingAction, "teaching_action"), default=TeachingAction.KEEP, server_default="KEEP"
    )
    rotate_login_codes: Mapped[bool] = mapped_column(Boolean, default=True, server_default="true")
    # The registration classes' steps as asked (db.rollover.plan.Step, as JSON).
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list, server_default="[]")
    # What happens to each class, with its pupils before and after.
    classes: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list, server_default="[]")
    totals: Mapped[dict[str, int]] = mapped_column(JSONB, default=dict, server_default="{}")
    leaving: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    pupils: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    total: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    processed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Once applied: the classes renamed (names before and after), created, and deleted (their rows).
    undo: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default="{}")
    # What a revert with skipConflicts left as it was, and why.
    conflicts: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list, server_default="[]")
    failure_reason: Mapped[str | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(server_default=text("now() + interval '24 hours'"))
    applied_at: Mapped[datetime | None]
    reverted_at: Mapped[datetime | None]

    __table_args__ = (
        ForeignKeyConstraint(["school_id"], ["schools.id"], ondelete="CASCADE"),
        Index("ix_rollover_jobs_status", "status", postgresql_where=text("status = 'RUNNING'")),
    )


class RolloverPupil(Base):
    """Where a rollover takes one pupil: in the preview, then as applied. Ids only."""

    __tablename__ = "rollover_pupils"

    school_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    job_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    outcome: Mapped[RolloverOutcome] = mapped_column(_enum(RolloverOutcome, "outcome"))
    from_class_id: Mapped[uuid.UUID | None]
    from_class_name: Mapped[str | None] = mapped_column(String(100))
    to_class_id: Mapped[uuid.UUID | None]
    to_class_name: Mapped[str | None] = mapped_column(String(100))
    # A leaver's version once the apply deleted them: a revert finds whether anything changed them since.
    version_after: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (
        ForeignKeyConstraint(
            ["school_id", "job_id"],
            ["rollover_jobs.school_id", "rollover_jobs.id"],
            name="fk_rollover_pupils_job",
            ondelete="CASCADE",
        ),
    )


class RolloverMembership(Base):
    """A membership a rollover's apply ADDED, or REMOVED (as its row was), for its revert."""

    __tablename__ = "rollover_memberships"

    school_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    job_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    change: Mapped[str] = mapped_column(String(8), primary_key=True)
    class_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    kind: Mapped[ClassKind] = mapped_column(_enum(ClassKind, "kind"))
    created_at: Mapped[datetime]

    __table_args__ = (
        ForeignKeyConstraint(
            ["school_id", "job_id"],
            ["rollover_jobs.school_id", "rollover_jobs.id"],
            name="fk_rollover_memberships_job",
            ondelete="CASCADE",
        ),
        CheckConstraint("change IN ('ADDED', 'REMOVED')", name="change"),
    )


class SignInThrottle(Base):
    """Recent failed attempts per account and per client (db/throttle.py), for all workers; no tenant's."""

    __tablename__ = "sign_in_throttle"

    key: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    attempts: Mapped[int] = mapped_column(Integer)
    window_ends_at: Mapped[datetime] = mapped_column(index=True)


class Change(Base):
    """One record of the change feed, written by triggers (migration 0016) in the transaction of the change it
    records; read through db/changes.py. Ids only."""

    __tablename__ = "changes"

    school_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    # The writing transaction (pg_current_xact_id()); the feed's order is (xid, position).
    xid: Mapped[int] = mapped_column(
        BigInteger, primary_key=True, server_default=text("(pg_current_xact_id()::text)::bigint")
    )
    position: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    # The user's or class's id; a membership's user.
    entity_id: Mapped[uuid.UUID]
    # A membership's class and kind.
    class_id: Mapped[uuid.UUID | None]
    membership_kind: Mapped[str | None] = mapped_column(String(16))
    operation: Mapped[str] = mapped_column(String(8))
    at: Mapped[datetime] = mapped_column(server_default=func.now())
    actor: Mapped[str] = mapped_column(
        String(200), server_default=text("COALESCE(current_setting('app.actor', true), '')")
    )

    __table_args__ = (
        ForeignKeyConstraint(["school_id"], ["schools.id"], ondelete="CASCADE"),
        CheckConstraint("kind IN ('USER', 'CLASS', 'MEMBERSHIP')", name="kind"),
        CheckConstraint("operation IN ('UPSERT', 'DELETE')", name="operation"),
        CheckConstraint("membership_kind IN ('REGISTRATION', 'TEACHING')", name="membership_kind"),
        CheckConstraint(
            "(kind = 'MEMBERSHIP') = (class_id IS NOT NULL)", name="memberships_name_their_class"
        ),
        # An entity's latest record: OneRoster's dateLastModified and removed enrollments (migration 0019).
        Index("ix_changes_school_id_kind_entity", "school_id", "kind", "entity_id", "at"),
    )


TENANT_TABLES = (
    "users",
    "classes",
    "class_memberships",
    "sessions",
    "api_tokens",
    "audit_events",
    "import_jobs",
    "changes",
    "oauth_access_tokens",
    "rollover_jobs",
    "rollover_pupils",
    "rollover_memberships",
)
