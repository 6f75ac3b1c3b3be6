"""The compiled read path: roster queries answered by ONE SQL statement whose JSON PostgreSQL builds.

Every POST to /graphql passes through here first. A query made only of fields this module knows (the users
table and classes, see gql.compiled_sql) is parsed and validated as Strawberry would (same limits), translated
into one statement, and run in the caller's school scope; the text PostgreSQL returns is the response body.
Anything else (mutations, other fields, fragments, directives, bad arguments or cursors, callers the
fields' own permission classes turn away, any failure at all) goes to the Strawberry view untouched, which
answers it exactly as it would have without this module.
"""

from __future__ import annotations

import inspect
import logging
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, cast

import strawberry
from cross_web import HTTPException
from graphql import (
    DocumentNode,
    FieldNode,
    GraphQLEnumType,
    GraphQLError,
    GraphQLField,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    get_named_type,
    get_operation_ast,
    parse,
)
from graphql.execution.values import VariableValues, get_argument_values, get_variable_values
from graphql.validation import ASTValidationRule, specified_rules
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send
from strawberry.asgi import GraphQL
from strawberry.extensions import AddValidationRules, MaskErrors, MaxTokensLimiter
from strawberry.permission import BasePermission, PermissionExtension
from strawberry.schema.schema import validate_document

from db.engine import Database, retry_if_disconnected
from db.errors import DomainError
from db.models import ClassKind, UserType
from db.sessions import SessionPolicy
from db.users import UserFilter, UserOrder, UserOrderField, UserStatus
from gql import compiled_sql as sql
from gql.cost import FragmentExpansionLimiter, QueryCostLimiter, query_cost, too_complex, too_costly
from gql.documents import CachedDocuments
from gql.ids import lookup_id
from tenants import policies
from tenants.callers import Caller, resolve_caller
from web.graphql_http import response_media_type
from web.http_auth import refuse_secrets_in_url, session_secret
from web.telemetry import OperationMetrics, observe_operation

log = logging.getLogger("rollcall.compiled")

PLAN_CACHE_SIZE = 256
# Longer documents are not roster reads; they go to Strawberry without being parsed (or cached) here.
MAX_QUERY_BYTES = 16 * 1024

# (type, field) -> what it becomes. Columns are the plain fields of a user or a class.
_FIELDS: dict[tuple[str, str], str] = {
    ("Query", "users"): "users",
    ("Query", "classes"): "classes",
    ("UserConnection", "edges"): "edges",
    ("UserConnection", "pageInfo"): "pageInfo",
    ("UserConnection", "totalCount"): "totalCount",
    ("UserEdge", "cursor"): "cursor",
    ("UserEdge", "node"): "node",
    ("PageInfo", "hasNextPage"): "hasNextPage",
    ("PageInfo", "endCursor"): "endCursor",
    ("User", "registrationClass"): "registrationClass",
    ("User", "teachingClasses"): "teachingClasses",
    ("SchoolClass", "memberCount"): "memberCount",
    ("SchoolClass", "members"): "members",
    **{("User", name): "column" for name in sql.USER_COLUMNS},
    **{("SchoolClass", name): "column" for name in sql.CLASS_COLUMNS},
}
# What the translator reads besides fields: each field's arguments, each input type's fields (by name, with
# their types as the schema prints them) and each enum's values. At start-up a field whose arguments, input
# fields or enum values (its own type's, too) go beyond these is left to Strawberry, so a schema that grows
# past this path is answered by Strawberry, never by a statement that ignores the new part. Add a name here
# only once the translator reads it.
_ARGUMENTS: dict[tuple[str, str], dict[str, str]] = {
    ("Query", "users"): {"filter": "UserFilter", "orderBy": "UserOrder", "first": "Int", "after": "String"},
    ("Query", "classes"): {"kind": "ClassKind"},
    ("SchoolClass", "members"): {"type": "UserType", "first": "Int", "after": "String"},
}
_INPUT_FIELDS: dict[str, dict[str, str]] = {
    "UserFilter": {"search": "String", "type": "UserType", "classId": "ID", "status": "UserStatus!"},
    "UserOrder": {"field": "UserOrderField!", "descending": "Boolean!"},
}
_ENUM_VALUES: dict[str, frozenset[str]] = {
    "UserType": frozenset({"PUPIL", "TEACHER"}),
    "ClassKind": frozenset({"REGISTRATION", "TEACHING"}),
    "UserStatus": frozenset({"ACTIVE", "DELETED", "ALL"}),
    "UserOrderField": frozenset({"USERNAME", "FIRST_NAME", "SURNAME", "TYPE", "CREATED_AT"}),
}
# Schema extensions whose work the compiled path does too (or that only act on errors, which it never has).
_KNOWN_EXTENSIONS = (
    AddValidationRules,
    CachedDocuments,
    MaxTokensLimiter,
    MaskErrors,
    OperationMetrics,
    QueryCostLimiter,
    FragmentExpansionLimiter,
)


class Unsupported(Exception):
    """Not something this path answers: the Strawberry view does."""


@dataclass(frozen=True, slots=True)
class Plan:
    document: DocumentNode
    operation: OperationDefinitionNode
    name: str | None
    # Every permission class on the fields used: each must let the caller through, or the view answers.
    permissions: tuple[type[BasePermission], ...]
    # With no variables the statement is fixed, bar the school ($1): its text, its other parameters, and
    # whether it lists deleted users.
    fixed: tuple[str, list[Any], bool] | None


class CompiledReads:
    """ASGI app in front of the Strawberry view at /graphql."""

    def __init__(self, view: GraphQL[Any, Any], db: Database, policy: SessionPolicy) -> None:
        self.view, self.db, self.policy = view, db, policy
        schema = cast(strawberry.Schema, view.schema)
        self.graphql_schema = schema._schema
        self.plans: OrderedDict[tuple[str, str | None], Plan | None] = OrderedDict()
        self.rules: tuple[type[ASTValidationRule], ...] = tuple(specified_rules)
        self.max_tokens: int | None = None
        self.enabled = True
        for factory in schema.extensions:
            extension = factory() if callable(factory) else factory
            if isinstance(extension, AddValidationRules):
                self.rules += tuple(extension.validation_rules)
            elif isinstance(extension, MaxTokensLimiter):
                self.max_tokens = extension.max_token_count
            elif not isinstance(extension, _KNOWN_EXTENSIONS):
                log.warning(
                    "compiled reads are off: the schema has an extension they do not know, %r", extension
                )
                self.enabled = False
        self.permissions = self._field_permissions()

    def _field_permissions(self) -> dict[tuple[str, str], tuple[type[BasePermission], ...]]:
        """The permission classes of each field this path knows; a field with any other extension, or with an
        argument, input field or enum value the translator does not know, is left out."""
        found = {}
        for type_name, field_name in _FIELDS:
            graphql_type = self.graphql_schema.get_type(type_name)
            if not isinstance(graphql_type, GraphQLObjectType) or field_name not in graphql_type.fields:
                continue
            field = graphql_type.fields[field_name]
            if (unknown := _unknown_input(field, _ARGUMENTS.get((type_name, field_name), {}))) is not None:
                log.warning(
                    "compiled reads leave %s.%s to Strawberry: they do not know %s",
                    type_name,
                    field_name,
                    unknown,
                )
                continue
            definition = field.extensions.get("strawberry-definition")
            extensions = getattr(definition, "extensions", None) or []
            if any(not isinstance(extension, PermissionExtension) for extension in extensions):
                continue
            found[type_name, field_name] = tuple(getattr(definition, "permission_classes", None) or ())
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.enabled or scope["type"] != "http" or scope["method"] != "POST":
            await self.view(scope, receive, send)
            return
        headers = Headers(scope=scope)
        length = headers.get("content-length", "")
        accept = headers.get("accept", "")
        if (
            "application/json" not in headers.get("content-type", "")
            or not length.isdigit()
            or int(length) > MAX_QUERY_BYTES
            or "multipart" in accept
            or "event-stream" in accept
        ):
            await self.view(scope, receive, send)
            return
        body, complete = await _read_body(receive)
        if not complete:
            return  # the client went away
        response = await self._answer(Request(scope, receive), body)
        if response is None:
            await self.view(scope, _replay(body, receive), send)
        else:
            await response(scope, receive, send)

    async def _answer(self, request: Request, body: bytes) -> Response | None:
        try:
            # The view's own decoding, so a body it refuses is refused by the view.
            data = self.view.decode_json(body)
        except (HTTPException, ValueError):
            return None
        if not isinstance(data, dict) or data.get("extensions") is not None:
            return None
        query, variables, operation_name = data.get("query"), data.get("variables"), data.get("operationName")
        if (
            not isinstance(query, str)
            or not isinstance(variables, dict | None)
            or not isinstance(operation_name, str | None)
        ):
            return None
        plan = self.plan(query, operation_name)
        if plan is None or too_costly(
            query_cost(self.graphql_schema, plan.document, operation_name, variables)
        ):
            return None  # the view refuses a too costly query, with the same error as always
        try:
            refuse_secrets_in_url(request)
            secret = session_secret(request)
            # The school is always $1, filled in once the caller is known.
            statement, params, reads_deleted = self._statement(plan, variables or {})
        except (HTTPException, Unsupported, DomainError, GraphQLError, ValueError):
            return None
        if not secret:
            return None
        started = time.perf_counter()

        async def read() -> str | None:
            # One checkout, one transaction: the caller is found (and their school bound) by one statement,
            # then the read runs in the same transaction.
            async with self.db.engine.connect() as connection, connection.begin():
                caller = await resolve_caller(connection, secret, self.policy)
                if caller is None or not await _allowed(caller, plan.permissions):
                    return None
                if reads_deleted and not policies.may_list_deleted_users(caller):
                    return None  # the view refuses it
                # A statement that reads no table (`{ __typename }`) takes no school either.
                school = (caller.school_id,) if "$1" in statement else ()
                result = await connection.exec_driver_sql(statement, (*school, *params))
                return cast(str, result.scalar_one())

        try:
            text = await retry_if_disconnected(read)
        except Exception:
            # Whatever went wrong, the general path answers as it always would (an error there is masked).
            log.warning("the compiled read failed; the general path answers instead", exc_info=True)
            return None
        if text is None:
            return None
        observe_operation(plan.name, "query", time.perf_counter() - started)
        # A compiled read always ran: 200, in the media type the client asked for.
        return Response(text.encode(), media_type=response_media_type(request.headers.get("accept")))

    def _statement(self, plan: Plan, variables: dict[str, Any]) -> tuple[str, list[Any], bool]:
        """The statement, its parameters but the school ($1), and whether it lists deleted users."""
        if plan.fixed is not None:
            return plan.fixed
        coerced = get_variable_values(
            self.graphql_schema, plan.operation.variable_definitions or (), variables
        )
        if isinstance(coerced, list):
            raise Unsupported("the variables do not fit their definitions")
        translator = _Translator(self.graphql_schema, self.permissions, coerced)
        statement, params = sql.statement(uuid.UUID(int=0), translator.root(plan.operation.selection_set))
        return statement, params[1:], translator.reads_deleted

    def plan(self, query: str, operation_name: str | None) -> Plan | None:
        """The plan for a document, from a bounded cache; None when the view must answer it."""
        key = (query, operation_name)
        if key in self.plans:
            self.plans.move_to_end(key)
            return self.plans[key]
        plan = self._compile(query, operation_name) if len(query) <= MAX_QUERY_BYTES else None
        self.plans[key] = plan
        if len(self.plans) > PLAN_CACHE_SIZE:
            self.plans.popitem(last=False)
        return plan

    def _compile(self, query: str, operation_name: str | None) -> Plan | None:
        try:
            document = parse(query, max_tokens=self.max_tokens)
        except GraphQLError:
            return None
        if too_complex(document) or validate_document(self.graphql_schema, document, self.rules):
            return None
        operation = get_operation_ast(document, operation_name)
        if operation is None or operation.operation != OperationType.QUERY or operation.directives:
            return None
        used: list[type[BasePermission]] = []
        try:
            if operation.variable_definitions:
                _Translator(self.graphql_schema, self.permissions, None, used).root(operation.selection_set)
                fixed = None
            else:
                translator = _Translator(self.graphql_schema, self.permissions, None, used, fixed=True)
                selection = translator.root(operation.selection_set)
                # The school is always $1: kept apart, it is filled in per request.
                statement, params = sql.statement(uuid.UUID(int=0), selection)
                fixed = (statement, params[1:], translator.reads_deleted)
        except (Unsupported, DomainError, GraphQLError, ValueError):
            return None
        name = operation.name.value if operation.name else None
        return Plan(
            document=document,
            operation=operation,
            name=name,
            permissions=tuple(dict.fromkeys(used)),
            fixed=fixed,
        )


class _Translator:
    """Turns a validated selection into gql.compiled_sql's tree. With no variables and not `fixed`, it only checks
    that every field is one this path knows (the arguments are read per request)."""

    def __init__(
        self,
        schema: GraphQLSchema,
        permissions: dict[tuple[str, str], tuple[type[BasePermission], ...]],
        variables: VariableValues | None,
        used: list[type[BasePermission]] | None = None,
        *,
        fixed: bool = False,
    ) -> None:
        self.schema, self.permissions, self.variables = schema, permissions, variables
        self.used = used if used is not None else []
        self.read_arguments = fixed or variables is not None
        self.reads_deleted = False  # a users page with status DELETED or ALL

    def root(self, selection_set: SelectionSetNode) -> sql.Selection:
        assert self.schema.query_type is not None, "the schema has queries"
        return self.selection(self.schema.query_type, selection_set)

    def selection(self, parent: GraphQLObjectType, selection_set: SelectionSetNode | None) -> sql.Selection:
        if selection_set is None:
            raise Unsupported("an object without a selection")
        chosen: list[tuple[str, sql.Selected]] = []
        for node in selection_set.selections:
            if not isinstance(node, FieldNode) or node.directives:
                raise Unsupported("fragments and directives")
            key = node.alias.value if node.alias else node.name.value
            if any(key == seen for seen, _ in chosen):
                raise Unsupported("a response key asked for twice")
            chosen.append((key, self.field(parent, node)))
        return tuple(chosen)

    def field(self, parent: GraphQLObjectType, node: FieldNode) -> sql.Selected:
        name = node.name.value
        if name == "__typename":
            return sql.Typename(parent.name)
        if (parent.name, name) not in self.permissions:
            raise Unsupported(f"{parent.name}.{name}")
        self.used.extend(self.permissions[parent.name, name])
        definition = parent.fields[name]
        inner = get_named_type(definition.type)

        def below() -> sql.Selection:
            return self.selection(cast(GraphQLObjectType, inner), node.selection_set)

        match _FIELDS[parent.name, name]:
            case "column":
                return sql.Column(name)
            case "users":
                return sql.Users(self.users_page(definition, node), below())
            case "members":
                return sql.Users(self.members_page(definition, node), below(), of_class=True)
            case "classes":
                kind = self.arguments(definition, node).get("kind")
                return sql.Classes(ClassKind(kind) if kind is not None else None, below())
            case "edges":
                return sql.Edges(below())
            case "node":
                return sql.Node(below())
            case "pageInfo":
                return sql.PageInfo(below())
            case "registrationClass":
                return sql.RegistrationClass(below())
            case "teachingClasses":
                return sql.TeachingClasses(below())
            case "totalCount":
                return sql.TotalCount()
            case "cursor":
                return sql.Cursor()
            case "hasNextPage":
                return sql.HasNextPage()
            case "endCursor":
                return sql.EndCursor()
            case "memberCount":
                return sql.MemberCount()
        raise Unsupported(f"{parent.name}.{name}")

    def arguments(self, definition: GraphQLField, node: FieldNode) -> dict[str, Any]:
        if not self.read_arguments:
            return {}
        return get_argument_values(definition, node, self.variables)

    def users_page(self, definition: GraphQLField, node: FieldNode) -> sql.UsersPage:
        arguments = self.arguments(definition, node)
        given, order = arguments.get("filter") or {}, arguments.get("orderBy") or {}
        class_id = given.get("classId")
        where = UserFilter(
            search=given.get("search"),
            type=_user_type(given.get("type")),
            status=UserStatus(given.get("status") or UserStatus.ACTIVE),
            class_id=lookup_id(class_id) if class_id is not None else None,
        )
        self.reads_deleted |= where.status != UserStatus.ACTIVE
        return sql.users_page(
            where,
            UserOrder(
                field=UserOrderField(order.get("field") or UserOrderField.SURNAME),
                descending=bool(order.get("descending")),
            ),
            arguments.get("first"),
            arguments.get("after"),
        )

    def members_page(self, definition: GraphQLField, node: FieldNode) -> sql.UsersPage:
        arguments = self.arguments(definition, node)
        return sql.users_page(
            UserFilter(type=_user_type(arguments.get("type"))),
            UserOrder(),
            arguments.get("first"),
            arguments.get("after"),
        )


def _unknown_input(field: GraphQLField, arguments: dict[str, str]) -> str | None:
    """The first of a field's arguments, their input fields and the enum values they (or the field) take that
    _ARGUMENTS, _INPUT_FIELDS and _ENUM_VALUES do not name; None when the translator knows them all."""
    for name, argument in field.args.items():
        if arguments.get(name) != str(argument.type):
            return f"the argument {name}: {argument.type}"
        if (unknown := _unknown_type(argument.type)) is not None:
            return unknown
    return _unknown_type(field.type)


def _unknown_type(of: GraphQLInputType | GraphQLOutputType) -> str | None:
    named = get_named_type(of)
    if isinstance(named, GraphQLEnumType):
        values = sorted(set(named.values) - _ENUM_VALUES.get(named.name, frozenset()))
        return f"the value {named.name}.{values[0]}" if values else None
    if isinstance(named, GraphQLInputObjectType):
        fields = _INPUT_FIELDS.get(named.name, {})
        for name, input_field in named.fields.items():
            if fields.get(name) != str(input_field.type):
                return f"the input field {named.name}.{name}: {input_field.type}"
            if (unknown := _unknown_type(input_field.type)) is not None:
                return unknown
    return None


def _user_type(value: Any) -> UserType | None:
    return UserType(value) if value is not None else None


async def _allowed(caller: Caller, permissions: tuple[type[BasePermission], ...]) -> bool:
    """Whether the fields' own permission classes let this caller through (so both paths agree on who may read)."""
    try:
        policies.require_not_provider(caller)
    except policies.Denied:
        return False  # the view turns provisioning tokens away before any field runs
    info = cast(Any, SimpleNamespace(context=SimpleNamespace(caller=caller)))
    for permission in permissions:
        try:
            allowed = permission().has_permission(None, info)
            if inspect.isawaitable(allowed):
                allowed = await allowed
        except GraphQLError:
            return False  # a denial: the view gives it
        except Exception:
            log.warning("a permission class failed on the compiled path; the view answers", exc_info=True)
            return False
        if not allowed:
            return False
    return True


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"", False
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), True


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive channel that gives the body already read, then whatever the client sends next."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
