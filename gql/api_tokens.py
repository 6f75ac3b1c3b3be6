"""API tokens for third-party apps: issued and revoked by admins, the secret shown once."""

from __future__ import annotations

from datetime import datetime

import strawberry

from db import api_tokens, models
from db.errors import DomainError
from gql.context import Info
from gql.ids import Node, parse_id
from gql.payloads import Payload, UserError, user_errors
from gql.permissions import IsAdmin

ApiScope = api_tokens.ApiScope  # marked as a GraphQL enum in place, as in gql.enums
strawberry.enum(
    ApiScope,
    description=(
        "ROSTER_READ: read users and classes, nothing else. PROVISION: the school's provider keeps users and "
        "classes up to date over SCIM at /scim/v2, and nothing else."
    ),
)


@strawberry.type(description="An app's access to the school. Its secret is never shown again after creation.")
class ApiToken(Node):
    id: strawberry.ID
    name: str
    scopes: list[ApiScope]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def from_row(cls, row: models.ApiToken) -> ApiToken:
        return cls(
            id=strawberry.ID(str(row.id)),
            name=row.name,
            scopes=[api_tokens.ApiScope(scope) for scope in row.scopes],
            created_at=row.created_at,
            last_used_at=row.last_used_at,
            revoked_at=row.revoked_at,
        )


@strawberry.type
class CreateApiTokenPayload(Payload):
    token: str | None = strawberry.field(
        default=None, description="The secret: shown this once, store it now."
    )
    api_token: ApiToken | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class RevokeApiTokenPayload(Payload):
    api_token: ApiToken | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class ApiTokenQueries:
    @strawberry.field(
        permission_classes=[IsAdmin], description="The school's API tokens (never their secrets)."
    )
    async def api_tokens(self, info: Info) -> list[ApiToken]:
        async with info.context.scope() as session:
            rows = await api_tokens.list_api_tokens(session, school_id=info.context.signed_in().school_id)
            return [ApiToken.from_row(row) for row in rows]


@strawberry.type
class ApiTokenMutations:
    @strawberry.mutation(
        permission_classes=[IsAdmin],
        description="Issue a read-only token for an app, or a provisioning token for the "
        "school's provider (managed schools).",
    )
    async def create_api_token(self, info: Info, name: str, scopes: list[ApiScope]) -> CreateApiTokenPayload:
        caller = info.context.person()
        try:
            async with info.context.scope() as session:
                secret, row = await api_tokens.create_api_token(
                    session,
                    school_id=caller.school_id,
                    actor=info.context.actor(),
                    name=name,
                    scopes=scopes,
                )
        except DomainError as error:
            return CreateApiTokenPayload(errors=user_errors(error))
        return CreateApiTokenPayload(token=secret, api_token=ApiToken.from_row(row))

    @strawberry.mutation(
        permission_classes=[IsAdmin], description="Stop a token working, from its next request."
    )
    async def revoke_api_token(self, info: Info, id: strawberry.ID) -> RevokeApiTokenPayload:
        caller = info.context.person()
        try:
            async with info.context.scope() as session:
                row = await api_tokens.revoke_api_token(
                    session,
                    school_id=caller.school_id,
                    token_id=parse_id(id, field="id"),
                    actor=info.context.actor(),
                )
        except DomainError as error:
            return RevokeApiTokenPayload(errors=user_errors(error))
        return RevokeApiTokenPayload(api_token=ApiToken.from_row(row))
