"""The compiled read path: roster queries answered by ONE SQL statement whose JSON PostgreSQL builds.

Every POST to /graphql passes through here first. A query made of fields this module knows (the users
table and classes, see gql.compiled_sql) is parsed and validated as Strawberry would (same limits), translated
into one statement, and run in the caller's school scope; the text PostgreSQL returns is the response body.
Fragments (named and inline, on the type they are spread in), @skip and @include, and the same response key
asked for more than once are collected as GraphQL's CollectFields collects them, so the statement's keys
come in the order Strawberry gives them. `me` and `school` are read by the statement too; one whose
selection it cannot read (`me { email }`) is answered by Strawberry itself, its resolvers, permission
classes and errors as always, and merged in document order. Anything else (mutations, other fields, fragments on an interface or union, other directives, bad
arguments or cursors, a class's `members` read from a cursor (which names its class), callers the fields' own permission classes turn away, any failure at all) goes to the
Strawberry view untouched, which answers it exactly as it would have without this module.
"""

from __future__ import annotations

import copy
import inspect
import json
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, cast

import strawberry
from cross_web import HTTPException
from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLEnumType,
    GraphQLError,
    GraphQLField,
    GraphQLIncludeDirective,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLSchema,
    GraphQLSkipDirective,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionNode,
    SelectionSetNode,
    get_named_type,
    get_operation_ast,
    parse,
)
from graphql.execution.values import (
    VariableValues,
    get_argument_values,
    get_directive_values,
    get_variable_values,
)
from graphql.validation import ASTValidationRule, specified_rules
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send
from strawberry.asgi import GraphQL
from strawberry.extensions import AddValidationRules, MaskErrors, MaxTokensLimiter, SchemaExtension
from strawberry.permission import BasePermission, PermissionExtension
from strawberry.schema.schema import validate_document
from strawberry.types.graphql import OperationType as StrawberryOperationType

from db.engine import Database, retry_if_disconnected
from db.errors import DomainError
from db.models import ClassKind, UserType
from db.sessions import SessionPolicy
from db.users import ORDERINGS, UserFilter, UserOrder, UserOrderField, UserStatus
from gql import compiled_sql as sql
from gql.compiled_signin import CompiledSignIn
from gql.cost import FragmentExpansionLimiter, QueryCostLimiter, query_cost, too_complex, too_costly
from gql.documents import CachedDocuments
from gql.ids import lookup_id
from tenants import policies
from tenants.callers import Caller, Person, resolve_caller
from web.graphql_http import response_media_type
from web.http_auth import refuse_secrets_in_url, session_secret
from web.settings import Settings
from web.telemetry import OperationMetrics, observe_operation

log = logging.getLogger("rollcall.compiled")

PLAN_CACHE_SIZE = 256
# Longer documents are not roster reads; they go to Strawberry without being parsed (or cached) here.
MAX_QUERY_BYTES = 16 * 1024

# (type, field) -> what it becomes. Columns are the plain fields of a user or a class.
_FIELDS: dict[tuple[str, str], str] = {
    ("Query", "users"): "users",
    ("Query", "classes"): "classes",
    ("Query", "me"): "me",
    ("Query", "school"): "school",
    ("UserConnection", "edges"): "edges",
    ("UserConnection", "pageInfo"): "pageInfo",
    ("UserConnection", "totalCount"): "totalCount",
    ("UserEdge", "cursor"): "cursor",
    ("UserEdge", "node"): "node",
    ("PageInfo", "hasNextPage"): "hasNextPage",
    ("PageInfo", "endCursor"): "endCursor",
    ("PageInfo", "hasPreviousPage"): "hasPreviousPage",
    ("PageInfo", "startCursor"): "startCursor",
    ("User", "registrationClass"): "registrationClass",
    ("User", "teachingClasses"): "teachingClasses",
    ("SchoolClass", "memberCount"): "memberCount",
    ("SchoolClass", "members"): "members",
    **{("User", name): "column" for name in sql.USER_COLUMNS},
    **{("SchoolClass", name): "column" for name in sql.CLASS_COLUMNS},
    **{("School", name): "column" for name in sql.SCHOOL_COLUMNS},
}
# What the translator reads besides fields: each field's arguments, each input type's fields (by name, with
# their types as the schema prints them) and each enum's values. At start-up a field whose arguments, input
# fields or enum values (its own type's, too) go beyond these is left to Strawberry, so a schema that grows
# past this path is answered by Strawberry, never by a statement that ignores the new part. Add a name here
# only once the translator reads it.
_ARGUMENTS: dict[tuple[str, str], dict[str, str]] = {
    ("Query", "users"): {
        "filter": "UserFilter",
        "orderBy": "UserOrder",
        "first": "Int",
        "after": "String",
        "last": "Int",
        "before": "String",
    },
    ("Query", "classes"): {"kind": "ClassKind"},
    ("SchoolClass", "members"): {
        "type": "UserType",
        "first": "Int",
        "after": "String",
        "last": "Int",
        "before": "String",
    },
}
_INPUT_FIELDS: dict[str, dict[str, str]] = {
    "UserFilter": {
        "search": "String",
        "type": "UserType",
        "classId": "ID",
        "status": "UserStatus!",
        "updatedSince": "DateTime",
        "notInClassId": "ID",
        "hasRegistrationClass": "Boolean",
    },
    "UserOrder": {"field": "UserOrderField!", "descending": "Boolean!"},
}
_ENUM_VALUES: dict[str, frozenset[str]] = {
    "UserType": frozenset({"PUPIL", "TEACHER"}),
    "ClassKind": frozenset({"REGISTRATION", "TEACHING"}),
    "UserStatus": frozenset({"ACTIVE", "DELETED", "ALL"}),
    # Every ordering db.users.ORDERINGS defines: the statement renders its sort keys whatever they are.
    "UserOrderField": frozenset(ORDERINGS),
    "Provider": frozenset({"MANUAL", "C2K", "HWB", "GLOW"}),
}
# Small root fields that, when the statement cannot answer them (say, `me { email }`), Strawberry answers
# beside the compiled ones in the same request, through their own resolvers and permission classes; their
# answers are merged into `data` in document order. Each is run after the statement, for the same caller.
BESIDE = frozenset({"me", "school"})
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


# The document of the root fields answered beside a compiled read, for the execution under way in this task.
_preset: ContextVar[DocumentNode | None] = ContextVar("rollcall_beside_document", default=None)


class _PresetDocument(SchemaExtension):
    """Gives Strawberry the root fields beside a compiled read as a document already parsed (its nodes are the
    request's own, so errors point at the request's lines and columns) and already validated (as part of the
    whole document, with every rule and limit)."""

    def on_operation(self) -> Iterator[None]:
        document = _preset.get()
        if document is not None:
            self.execution_context.graphql_document = document
            self.execution_context.pre_execution_errors = []  # validated: nothing to add
        yield


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
    fragments: dict[str, FragmentDefinitionNode]
    # With no variables and root fields of BESIDE asked for: the root, collected once.
    fixed_root: Root | None


class CompiledReads:
    """ASGI app in front of the Strawberry view at /graphql."""

    def __init__(
        self, view: GraphQL[Any, Any], db: Database, policy: SessionPolicy, settings: Settings | None = None
    ) -> None:
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
        # With the settings, plain sign-ins are answered here too (gql.compiled_signin), validated alike.
        self.sign_in = (
            CompiledSignIn(view, db, settings, self.graphql_schema, self.rules, self.max_tokens)
            if settings is not None and self.enabled
            else None
        )
        # The same schema for the fields beside a compiled read, with the document preset; the operation is
        # timed as a whole here, not once more by Strawberry.
        self.beside_schema = copy.copy(schema)
        self.beside_schema.extensions = (
            *(extension for extension in schema.extensions if extension is not OperationMetrics),
            _PresetDocument,
        )

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
        if self.sign_in is not None and (signing_in := self.sign_in.plan(query, operation_name)) is not None:
            return await self.sign_in.answer(request, signing_in, variables)
        plan = self.plan(query, operation_name)
        if plan is None or too_costly(
            query_cost(self.graphql_schema, plan.document, operation_name, variables)
        ):
            return None  # the view refuses a too costly query, with the same error as always
        try:
            refuse_secrets_in_url(request)
            secret = session_secret(request)
            # The school is always $1, filled in once the caller is known.
            statement, params, reads_deleted, root = self._statement(plan, variables or {})
        except (HTTPException, Unsupported, DomainError, GraphQLError, ValueError):
            return None
        if not secret:
            return None
        started = time.perf_counter()

        # A statement that reads no table (`{ __typename }`) takes no school, and so no transaction either: the
        # lookup and the statement commit by themselves, two round trips instead of four.
        reads_tables = "$1" in statement

        async def read() -> str | None:
            # One checkout and, for a read of tables, one transaction: the caller is found (and their school
            # bound) by one statement, then the read runs in the same transaction.
            engine = self.db.engine if reads_tables else self.db.autocommit
            async with engine.connect() as connection, connection.begin():
                caller = await resolve_caller(connection, secret, self.policy)
                if caller is None or not await _allowed(caller, plan.permissions):
                    return None
                if reads_deleted and not policies.may_list_deleted_users(caller):
                    return None  # the view refuses it
                school = (caller.school_id,) if reads_tables else ()
                user_id = caller.user_id if isinstance(caller, Person) else None
                given = (user_id if param is sql.CALLER else param for param in params)
                result = await connection.exec_driver_sql(statement, (*school, *given))
                return cast(str, result.scalar_one())

        try:
            text = await retry_if_disconnected(read)
        except Exception:
            # Whatever went wrong, the general path answers as it always would (an error there is masked).
            log.warning("the compiled read failed; the general path answers instead", exc_info=True)
            return None
        if text is None:
            return None
        if root is not None and root.beside:
            try:
                response = await self._beside(request, plan, root, variables, text)
            except Exception:
                log.warning(
                    "the fields beside a compiled read failed; the general path answers", exc_info=True
                )
                return None
        else:
            # A compiled read always ran: 200, in the media type the client asked for.
            response = Response(text.encode(), media_type=response_media_type(request.headers.get("accept")))
        if response is not None:
            observe_operation(plan.name, "query", time.perf_counter() - started)
        return response

    async def _beside(
        self, request: Request, plan: Plan, root: Root, variables: dict[str, Any] | None, text: str
    ) -> Response | None:
        """The compiled answer with the root fields beside it answered by Strawberry, as the view answers them:
        its context (the caller found anew), its execution of just those fields (their resolvers, permission
        classes, masking and logging of errors), its response (headers and cookies the resolvers set)."""
        operation = OperationDefinitionNode(
            operation=OperationType.QUERY,
            name=plan.operation.name,
            variable_definitions=plan.operation.variable_definitions,
            directives=(),
            selection_set=SelectionSetNode(selections=root.beside),
            loc=plan.operation.loc,
        )
        document = DocumentNode(definitions=(operation, *plan.fragments.values()), loc=plan.document.loc)
        try:
            sub_response = await self.view.get_sub_response(request)
            context = await self.view.get_context(request, response=sub_response)
        except HTTPException:
            return None  # the view refuses the request as it would have anyway
        token = _preset.set(document)
        try:
            result = await self.beside_schema.execute(
                None,
                variable_values=variables,
                context_value=context,
                operation_name=plan.name,
                allowed_operation_types=(StrawberryOperationType.QUERY,),
            )
        finally:
            _preset.reset(token)
            # The caller's own transaction ends with these fields, as the view's run ends it.
            await context.finish()
        response_data = await self.view.process_result(request, result)
        if result.errors:
            self.view._handle_errors(result.errors, response_data)
        data = response_data["data"]
        if data is not None:
            compiled = json.loads(text)["data"]
            response_data["data"] = {
                key: compiled[key] if key in compiled else data[key] for key in root.keys
            }
        return self.view.create_response(response_data=response_data, sub_response=sub_response)

    def _statement(self, plan: Plan, variables: dict[str, Any]) -> tuple[str, list[Any], bool, Root | None]:
        """The statement, its parameters but the school ($1), whether it lists deleted users, and the root
        (unless the statement is fixed)."""
        if plan.fixed is not None:
            return (*plan.fixed, plan.fixed_root)
        coerced = get_variable_values(
            self.graphql_schema, plan.operation.variable_definitions or (), variables
        )
        if isinstance(coerced, list):
            raise Unsupported("the variables do not fit their definitions")
        translator = _Translator(self.graphql_schema, self.permissions, coerced, plan.fragments)
        root = translator.root(plan.operation.selection_set)
        statement, params = sql.statement(uuid.UUID(int=0), root.selection)
        return statement, params[1:], translator.reads_deleted, root

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
        fragments = {
            definition.name.value: definition
            for definition in document.definitions
            if isinstance(definition, FragmentDefinitionNode)
        }
        try:
            # Every branch, whatever the variables: each field must be known, and something must be compiled.
            checked = _Translator(self.graphql_schema, self.permissions, None, fragments, used).root(
                operation.selection_set
            )
            if not checked.selection:
                return None  # nothing here for this path: the view answers the whole of it
            fixed, fixed_root = None, None
            if not operation.variable_definitions:
                translator = _Translator(self.graphql_schema, self.permissions, None, fragments, fixed=True)
                root = translator.root(operation.selection_set)
                # The school is always $1: kept apart, it is filled in per request.
                statement, params = sql.statement(uuid.UUID(int=0), root.selection)
                fixed = (statement, params[1:], translator.reads_deleted)
                fixed_root = root if root.beside else None
        except (Unsupported, DomainError, GraphQLError, ValueError):
            return None
        name = operation.name.value if operation.name else None
        return Plan(
            document=document,
            operation=operation,
            name=name,
            permissions=tuple(dict.fromkeys(used)),
            fixed=fixed,
            fragments=fragments,
            fixed_root=fixed_root,
        )


@dataclass(frozen=True, slots=True)
class Root:
    """An operation's root, collected: every response key in order, the compiled ones' selection, and the
    field nodes of the ones Strawberry answers beside them (BESIDE)."""

    keys: tuple[str, ...]
    selection: sql.Selection
    beside: tuple[FieldNode, ...]


class _Translator:
    """Turns a validated selection into gql.compiled_sql's tree. With no variables and not `fixed`, it only checks
    that every field is one this path knows (the arguments are read per request, and every branch a @skip or
    @include could leave out is checked)."""

    def __init__(
        self,
        schema: GraphQLSchema,
        permissions: dict[tuple[str, str], tuple[type[BasePermission], ...]],
        variables: VariableValues | None,
        fragments: dict[str, FragmentDefinitionNode],
        used: list[type[BasePermission]] | None = None,
        *,
        fixed: bool = False,
    ) -> None:
        self.schema, self.permissions, self.variables = schema, permissions, variables
        self.fragments = fragments
        self.used = used if used is not None else []
        self.read_arguments = fixed or variables is not None
        self.reads_deleted = False  # a users page with status DELETED or ALL

    def root(self, selection_set: SelectionSetNode) -> Root:
        query = self.schema.query_type
        assert query is not None, "the schema has queries"
        chosen: list[tuple[str, sql.Selected]] = []
        beside: list[FieldNode] = []
        collected = self.collect(query, [selection_set])
        for key, nodes in collected.items():
            if nodes[0].name.value not in BESIDE:
                chosen.append((key, self.field(query, nodes)))
                continue
            asked = len(self.used)
            try:
                chosen.append((key, self.field(query, nodes)))
            except Unsupported:
                del self.used[asked:]  # Strawberry applies its permission classes
                beside += nodes
        return Root(keys=tuple(collected), selection=tuple(chosen), beside=tuple(beside))

    def selection(
        self, parent: GraphQLObjectType, selection_sets: list[SelectionSetNode | None]
    ) -> sql.Selection:
        return tuple(
            (key, self.field(parent, nodes)) for key, nodes in self.collect(parent, selection_sets).items()
        )

    def collect(
        self, parent: GraphQLObjectType, selection_sets: list[SelectionSetNode | None]
    ) -> dict[str, list[FieldNode]]:
        """GraphQL's CollectFields over the selection sets of one response key's field nodes: each response key
        once, in the order it first appears, with every field node that asks for it (their selections are
        merged below). Fragments count where they apply, @skip and @include where they say so."""
        found: dict[str, list[FieldNode]] = {}
        visited: set[str] = set()

        def walk(selection_set: SelectionSetNode) -> None:
            for node in selection_set.selections:
                if not self.included(node):
                    continue
                if isinstance(node, FieldNode):
                    found.setdefault(node.alias.value if node.alias else node.name.value, []).append(node)
                elif isinstance(node, InlineFragmentNode):
                    if node.type_condition is not None:
                        self.applies(parent, node.type_condition.name.value)
                    walk(node.selection_set)
                elif isinstance(node, FragmentSpreadNode):
                    if getattr(node, "arguments", None):
                        raise Unsupported("a fragment with arguments")
                    name = node.name.value
                    if name in visited:
                        continue
                    visited.add(name)
                    fragment = self.fragments.get(name)
                    if fragment is None or fragment.directives or fragment.variable_definitions:
                        raise Unsupported(f"the fragment {name}")
                    self.applies(parent, fragment.type_condition.name.value)
                    walk(fragment.selection_set)
                else:
                    raise Unsupported(type(node).__name__)

        for selection_set in selection_sets:
            if selection_set is None:
                raise Unsupported("an object without a selection")
            walk(selection_set)
        return found

    def applies(self, parent: GraphQLObjectType, condition: str) -> None:
        """A fragment on the type it is spread in applies; one on an interface or a union is left to Strawberry
        (validation has already refused any other)."""
        if condition != parent.name:
            raise Unsupported(f"a fragment on {condition} in {parent.name}")

    def included(self, node: SelectionNode) -> bool:
        """Whether @skip and @include leave the selection in (while checking, every selection is in)."""
        directives = node.directives or ()
        if not directives:
            return True
        if any(directive.name.value not in ("skip", "include") for directive in directives):
            raise Unsupported("a directive other than @skip and @include")
        if not self.read_arguments:
            return True  # every branch is checked
        skip = get_directive_values(GraphQLSkipDirective, node, self.variables)
        if skip is not None and skip["if"] is True:
            return False
        include = get_directive_values(GraphQLIncludeDirective, node, self.variables)
        return not (include is not None and include["if"] is False)

    def field(self, parent: GraphQLObjectType, nodes: list[FieldNode]) -> sql.Selected:
        """One response key; its field nodes have the same name and arguments (validation says so)."""
        node = nodes[0]
        name = node.name.value
        if name == "__typename":
            return sql.Typename(parent.name)
        if (parent.name, name) not in self.permissions:
            raise Unsupported(f"{parent.name}.{name}")
        self.used.extend(self.permissions[parent.name, name])
        definition = parent.fields[name]
        inner = get_named_type(definition.type)

        def below() -> sql.Selection:
            return self.selection(cast(GraphQLObjectType, inner), [each.selection_set for each in nodes])

        match _FIELDS[parent.name, name]:
            case "column":
                return sql.Column(name)
            case "users":
                return sql.Users(self.users_page(definition, node), below())
            case "members":
                return sql.Users(self.members_page(definition, node), below(), of_class=True)
            case "me":
                return sql.Me(below())
            case "school":
                return sql.School(below())
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
            case "hasPreviousPage":
                return sql.HasPreviousPage()
            case "startCursor":
                return sql.StartCursor()
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
        class_id, not_in_class_id = given.get("classId"), given.get("notInClassId")
        where = UserFilter(
            search=given.get("search"),
            type=_user_type(given.get("type")),
            status=UserStatus(given.get("status") or UserStatus.ACTIVE),
            class_id=lookup_id(class_id) if class_id is not None else None,
            updated_since=given.get("updatedSince"),
            not_in_class_id=lookup_id(not_in_class_id) if not_in_class_id is not None else None,
            has_registration_class=given.get("hasRegistrationClass"),
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
            arguments.get("last"),
            arguments.get("before"),
        )

    def members_page(self, definition: GraphQLField, node: FieldNode) -> sql.UsersPage:
        arguments = self.arguments(definition, node)
        if arguments.get("after") is not None or arguments.get("before") is not None:
            # A roster's cursor names its class, which only the statement knows: Strawberry checks it.
            raise Unsupported("a class roster read from a cursor")
        return sql.users_page(
            UserFilter(type=_user_type(arguments.get("type"))),
            UserOrder(),
            arguments.get("first"),
            None,
            arguments.get("last"),
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
