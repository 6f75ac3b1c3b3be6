"""What every mutation returns besides its object: a list of business errors (empty on success), and the
query root, to read again in the same request whatever the change has moved (counts, the visible page)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Annotated, cast

import strawberry

from db.errors import DomainError
from gql.context import Info
from gql.enums import ErrorCode

if TYPE_CHECKING:
    from gql.schema import Query

# The query root keeps no state: its fields read the request's context, so any object stands for it, and this
# module need not import gql.schema (which imports every payload) to answer `query`.
_QUERY_ROOT = object()


@strawberry.type(
    description="Why a mutation changed nothing. When any error is returned, nothing was changed."
)
class UserError:
    code: ErrorCode
    message: str
    path: list[str] = strawberry.field(
        description="Where in the request the fault is, as the names of the arguments and input fields "
        "down to it: ['input', 'username'] for addUser's username, ['expectedVersion'] for an argument. "
        "Empty when no one input is at fault (the whole request, or a wrong password at sign-in)."
    )
    field: str | None = strawberry.field(
        default=None,
        description="The input field at fault, if one is, without the input object around it.",
        deprecation_reason="Use `path`, which names the input object too, the same way in every mutation.",
    )
    user_id: strawberry.ID | None = strawberry.field(
        default=None, description="The user at fault, whenever the fault is one user's."
    )
    attempts_remaining: int | None = strawberry.field(
        default=None,
        description="For REAUTH_FAILED: how many more wrong passwords this session may type before it is "
        "signed out (0: it has been).",
    )


def user_errors(
    error: DomainError, *, under: str | None = None, user_id: uuid.UUID | None = None
) -> list[UserError]:
    """The problems as GraphQL says them. `under` is the input argument holding every field the problems
    name (addUser's `input`); `user_id`, the user a single-user mutation is about, for problems that do not
    name one."""
    return [
        UserError(
            code=p.code,
            message=p.message,
            path=[*([under] if under else []), p.field] if p.field else [],
            field=p.field,
            user_id=strawberry.ID(str(p.user_id or user_id)) if (p.user_id or user_id) else None,
            attempts_remaining=p.attempts_remaining,
        )
        for p in error.problems
    ]


@strawberry.type(description="The fields every mutation's answer has.")
class Payload:
    @strawberry.field(
        description="The whole query root, read after the change: ask for the counts and the page on "
        "screen here, and get them in the same request."
    )
    def query(self, info: Info) -> Annotated[Query, strawberry.lazy("gql.schema")]:
        # Whatever was loaded before the change is stale now.
        info.context.loaders.clear()
        return cast("Query", _QUERY_ROOT)
