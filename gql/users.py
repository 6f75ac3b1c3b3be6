"""The User type."""

from __future__ import annotations

from datetime import datetime

import strawberry

from db import models
from gql.enums import UserType


@strawberry.type(description="A pupil or a teacher of the school.")
class User:
    id: strawberry.ID
    username: str
    first_name: str
    surname: str
    type: UserType
    is_admin: bool
    must_change_password: bool
    deleted_at: datetime | None
    created_at: datetime
    updated_at: datetime
    version: int = strawberry.field(description="Pass it back as `expectedVersion` when editing this user.")

    @classmethod
    def from_row(cls, row: models.User) -> User:
        return cls(
            id=strawberry.ID(str(row.id)), username=row.username, first_name=row.first_name, surname=row.surname,
            type=row.type, is_admin=row.is_admin, must_change_password=row.must_change_password,
            deleted_at=row.deleted_at, created_at=row.created_at, updated_at=row.updated_at, version=row.version,
        )
