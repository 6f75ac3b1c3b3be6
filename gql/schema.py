"""The Strawberry schema. `python -m gql.schema` prints it as SDL (that is `schema.graphql`)."""

from __future__ import annotations

from collections.abc import Callable

import strawberry
from graphql import lexicographic_sort_schema, print_schema
from strawberry.extensions import (
    DisableIntrospection,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
    SchemaExtension,
)
from strawberry.tools import merge_types

from db.schools import get_school
from gql.api_tokens import ApiTokenMutations, ApiTokenQueries
from gql.auth import AuthMutations, AuthQueries
from gql.classes import ClassMutations, ClassQueries
from gql.context import Info
from gql.errors import MaskInternalErrors
from gql.imports import ImportMutations, ImportQueries
from gql.login_cards import LoginCardMutations, LoginCardQueries
from gql.manage_users import AuditEventQueries, ManageUserMutations
from gql.permissions import IsSignedIn
from gql.school_settings import SchoolSettingsMutations
from gql.telemetry import OperationMetrics
from gql.types import School
from gql.users import UserQueries

MAX_DEPTH = 10
MAX_ALIASES = 15
MAX_TOKENS = 2000


@strawberry.type
class SchoolQueries:
    @strawberry.field(permission_classes=[IsSignedIn], description="The school of whoever is asking.")
    async def school(self, info: Info) -> School:
        async with info.context.scope() as session:
            row = await get_school(session, info.context.signed_in().school_id)
            assert row is not None, "a signed-in caller's school exists"
            return School.from_row(row)


Query = merge_types("Query", (SchoolQueries, AuthQueries, ApiTokenQueries, UserQueries, AuditEventQueries,
                              ClassQueries, ImportQueries, LoginCardQueries))
Mutation = merge_types("Mutation", (AuthMutations, ApiTokenMutations, ManageUserMutations, ClassMutations,
                                    ImportMutations, LoginCardMutations, SchoolSettingsMutations))


def safety_extensions(*, introspection: bool = True) -> list[Callable[[], SchemaExtension]]:
    extensions: list[Callable[[], SchemaExtension]] = [
        MaskInternalErrors,
        OperationMetrics,
        lambda: QueryDepthLimiter(max_depth=MAX_DEPTH),
        lambda: MaxAliasesLimiter(max_alias_count=MAX_ALIASES),
        lambda: MaxTokensLimiter(max_token_count=MAX_TOKENS),
    ]
    if not introspection:
        extensions.append(DisableIntrospection)
    return extensions


def build_schema(*, introspection: bool = True) -> strawberry.Schema:
    return strawberry.Schema(query=Query, mutation=Mutation, extensions=safety_extensions(introspection=introspection))


def sdl(schema: strawberry.Schema) -> str:
    return print_schema(lexicographic_sort_schema(schema._schema)) + "\n"


if __name__ == "__main__":
    print(sdl(build_schema()), end="")
