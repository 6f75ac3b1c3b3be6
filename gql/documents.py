"""Parsed and validated documents, kept per schema: a client sends the same few query texts again and again,
and parsing and validating one costs more than the rest of a small request.

A document's validation depends only on its text and on the schema's validation rules, which are fixed when
the schema is built, so the result (the errors, or none) is kept by the query text. Only short texts are
kept, and only so many (least recently used go first): unique texts cost what they always did.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Any, TypeVar

from graphql import DocumentNode, GraphQLError
from strawberry.extensions import SchemaExtension

K = TypeVar("K")
V = TypeVar("V")

MAX_DOCUMENTS = 256
MAX_QUERY_CHARS = 16 * 1024


class DocumentCache:
    """One schema's parsed documents and their validation errors, by query text."""

    def __init__(self, size: int = MAX_DOCUMENTS) -> None:
        self.size = size
        self.parsed: OrderedDict[tuple[str, tuple[tuple[str, Any], ...]], DocumentNode] = OrderedDict()
        self.validated: OrderedDict[str, tuple[GraphQLError, ...]] = OrderedDict()

    def get(self, store: OrderedDict[K, V], key: K) -> V | None:
        found = store.get(key)
        if found is not None:
            store.move_to_end(key)
        return found

    def put(self, store: OrderedDict[K, V], key: K, value: V) -> None:
        store[key] = value
        if len(store) > self.size:
            store.popitem(last=False)


class CachedDocuments(SchemaExtension):
    """Parses and validates each query text once (see the module). Placed after every extension that decides
    about a document before validation (FragmentExpansionLimiter): a document one of them refused is neither
    looked up nor kept."""

    def __init__(self, cache: DocumentCache) -> None:
        self.cache = cache

    def _query(self) -> str | None:
        query = self.execution_context.query
        return query if query is not None and len(query) <= MAX_QUERY_CHARS else None

    def on_parse(self) -> Iterator[None]:
        context, query = self.execution_context, self._query()
        if query is None or context.graphql_document is not None:
            yield
            return
        key = (query, tuple(sorted(context.parse_options.items())))
        if (document := self.cache.get(self.cache.parsed, key)) is not None:
            context.graphql_document = document
            yield
            return
        yield
        if context.graphql_document is not None and context.pre_execution_errors is None:
            self.cache.put(self.cache.parsed, key, context.graphql_document)

    def on_validate(self) -> Iterator[None]:
        context, query = self.execution_context, self._query()
        if query is None or context.pre_execution_errors is not None or context.graphql_document is None:
            yield  # refused before validation, or nothing to validate: decided without this cache
            return
        if (errors := self.cache.get(self.cache.validated, query)) is not None:
            context.pre_execution_errors = list(errors)
            yield
            return
        yield
        if context.pre_execution_errors is not None:
            self.cache.put(self.cache.validated, query, tuple(context.pre_execution_errors))
