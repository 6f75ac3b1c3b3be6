"""The Strawberry schema. `python -m gql.schema` prints it as SDL (that is `schema.graphql`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime

import strawberry
from graphql import (
    FieldNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    lexicographic_sort_schema,
    print_schema,
)
from graphql.validation import ASTValidationRule
from strawberry.exceptions import StrawberryInputCoercionError
from strawberry.extensions import (
    AddValidationRules,
    DisableIntrospection,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
    SchemaExtension,
)
from strawberry.schema.types.base_scalars import DateTimeDefinition
from strawberry.tools import merge_types
from strawberry.types import ExecutionContext

from db.schools import get_school
from db.text import shown, storable_time
from gql.api_tokens import ApiTokenMutations, ApiTokenQueries
from gql.audit import AuditEventQueries
from gql.changes import ChangeQueries
from gql.classes import ClassMutations, ClassQueries
from gql.context import Info
from gql.cost import FragmentExpansionLimiter, QueryCostLimiter
from gql.descriptions import describe
from gql.documents import CachedDocuments, DocumentCache
from gql.errors import MaskInternalErrors, log_errors
from gql.imports import ImportMutations, ImportQueries, ImportSubscriptions
from gql.login_cards import LoginCardMutations, LoginCardQueries
from gql.manage_users import ManageUserMutations
from gql.nodes import NodeQueries
from gql.permissions import IsSignedIn
from gql.rollover import RolloverMutations, RolloverQueries, RolloverSubscriptions
from gql.schools import School, SchoolSettingsMutations
from gql.signin import AuthMutations, AuthQueries
from gql.users import UserQueries
from web.telemetry import OperationMetrics

MAX_DEPTH = 10
MAX_ALIASES = 15
MAX_TOKENS = 2000
SIGN_IN_FIELDS = {"login", "loginWithQr"}


@strawberry.type
class SchoolQueries:
    @strawberry.field(permission_classes=[IsSignedIn], description="The school of whoever is asking.")
    async def school(self, info: Info) -> School:
        async with info.context.scope() as session:
            row = await get_school(session, info.context.signed_in().school_id)
            assert row is not None, "a signed-in caller's school exists"
            return School.from_row(row)


@strawberry.type
class Query(
    SchoolQueries,
    AuthQueries,
    ApiTokenQueries,
    UserQueries,
    AuditEventQueries,
    ClassQueries,
    ImportQueries,
    LoginCardQueries,
    NodeQueries,
    ChangeQueries,
    RolloverQueries,
):
    """The query root (its description is in gql.descriptions); every mutation's payload returns it too."""


Mutation = merge_types(
    "Mutation",
    (
        AuthMutations,
        ApiTokenMutations,
        ManageUserMutations,
        ClassMutations,
        ImportMutations,
        LoginCardMutations,
        SchoolSettingsMutations,
        RolloverMutations,
    ),
)

Subscription = merge_types("Subscription", (ImportSubscriptions, RolloverSubscriptions))


class SignInAlone(ASTValidationRule):
    """A sign-in is the only field of its mutation: were a field beside it to fail, the response would not carry
    the token of the session the sign-in had started."""

    def enter_operation_definition(self, node: OperationDefinitionNode, *_: object) -> None:
        if node.operation != OperationType.MUTATION:
            return
        # Sign-ins packed together with aliases stay possible (and throttled as one by one); nothing else beside.
        fields = set(self.root_fields(node.selection_set))
        if fields & SIGN_IN_FIELDS and fields - SIGN_IN_FIELDS:
            self.report_error(
                GraphQLError(
                    "Sign in with login or loginWithQr on its own, not beside other fields.",
                    node,
                    extensions={"code": "BAD_REQUEST"},
                )
            )

    def root_fields(self, selection_set: SelectionSetNode, seen: frozenset[str] = frozenset()) -> list[str]:
        found: list[str] = []
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                found.append(selection.name.value)
            elif isinstance(selection, InlineFragmentNode):
                found += self.root_fields(selection.selection_set, seen)
            elif (
                isinstance(selection, FragmentSpreadNode)
                and selection.name.value not in seen
                and (fragment := self.context.get_fragment(selection.name.value))
            ):
                found += self.root_fields(fragment.selection_set, seen | {selection.name.value})
        return found


def safety_extensions(*, introspection: bool = True) -> list[Callable[[], SchemaExtension]]:
    documents = DocumentCache()  # this schema's own: its validation rules are fixed here
    extensions: list[Callable[[], SchemaExtension]] = [
        MaskInternalErrors,
        OperationMetrics,
        FragmentExpansionLimiter,
        lambda: CachedDocuments(documents),
        lambda: QueryDepthLimiter(max_depth=MAX_DEPTH),
        lambda: MaxAliasesLimiter(max_alias_count=MAX_ALIASES),
        lambda: MaxTokensLimiter(max_token_count=MAX_TOKENS),
        QueryCostLimiter,
        lambda: AddValidationRules([SignInAlone]),
    ]
    if not introspection:
        extensions.append(DisableIntrospection)
    return extensions


def _read_time(value: object) -> datetime:
    """A DateTime read as Strawberry reads it, then refused when PostgreSQL could not take it: a time outside
    the calendar once moved to UTC is a bad value like any other, not a failure of the server."""
    read = DateTimeDefinition.parse_value
    assert read is not None
    time = read(value)
    try:
        return storable_time(time)
    except ValueError as error:
        raise StrawberryInputCoercionError(
            f"Value cannot represent a DateTime: '{shown(value)}'. {error}"
        ) from None


DATE_TIME = dataclasses.replace(DateTimeDefinition, parse_value=_read_time)


class RollcallSchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # Strawberry's own logging prints each error with the query text around it, secrets and all.
        log_errors(errors, execution_context)


def build_schema(*, introspection: bool = True) -> strawberry.Schema:
    schema = RollcallSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        extensions=safety_extensions(introspection=introspection),
        scalar_overrides={datetime: DATE_TIME},
    )
    describe(schema._schema)
    return schema


def sdl(schema: strawberry.Schema) -> str:
    return print_schema(lexicographic_sort_schema(schema._schema)) + "\n"


if __name__ == "__main__":
    print(sdl(build_schema()), end="")
