"""Relay connections: `edges { cursor node }` and `pageInfo` (both ways); each concrete one adds its `totalCount`."""

from __future__ import annotations

from typing import Generic, TypeVar

import strawberry

from db.errors import DomainError
from gql.errors import client_error

Node = TypeVar("Node")


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None
    has_previous_page: bool = strawberry.field(
        description="Whether more come before this page: with `last`, whether there were more than `last`; "
        "with `after`, true (the page starts after an item); otherwise false."
    )
    start_cursor: str | None = strawberry.field(
        description="The cursor of the page's first item: pass it as `before` (with `last`) for the page "
        "before, where the list takes `before`."
    )


@strawberry.type
class Edge(Generic[Node]):
    cursor: str
    node: Node


@strawberry.type
class Connection(Generic[Node]):
    edges: list[Edge[Node]]
    page_info: PageInfo


def bad_page_request(error: DomainError) -> Exception:
    """A bad `first` or `after` is the caller's mistake in the query: a top-level BAD_REQUEST."""
    return client_error(error.problems[0].message, "BAD_REQUEST")
