"""The SchoolClass type."""

from __future__ import annotations

import strawberry

from db import models
from gql.enums import ClassKind


@strawberry.type(description="A registration class (a user has at most one) or a teaching class.")
class SchoolClass:
    id: strawberry.ID
    name: str
    kind: ClassKind

    @classmethod
    def from_row(cls, row: models.SchoolClass) -> SchoolClass:
        return cls(id=strawberry.ID(str(row.id)), name=row.name, kind=row.kind)
