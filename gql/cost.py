"""The cost limit: how many objects a query may return, worked out before anything runs.

Each page size (`first` or `last`, or its default when neither is given) is multiplied through the nesting below it and the
results are summed over every field and alias, as GitHub and Shopify count. A list that is not paged
multiplies what is paged below it by a default page size. Both the Strawberry path (QueryCostLimiter) and the compiled read path call `query_cost`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from graphql import (
    DocumentNode,
    ExecutionResult,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLUnionType,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    get_named_type,
    get_nullable_type,
    get_operation_ast,
)
from graphql.execution.values import VariableValues, get_argument_values, get_variable_values
from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

from db.pagination import DEFAULT_PAGE_SIZE

# A page of 500 users with their classes and class sizes passes; 500 users each with 500 class members does not.
MAX_COST = 50_000
# Selections once every fragment spread is expanded: a fragment spread twice by a fragment spread twice...
# grows as 2^n, and every walk over the document (depth, cost) would pay for it.
MAX_EXPANDED_SELECTIONS = 10_000


def expanded_selections(document: DocumentNode) -> int:
    """How many selections the operations hold with their fragments expanded, counted with each fragment's
    size worked out once (so the count itself is linear); it stops counting past the limit."""
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    sizes: dict[str, int] = {}

    def size(selection_set: SelectionSetNode | None, within: frozenset[str]) -> int:
        total = 0
        for node in selection_set.selections if selection_set else ():
            total += 1
            if isinstance(node, FieldNode | InlineFragmentNode):
                total += size(node.selection_set, within)
            elif isinstance(node, FragmentSpreadNode) and node.name.value not in within:
                name = node.name.value
                if name not in sizes:
                    fragment = fragments.get(name)
                    sizes[name] = size(fragment.selection_set, within | {name}) if fragment else 0
                total += sizes[name]
            if total > MAX_EXPANDED_SELECTIONS:
                break
        return total

    total = 0
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode):
            total += size(definition.selection_set, frozenset())
    return total


def too_complex(document: DocumentNode) -> GraphQLError | None:
    if expanded_selections(document) <= MAX_EXPANDED_SELECTIONS:
        return None
    return GraphQLError(
        f"This query has more than {MAX_EXPANDED_SELECTIONS} fields once its fragments are expanded.",
        extensions={"code": "QUERY_TOO_COMPLEX", "limit": MAX_EXPANDED_SELECTIONS},
    )


class FragmentExpansionLimiter(SchemaExtension):
    """Refuses a document whose fragments expand past the limit before validation walks it at all."""

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        if context.graphql_document is not None and (error := too_complex(context.graphql_document)):
            # Errors already there are what Strawberry answers with instead of validating.
            context.pre_execution_errors = [error]
        yield


def query_cost(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation_name: str | None,
    variables: dict[str, Any] | None,
) -> int:
    """The most objects the operation could return; 0 when it cannot run at all (execution says why)."""
    operation = get_operation_ast(document, operation_name)
    if operation is None:
        return 0
    coerced = get_variable_values(schema, operation.variable_definitions or (), variables or {})
    if isinstance(coerced, list):
        return 0
    root = schema.get_root_type(operation.operation)
    if root is None:
        return 0
    fragments = {
        node.name.value: node for node in document.definitions if isinstance(node, FragmentDefinitionNode)
    }
    return _Cost(schema, fragments, coerced).selection(root, operation.selection_set, paged=False)


def too_costly(cost: int) -> GraphQLError | None:
    if cost <= MAX_COST:
        return None
    return GraphQLError(
        f"This query could return {cost} objects; the limit is {MAX_COST}. Ask for smaller "
        "pages (first) or fewer nested lists, or split it into several requests.",
        extensions={"code": "QUERY_TOO_COSTLY", "cost": cost, "limit": MAX_COST},
    )


class QueryCostLimiter(SchemaExtension):
    """Refuses a too costly operation after validation, before any resolver runs."""

    def on_execute(self) -> Iterator[None]:
        context = self.execution_context
        if context.graphql_document is not None:
            cost = query_cost(
                context.schema._schema, context.graphql_document, context.operation_name, context.variables
            )
            if error := too_costly(cost):
                if context.operation_type == OperationType.SUBSCRIPTION:
                    # A subscription ignores a result set here; an error raised here is what it sends instead.
                    raise error
                # A result already there is what Strawberry returns instead of executing.
                context.result = ExecutionResult(data=None, errors=[error])
        yield


class _Cost:
    def __init__(
        self, schema: GraphQLSchema, fragments: dict[str, FragmentDefinitionNode], variables: VariableValues
    ) -> None:
        self.schema, self.fragments, self.variables = schema, fragments, variables
        # A fragment's cost below one object does not depend on where it is spread: worked out once each.
        self.spread: dict[tuple[str, str, bool], int] = {}

    def selection(
        self, parent: GraphQLNamedType, selection_set: SelectionSetNode | None, *, paged: bool
    ) -> int:
        """Objects below one object; `paged` when it is a connection, whose edges its page size counted."""
        total = 0
        for node in selection_set.selections if selection_set else ():
            if isinstance(node, FieldNode):
                fields = parent.fields if isinstance(parent, GraphQLObjectType | GraphQLInterfaceType) else {}
                if node.name.value in fields:
                    total += self.field(fields[node.name.value], node, paged=paged)
            elif isinstance(node, InlineFragmentNode):
                inner = (
                    self.schema.get_type(node.type_condition.name.value) if node.type_condition else parent
                )
                total += self.selection(inner or parent, node.selection_set, paged=paged)
            elif isinstance(node, FragmentSpreadNode) and (fragment := self.fragments.get(node.name.value)):
                key = (node.name.value, parent.name, paged)
                if key not in self.spread:
                    inner = self.schema.get_type(fragment.type_condition.name.value)
                    self.spread[key] = self.selection(inner or parent, fragment.selection_set, paged=paged)
                total += self.spread[key]
        return total

    def field(self, field: GraphQLField, node: FieldNode, *, paged: bool) -> int:
        inner = get_named_type(field.type)
        if not isinstance(inner, GraphQLObjectType | GraphQLInterfaceType | GraphQLUnionType):
            return 0
        is_list = isinstance(get_nullable_type(field.type), GraphQLList)
        if "first" in field.args:
            # A page read from the end (`last`) costs as one read from the start; with both, the larger.
            try:
                given = get_argument_values(field, node, self.variables)
            except GraphQLError:
                given = {}
            sizes = [int(given[name]) for name in ("first", "last") if given.get(name) is not None]
            size = max(max(sizes) if sizes else DEFAULT_PAGE_SIZE, 0)
            return size * (1 + self.selection(inner, node.selection_set, paged=not is_list))
        if is_list and "ids" in field.args:
            # A list of objects asked for by id (`nodes`): one for each id.
            try:
                ids = get_argument_values(field, node, self.variables).get("ids") or ()
            except GraphQLError:
                ids = ()
            return len(ids) * (1 + self.selection(inner, node.selection_set, paged=False))
        if is_list and not paged:
            # Its own items are few (a user's classes, a row's errors); what it multiplies are the pages below it.
            return DEFAULT_PAGE_SIZE * self.selection(inner, node.selection_set, paged=False)
        return self.selection(inner, node.selection_set, paged=False)
