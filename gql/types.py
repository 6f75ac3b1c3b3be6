"""GraphQL object types, built from domain rows."""

from __future__ import annotations

import strawberry

from db import models
from gql.enums import Provider


@strawberry.type(description="A school: the tenant every user, class and login card belongs to.")
class School:
    id: strawberry.ID
    slug: str
    name: str
    provider: Provider
    pupil_min_password_length: int
    qr_sign_in_enabled: bool

    @classmethod
    def from_row(cls, row: models.School) -> School:
        return cls(
            id=strawberry.ID(str(row.id)), slug=row.slug, name=row.name, provider=row.provider,
            pupil_min_password_length=row.pupil_min_password_length, qr_sign_in_enabled=row.qr_sign_in_enabled,
        )
