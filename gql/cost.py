"""The cost limit: how many objects a query may return, worked out before anything runs.

Each page size (`first`, or its default when not given) is multiplied through the nesting below it and the
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
    SelectionSetNode,
    get_named_type,
    get_nullable_type,
    get_operation_ast,
)
from graphql.execution.values import VariableValues, get_argument_values, get_variable_values
from strawberry.extensions import SchemaExtension

from db.pagination import DEFAULT_PAGE_SIZE

# A page of 500 users with their classes and class sizes passes; 500 users each with 500 class members does not.
MAX_COST = 50_000


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
                # A result already there is what Strawberry returns instead of executing.
                context.result = ExecutionResult(data=None, errors=[error])
        yield


class _Cost:
    def __init__(
        self, schema: GraphQLSchema, fragments: dict[str, FragmentDefinitionNode], variables: VariableValues
    ) -> None:
        self.schema, self.fragments, self.variables = schema, fragments, variables

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
                inner = self.schema.get_type(fragment.type_condition.name.value)
                total += self.selection(inner or parent, fragment.selection_set, paged=paged)
        return total

    def field(self, field: GraphQLField, node: FieldNode, *, paged: bool) -> int:
        inner = get_named_type(field.type)
        if not isinstance(inner, GraphQLObjectType | GraphQLInterfaceType | GraphQLUnionType):
            return 0
        is_list = isinstance(get_nullable_type(field.type), GraphQLList)
        if "first" in field.args:
            try:
                first = get_argument_values(field, node, self.variables).get("first")
            except GraphQLError:
                first = None
            size = max(DEFAULT_PAGE_SIZE if first is None else int(first), 0)
            return size * (1 + self.selection(inner, node.selection_set, paged=not is_list))
        if is_list and not paged:
            # Its own items are few (a user's classes, a row's errors); what it multiplies are the pages below it.
            return DEFAULT_PAGE_SIZE * self.selection(inner, node.selection_set, paged=False)
        return self.selection(inner, node.selection_set, paged=False)
