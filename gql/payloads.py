"""What every mutation returns besides its object: a list of business errors (empty on success)."""

from __future__ import annotations

import strawberry

from db.errors import DomainError
from gql.enums import ErrorCode


@strawberry.type(
    description="Why a mutation changed nothing. When any error is returned, nothing was changed."
)
class UserError:
    code: ErrorCode
    message: str
    field: str | None = strawberry.field(default=None, description="The input field at fault, if one is.")
    user_id: strawberry.ID | None = strawberry.field(
        default=None, description="The user concerned, in a batch."
    )


def user_errors(error: DomainError) -> list[UserError]:
    return [
        UserError(
            code=p.code,
            message=p.message,
            field=p.field,
            user_id=strawberry.ID(str(p.user_id)) if p.user_id else None,
        )
        for p in error.problems
    ]
