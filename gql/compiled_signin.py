"""The compiled sign-in: a plain `login` mutation answered in front of Strawberry, with the same answer.

A sign-in's own work is argon2 and two SQL statements (db/signin.py); around it, Strawberry's execution of the
one field cost as much again. This path takes a document made of one `login` field (its arguments string
literals or variables, its selection the payload's plain fields: `token`, `errors { ... }`, `user { ... }`'s
columns, `__typename`, under any aliases), parsed and validated once with every rule and limit Strawberry has
(the plan is cached), and answers it with the same JSON, headers and cookies as the resolver in gql/signin.py:
the same `db.signin.sign_in`, the session cookie, the device cookie, no token in the body for a browser, the
same metrics. Each value is written by the schema's own type for it (its scalar's or enum's serialize).

Anything else goes to the view untouched: another field or a fragment, a directive, a field with a resolver or
a permission class (`user { email }`), a variable that does not fit its type, a request with a bearer token,
a session cookie or a query string, a body the view would decode otherwise. A failure inside the sign-in
(the database gone) is answered as Strawberry answers it: `data` null, the masked error at the field, the
error logged by the schema's own logging.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, cast

from graphql import (
    FieldNode,
    GraphQLError,
    GraphQLLeafType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLSchema,
    NamedTypeNode,
    NonNullTypeNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    StringValueNode,
    VariableNode,
    get_operation_ast,
    located_error,
    parse,
)
from graphql.execution.values import get_argument_values, get_variable_values
from graphql.validation import ASTValidationRule
from starlette.requests import Request
from starlette.responses import Response
from strawberry.asgi import GraphQL
from strawberry.schema.schema import validate_document

from db.engine import Database
from db.errors import DomainError
from db.signin import sign_in
from gql.context import set_device_cookie, set_session_cookie, token_for_body
from gql.cost import query_cost, too_complex, too_costly
from gql.payloads import user_errors
from gql.roster import User
from web.http_auth import DEVICE_COOKIE, SESSION_COOKIE, bearer_secret
from web.settings import Settings
from web.telemetry import count_refused_sign_in, observe_operation

log = logging.getLogger("rollcall.compiled")

PLAN_CACHE_SIZE = 64
# Longer documents are not a plain sign-in.
MAX_QUERY_BYTES = 2048
# The payload's objects this path writes, with the masked error's message (gql.errors.MaskInternalErrors).
_OBJECTS = frozenset({"LoginPayload", "UserError", "User"})
_MASKED = "Internal server error."


@dataclass(frozen=True, slots=True)
class Leaf:
    key: str
    attribute: str | None  # None: __typename
    type: GraphQLOutputType


@dataclass(frozen=True, slots=True)
class Branch:
    key: str
    attribute: str
    nullable: bool
    listed: bool
    selection: tuple[Leaf | Branch, ...]


@dataclass(frozen=True, slots=True)
class SignInPlan:
    operation: OperationDefinitionNode
    name: str | None
    field: FieldNode
    key: str
    selection: tuple[Leaf | Branch, ...]
    # When every argument is a string written in the document or a `String!` variable with no default: each
    # argument's string, or the variable it is read from (coerced as graphql-core coerces a String!: a string,
    # nothing else); otherwise None, and graphql-core coerces them.
    strings: dict[str, str | Variable] | None


class Unsupported(Exception):
    """Not a plain sign-in: the view answers it."""


class CompiledSignIn:
    """Plans and answers plain sign-ins for gql.compiled.CompiledReads, which hands it every decoded request
    body first."""

    def __init__(
        self,
        view: GraphQL[Any, Any],
        db: Database,
        settings: Settings,
        schema: GraphQLSchema,
        rules: tuple[type[ASTValidationRule], ...],
        max_tokens: int | None,
    ) -> None:
        self.view, self.db, self.settings = view, db, settings
        self.schema, self.rules, self.max_tokens = schema, rules, max_tokens
        self.plans: OrderedDict[tuple[str, str | None], SignInPlan | None] = OrderedDict()
        mutation = schema.mutation_type
        self.login = mutation.fields.get("login") if mutation is not None else None

    def plan(self, query: str, operation_name: str | None) -> SignInPlan | None:
        """The plan for a document, from a bounded cache; None when it is not a plain sign-in."""
        if self.login is None or len(query) > MAX_QUERY_BYTES or "login" not in query:
            return None
        key = (query, operation_name)
        if key in self.plans:
            self.plans.move_to_end(key)
            return self.plans[key]
        try:
            plan = self._compile(query, operation_name)
        except (Unsupported, GraphQLError):
            plan = None
        self.plans[key] = plan
        if len(self.plans) > PLAN_CACHE_SIZE:
            self.plans.popitem(last=False)
        return plan

    def _compile(self, query: str, operation_name: str | None) -> SignInPlan | None:
        document = parse(query, max_tokens=self.max_tokens)
        if too_complex(document) or validate_document(self.schema, document, self.rules):
            return None
        operation = get_operation_ast(document, operation_name)
        if (
            operation is None
            or operation.operation != OperationType.MUTATION
            or operation.directives
            or len(document.definitions) != 1
            or too_costly(query_cost(self.schema, document, operation_name, None))
        ):
            return None
        fields = _fields(operation.selection_set)
        if len(fields) != 1:
            return None
        (field,) = fields
        if field.name.value != "login" or field.directives or field.selection_set is None:
            return None
        payload = _object(self.schema, "LoginPayload")
        return SignInPlan(
            operation=operation,
            name=operation.name.value if operation.name else None,
            field=field,
            key=field.alias.value if field.alias else "login",
            selection=self._selection(payload, field.selection_set),
            strings=_strings(operation, field),
        )

    def _selection(
        self, parent: GraphQLObjectType, selection_set: SelectionSetNode
    ) -> tuple[Leaf | Branch, ...]:
        found: list[Leaf | Branch] = []
        keys: set[str] = set()
        for node in _fields(selection_set):
            key = node.alias.value if node.alias else node.name.value
            if node.directives or node.arguments or key in keys:
                raise Unsupported(key)  # the same key twice is merged by GraphQL: left to it
            keys.add(key)
            if node.name.value == "__typename":
                found.append(Leaf(key, None, parent))
                continue
            definition = parent.fields[node.name.value]
            strawberry_field = definition.extensions.get("strawberry-definition")
            if (
                strawberry_field is None
                or strawberry_field.base_resolver is not None
                or strawberry_field.permission_classes
                or strawberry_field.extensions
            ):
                raise Unsupported(key)  # a resolver or a permission class: Strawberry runs it
            attribute: str = strawberry_field.python_name
            of, nullable, listed = definition.type, True, False
            if isinstance(of, GraphQLNonNull):
                of, nullable = of.of_type, False
            if isinstance(of, GraphQLList):
                of, listed = of.of_type, True
                if isinstance(of, GraphQLNonNull):
                    of = of.of_type
            if isinstance(of, GraphQLObjectType):
                if of.name not in _OBJECTS or node.selection_set is None:
                    raise Unsupported(key)
                found.append(
                    Branch(key, attribute, nullable, listed, self._selection(of, node.selection_set))
                )
            elif isinstance(of, GraphQLLeafType) and not isinstance(of, GraphQLList):
                found.append(Leaf(key, attribute, definition.type))
            else:
                raise Unsupported(key)
        return tuple(found)

    async def answer(
        self, request: Request, plan: SignInPlan, variables: dict[str, Any] | None
    ) -> Response | None:
        """The sign-in's answer as the view gives it, or None (before anything is counted) for the view."""
        if (
            request.scope.get("query_string")
            or bearer_secret(request)
            or request.headers.get("authorization")
            or SESSION_COOKIE in request.cookies
        ):
            return None  # the view finds the caller, refuses a token in the URL, asks for the CSRF header
        arguments = self._arguments(plan, variables or {})
        if arguments is None:
            return None  # the view says what is wrong with the variables
        sub_response = await self.view.get_sub_response(request)
        started = time.perf_counter()
        try:
            payload = await self._sign_in(request, sub_response, arguments)
            data: dict[str, Any] | None = {plan.key: _write(plan.selection, payload)}
            response_data: dict[str, Any] = {"data": data}
        except Exception as failure:  # noqa: BLE001 (logged below, with its traceback, as Strawberry logs it)
            error = located_error(failure, [plan.field], [plan.key])
            # Logged as the schema logs an error of its execution (gql.errors.log_errors).
            self.view.schema.process_errors(
                [error],
                cast(
                    Any,
                    SimpleNamespace(
                        context=SimpleNamespace(request_id=request.state.request_id),
                        operation_name=plan.name,
                    ),
                ),
            )
            masked = GraphQLError(
                _MASKED, nodes=error.nodes, source=error.source, positions=error.positions, path=error.path
            )
            response_data = {"data": None, "errors": [masked.formatted]}
        observe_operation(plan.name, "mutation", time.perf_counter() - started)
        return self.view.create_response(response_data=cast(Any, response_data), sub_response=sub_response)

    def _arguments(self, plan: SignInPlan, variables: dict[str, Any]) -> dict[str, Any] | None:
        """The field's arguments, or None when the variables do not fit their types."""
        if plan.strings is not None:
            found: dict[str, Any] = {}
            for name, given in plan.strings.items():
                value = variables.get(given.name) if isinstance(given, Variable) else given
                if not isinstance(value, str):
                    return None
                found[name] = value
            return found
        coerced = get_variable_values(self.schema, plan.operation.variable_definitions or (), variables)
        if isinstance(coerced, list):
            return None
        assert self.login is not None
        try:
            return get_argument_values(self.login, plan.field, coerced)
        except GraphQLError:
            return None  # e.g. a nullable variable, given null, for a String! argument: the view says so

    async def _sign_in(self, request: Request, response: Response, arguments: dict[str, Any]) -> _Payload:
        """What gql.signin.AuthMutations.login does, for a request with no caller."""
        try:
            signed_in = await sign_in(
                self.db,
                school=arguments["school"],
                username=arguments["username"],
                password=arguments["password"],
                client=request.client.host if request.client else "",
                policy=self.settings.session_policy,
                secret=self.settings.login_code_secret,
                device_cookie=request.cookies.get(DEVICE_COOKIE),
            )
        except DomainError as error:
            count_refused_sign_in({p.code for p in error.problems}, "password")
            return _Payload(token=None, user=None, errors=user_errors(error))
        set_session_cookie(response, request, self.settings, signed_in.token)
        if signed_in.device_cookie is not None:
            set_device_cookie(response, request, signed_in.device_cookie)
        return _Payload(
            token=token_for_body(request, signed_in.token), user=User.from_row(signed_in.user), errors=[]
        )


@dataclass(frozen=True, slots=True)
class _Payload:
    """The LoginPayload's plain fields, as gql.signin.LoginPayload has them."""

    token: str | None
    user: User | None
    errors: list[Any]


def _strings(operation: OperationDefinitionNode, field: FieldNode) -> dict[str, str | Variable] | None:
    plain = {
        definition.variable.name.value
        for definition in operation.variable_definitions or ()
        if definition.default_value is None
        and isinstance(definition.type, NonNullTypeNode)
        and isinstance(definition.type.type, NamedTypeNode)
        and definition.type.type.name.value == "String"
    }
    found: dict[str, str | Variable] = {}
    for argument in field.arguments or ():
        value = argument.value
        if isinstance(value, StringValueNode):
            found[argument.name.value] = value.value
        elif isinstance(value, VariableNode) and value.name.value in plain:
            found[argument.name.value] = Variable(value.name.value)
        else:
            return None
    return found


@dataclass(frozen=True, slots=True)
class Variable:
    name: str


def _fields(selection_set: SelectionSetNode) -> list[FieldNode]:
    nodes = list(selection_set.selections)
    if not nodes or not all(isinstance(node, FieldNode) for node in nodes):
        raise Unsupported("fragments")
    return cast(list[FieldNode], nodes)


def _object(schema: GraphQLSchema, name: str) -> GraphQLObjectType:
    found = schema.get_type(name)
    if not isinstance(found, GraphQLObjectType):
        raise Unsupported(name)
    return found


def _write(selection: tuple[Leaf | Branch, ...], source: Any) -> dict[str, Any]:
    """The object's answer, key by key in the document's order, each value serialized by its schema type."""
    answer: dict[str, Any] = {}
    for item in selection:
        if isinstance(item, Leaf):
            if item.attribute is None:
                answer[item.key] = cast(GraphQLObjectType, item.type).name
            else:
                answer[item.key] = _leaf(item.type, getattr(source, item.attribute))
            continue
        value = getattr(source, item.attribute)
        if value is None:
            answer[item.key] = None
        elif item.listed:
            answer[item.key] = [_write(item.selection, one) for one in value]
        else:
            answer[item.key] = _write(item.selection, value)
    return answer


def _leaf(of: GraphQLOutputType, value: Any) -> Any:
    if isinstance(of, GraphQLNonNull):
        of = of.of_type
    if value is None:
        return None
    if isinstance(of, GraphQLList):
        return [_leaf(of.of_type, one) for one in value]
    return cast(GraphQLLeafType, of).serialize(value)
