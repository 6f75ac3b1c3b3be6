"""Automatic persisted queries, as Apollo's clients speak them: a request may send
`extensions.persistedQuery = {"version": 1, "sha256Hash": "<hex>"}` instead of its query. Known here, the
hash stands for the query; unknown, the answer is `PersistedQueryNotFound` and the client sends the query
with its hash once, which is checked and kept. GET requests of a few hundred bytes then do, and proxies can
cache them; GET only ever runs queries (Strawberry refuses a mutation over GET).

The texts are kept per process, in a bounded LRU: each worker learns a query on its first miss.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from dataclasses import dataclass

from graphql import GraphQLError

CACHE_SIZE = 2048
# A longer text is not kept (it could still run, sent in full every time).
MAX_QUERY_BYTES = 64 * 1024
_HASH = re.compile(r"[0-9a-f]{64}")

NOT_FOUND = "PersistedQueryNotFound"


@dataclass(frozen=True, slots=True)
class Refused:
    """Why a persisted query cannot run: the error Apollo's clients read."""

    error: GraphQLError


def not_found() -> GraphQLError:
    # Apollo's clients look for this very message and code, then send the query in full.
    return GraphQLError(NOT_FOUND, extensions={"code": "PERSISTED_QUERY_NOT_FOUND"})


def _bad(message: str) -> GraphQLError:
    return GraphQLError(message, extensions={"code": "BAD_REQUEST"})


def sha256_hex(query: str) -> str:
    return hashlib.sha256(query.encode()).hexdigest()


class PersistedQueries:
    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self.texts: OrderedDict[str, str] = OrderedDict()

    def resolve(self, query: str | None, extensions: dict[str, object] | None) -> str | None | Refused:
        """The query to run: the one sent, or the one its hash stands for; or why there is none."""
        persisted = (extensions or {}).get("persistedQuery")
        if persisted is None:
            return query
        if not isinstance(persisted, dict) or persisted.get("version") != 1:
            return Refused(_bad('extensions.persistedQuery must be {"version": 1, "sha256Hash": "<hex>"}.'))
        digest = persisted.get("sha256Hash")
        if not isinstance(digest, str) or not _HASH.fullmatch(digest):
            return Refused(_bad("extensions.persistedQuery.sha256Hash must be 64 lowercase hex digits."))
        if query is None:
            known = self.texts.get(digest)
            if known is None:
                return Refused(not_found())
            self.texts.move_to_end(digest)
            return known
        if sha256_hex(query) != digest:
            return Refused(_bad("The query's SHA-256 hash is not extensions.persistedQuery.sha256Hash."))
        if len(query.encode()) <= MAX_QUERY_BYTES:
            self.texts[digest] = query
            self.texts.move_to_end(digest)
            if len(self.texts) > self.size:
                self.texts.popitem(last=False)
        return query
