"""GraphQL object types, built from domain rows."""

from __future__ import annotations

import strawberry

from db import models
from gql.enums import Provider
from gql.permissions import IsAdmin, IsStaff


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
        )
