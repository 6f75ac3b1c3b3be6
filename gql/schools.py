"""The school: its type, and `updateSchoolSettings`, the settings its admins change."""

from __future__ import annotations

from typing import Any

import strawberry

from db import models, schools
from db.errors import DomainError
from db.passwords import MAX_LENGTH, STAFF_MIN_LENGTH
from gql.context import Info
from gql.enums import Provider
from gql.payloads import Payload, UserError, user_errors
from gql.permissions import IsAdmin, IsStaff


@strawberry.type(description="What a new password needs, so a form can say so before it is sent.")
class PasswordPolicy:
    staff_min_length: int = strawberry.field(
        description="The shortest password a teacher (or admin) may have; staff passwords must not be "
        "common ones either."
    )
    pupil_min_length: int = strawberry.field(
        description="The shortest password a pupil may have (the school's pupilMinPasswordLength)."
    )
    max_length: int = strawberry.field(description="The longest password anyone may have.")


@strawberry.type(description="A school: the tenant every user, class and login card belongs to.")
class School:
    id: strawberry.ID
    slug: str
    name: str
    provider: Provider
    pupil_min_password_length: int
    qr_sign_in_enabled: bool
    school_year_end_month: int = strawberry.field(
        permission_classes=[IsAdmin], description="With schoolYearEndDay, the day login cards expire."
    )
    school_year_end_day: int = strawberry.field(permission_classes=[IsAdmin])
    deleted_user_retention_days: int = strawberry.field(
        permission_classes=[IsAdmin], description="How long deleted users are kept before they are purged."
    )
    teachers_can_reset_pupil_passwords: bool = strawberry.field(
        permission_classes=[IsStaff],
        description="Whether teachers may reset the passwords of the pupils in their classes.",
    )
    feed_retention_days: int = strawberry.field(
        permission_classes=[IsAdmin],
        description="How long the change feed keeps its records; an older cursor must resync.",
    )

    @strawberry.field(description="What a new password needs, for staff and for pupils.")
    def password_policy(self) -> PasswordPolicy:
        return PasswordPolicy(
            staff_min_length=STAFF_MIN_LENGTH,
            pupil_min_length=self.pupil_min_password_length,
            max_length=MAX_LENGTH,
        )

    @classmethod
    def from_row(cls, row: models.School) -> School:
        return cls(
            id=strawberry.ID(str(row.id)),
            slug=row.slug,
            name=row.name,
            provider=row.provider,
            pupil_min_password_length=row.pupil_min_password_length,
            qr_sign_in_enabled=row.qr_sign_in_enabled,
            school_year_end_month=row.school_year_end_month,
            school_year_end_day=row.school_year_end_day,
            deleted_user_retention_days=row.deleted_user_retention_days,
            teachers_can_reset_pupil_passwords=row.teachers_can_reset_pupil_passwords,
            feed_retention_days=row.feed_retention_days,
        )


@strawberry.input(description="The settings to change; a field left out stays as it is.")
class SchoolSettingsInput:
    pupil_min_password_length: strawberry.Maybe[int] = strawberry.field(
        description="1 to 64. A new minimum applies when a password is next set; existing ones keep working."
    )
    qr_sign_in_enabled: strawberry.Maybe[bool]
    school_year_end_month: strawberry.Maybe[int] = strawberry.field(
        description="With schoolYearEndDay, a day of the year: when login cards expire."
    )
    school_year_end_day: strawberry.Maybe[int]
    deleted_user_retention_days: strawberry.Maybe[int] = strawberry.field(description="1 to 3650.")
    teachers_can_reset_pupil_passwords: strawberry.Maybe[bool] = strawberry.field(
        description="Let teachers reset the passwords of the pupils in their classes."
    )
    feed_retention_days: strawberry.Maybe[int] = strawberry.field(
        description="1 to 3650: how many days the change feed keeps its records."
    )

    def to_domain(self) -> schools.SettingsChange:
        given_values: dict[str, Any] = {
            name: given.value
            for name, given in (
                ("pupil_min_password_length", self.pupil_min_password_length),
                ("qr_sign_in_enabled", self.qr_sign_in_enabled),
                ("school_year_end_month", self.school_year_end_month),
                ("school_year_end_day", self.school_year_end_day),
                ("deleted_user_retention_days", self.deleted_user_retention_days),
                ("teachers_can_reset_pupil_passwords", self.teachers_can_reset_pupil_passwords),
                ("feed_retention_days", self.feed_retention_days),
            )
            if given is not None
        }
        return schools.SettingsChange(**given_values)


@strawberry.type
class SchoolPayload(Payload):
    school: School | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class SchoolSettingsMutations:
    @strawberry.mutation(
        permission_classes=[IsAdmin],
        description="Change the school's settings. Allowed in managed schools too: they are "
        "Rollcall's own. Any error changes nothing.",
    )
    async def update_school_settings(self, info: Info, input: SchoolSettingsInput) -> SchoolPayload:
        school_id = info.context.signed_in().school_id
        try:
            async with info.context.scope() as session:
                row = await schools.update_settings(
                    session, school_id=school_id, actor=info.context.actor(), change=input.to_domain()
                )
                return SchoolPayload(school=School.from_row(row))
        except DomainError as error:
            async with info.context.scope() as session:
                current = await schools.get_school(session, school_id)
                assert current is not None, "a signed-in caller's school exists"
                return SchoolPayload(
                    school=School.from_row(current), errors=user_errors(error, under="input")
                )
