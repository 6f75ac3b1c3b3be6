"""SCIM filters and PATCH paths (RFC 7644 sections 3.4.2.2 and 3.5.2), parsed into a small tree.

Keywords are case-insensitive; `not` binds tighter than `and`, and `and` tighter than `or`. Attribute paths
are kept as written: what they name is for the resource type to say (see scim/protocol.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from db.text import shown, storable

COMPARISONS = frozenset({"eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le"})
Value: TypeAlias = str | int | float | bool | None

_TOKEN = re.compile(r'\s*(?:(?P<punct>[()\[\]])|(?P<string>"(?:[^"\\]|\\.)*")|(?P<word>[^\s()\[\]"]+))')
_ATTRIBUTE = re.compile(r"[A-Za-z$][\w$:.-]*")
_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?")
_SPACE = re.compile(r"\s*")
# Far beyond what identity services send; what a filter is turned into (SQL, or a match in Python) recurses
# through its tree, so its size is bounded here, before anything else sees it.
MAX_LENGTH = 16_384
MAX_TERMS = 200
MAX_NESTING = 16
MAX_NUMBER_LENGTH = 40


class FilterSyntaxError(ValueError):
    """The text is not a filter (or a path); the message says where and why."""


@dataclass(frozen=True, slots=True)
class Compare:
    path: str
    op: str  # one of COMPARISONS, or "pr" (present)
    value: Value = None


@dataclass(frozen=True, slots=True)
class Logical:
    op: str  # "and" or "or"
    left: Filter
    right: Filter


@dataclass(frozen=True, slots=True)
class Not:
    inner: Filter


@dataclass(frozen=True, slots=True)
class ValuePath:
    """`emails[type eq "work"]`: `filter` is about the sub-attributes of each value of `path`."""

    path: str
    filter: Filter


Filter: TypeAlias = Compare | Logical | Not | ValuePath


@dataclass(frozen=True, slots=True)
class PatchPath:
    """`name.givenName`, `members[value eq "2819c223"]` or `emails[type eq "work"].value`."""

    attribute: str
    filter: Filter | None = None
    sub_attribute: str | None = None


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "punct", "string" or "word"
    text: str
    at: int


def _tokens(text: str) -> list[_Token]:
    if len(text) > MAX_LENGTH:
        raise FilterSyntaxError(f"The text is longer than {MAX_LENGTH} characters.")
    found, at = [], _skip_space(text, 0)
    while at < len(text):
        match = _TOKEN.match(text, at)
        if match is None:
            raise FilterSyntaxError(f"Unexpected character at position {at + 1} (an unterminated string?).")
        kind = match.lastgroup
        assert kind is not None
        found.append(_Token(kind, match.group(kind), match.start(kind)))
        at = _skip_space(text, match.end())
    return found


def _skip_space(text: str, at: int) -> int:
    space = _SPACE.match(text, at)
    assert space is not None, "an empty match always matches"
    return space.end()


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.at = 0
        self.terms = 0
        self.nesting = 0

    def peek(self, offset: int = 0) -> _Token | None:
        index = self.at + offset
        return self.tokens[index] if index < len(self.tokens) else None

    def is_word(self, word: str, offset: int = 0) -> bool:
        token = self.peek(offset)
        return token is not None and token.kind == "word" and token.text.lower() == word

    def is_punct(self, punct: str, offset: int = 0) -> bool:
        token = self.peek(offset)
        return token is not None and token.kind == "punct" and token.text == punct

    def take(self, what: str) -> _Token:
        token = self.peek()
        if token is None:
            raise FilterSyntaxError(f"Expected {what}, but the text ended.")
        self.at += 1
        return token

    def expect(self, punct: str) -> None:
        token = self.take(f"'{punct}'")
        if token.kind != "punct" or token.text != punct:
            raise FilterSyntaxError(
                f"Expected '{punct}' at position {token.at + 1}, found '{shown(token.text)}'."
            )

    def end(self) -> None:
        if (token := self.peek()) is not None:
            raise FilterSyntaxError(f"Unexpected '{shown(token.text)}' at position {token.at + 1}.")

    def disjunction(self) -> Filter:
        left = self.conjunction()
        while self.is_word("or"):
            self.at += 1
            left = Logical("or", left, self.conjunction())
        return left

    def conjunction(self) -> Filter:
        left = self.unary()
        while self.is_word("and"):
            self.at += 1
            left = Logical("and", left, self.unary())
        return left

    def nested(self, close: str) -> Filter:
        """The filter inside brackets just opened, up to `close`."""
        self.nesting += 1
        if self.nesting > MAX_NESTING:
            raise FilterSyntaxError(f"Brackets nest more than {MAX_NESTING} deep.")
        inner = self.disjunction()
        self.expect(close)
        self.nesting -= 1
        return inner

    def unary(self) -> Filter:
        if self.is_word("not") and self.is_punct("(", 1):
            self.at += 2
            return Not(self.nested(")"))
        if self.is_punct("("):
            self.at += 1
            return self.nested(")")
        return self.comparison()

    def attribute(self) -> str:
        token = self.take("an attribute")
        if (
            token.kind != "word"
            or not _ATTRIBUTE.fullmatch(token.text)
            or token.text.lower() in COMPARISONS | {"pr", "and", "or", "not"}
        ):
            raise FilterSyntaxError(
                f"Expected an attribute at position {token.at + 1}, found '{shown(token.text)}'."
            )
        return token.text

    def comparison(self) -> Filter:
        self.terms += 1
        if self.terms > MAX_TERMS:
            raise FilterSyntaxError(f"The text has more than {MAX_TERMS} comparisons.")
        path = self.attribute()
        if self.is_punct("["):
            self.at += 1
            return ValuePath(path, self.nested("]"))
        token = self.take("an operator")
        op = token.text.lower()
        if token.kind != "word" or op not in COMPARISONS | {"pr"}:
            raise FilterSyntaxError(
                f"Unknown operator '{shown(token.text)}' at position {token.at + 1}; "
                "use eq, ne, co, sw, ew, gt, ge, lt, le or pr."
            )
        if op == "pr":
            return Compare(path, op)
        return Compare(path, op, self.value())

    def value(self) -> Value:
        token = self.take("a value")
        if token.kind == "string":
            try:
                text: str = json.loads(token.text)
            except json.JSONDecodeError:
                raise FilterSyntaxError(f"Bad escape in the string at position {token.at + 1}.") from None
            if not storable(text):
                raise FilterSyntaxError(
                    f"The string at position {token.at + 1} holds a NUL character or an unpaired surrogate."
                )
            return text
        word = token.text.lower()
        if token.kind == "word":
            if word in {"true", "false"}:
                return word == "true"
            if word == "null":
                return None
            if len(token.text) > MAX_NUMBER_LENGTH and _NUMBER.fullmatch(token.text):
                raise FilterSyntaxError(
                    f"The number at position {token.at + 1} is longer than {MAX_NUMBER_LENGTH} characters."
                )
            if _NUMBER.fullmatch(token.text):
                return float(token.text) if any(c in word for c in ".e") else int(token.text)
        raise FilterSyntaxError(
            f"Expected a value at position {token.at + 1} (a quoted string, a number, "
            f"true, false or null), found '{shown(token.text)}'."
        )


def parse_filter(text: str) -> Filter:
    parser = _Parser(text)
    if parser.peek() is None:
        raise FilterSyntaxError("The filter is empty.")
    found = parser.disjunction()
    parser.end()
    return found


def parse_path(text: str) -> PatchPath:
    parser = _Parser(text)
    attribute = parser.attribute()
    if not parser.is_punct("["):
        parser.end()
        return PatchPath(attribute)
    parser.at += 1
    inner = parser.nested("]")
    sub_attribute = None
    if (token := parser.peek()) is not None:
        if token.kind != "word" or not token.text.startswith(".") or not _ATTRIBUTE.fullmatch(token.text[1:]):
            raise FilterSyntaxError(f"Unexpected '{shown(token.text)}' at position {token.at + 1}.")
        sub_attribute = token.text[1:]
        parser.at += 1
        parser.end()
    return PatchPath(attribute, inner, sub_attribute)


def _lookup(element: Mapping[str, Any], name: str) -> Any:
    return next((value for key, value in element.items() if key.lower() == name.lower()), None)


def _compare(found: Any, op: str, wanted: Value) -> bool:
    if op == "pr":
        return found not in (None, "", [], {})
    if isinstance(found, str) and isinstance(wanted, str):
        found, wanted = found.casefold(), wanted.casefold()
    elif type(found) is not type(wanted) and not {type(found), type(wanted)} <= {int, float}:
        return op == "ne"
    match op:
        case "eq":
            return bool(found == wanted)
        case "ne":
            return bool(found != wanted)
        case "co" | "sw" | "ew" if isinstance(found, str) and isinstance(wanted, str):
            return {"co": wanted in found, "sw": found.startswith(wanted), "ew": found.endswith(wanted)}[op]
        case "gt" | "ge" | "lt" | "le" if found is not None and wanted is not None:
            return bool(
                {"gt": found > wanted, "ge": found >= wanted, "lt": found < wanted, "le": found <= wanted}[op]
            )
    return False


def matches(condition: Filter, element: Mapping[str, Any]) -> bool:
    """Whether one value of a multi-valued attribute (`{"value": ..., "type": ...}`) meets a value filter."""
    match condition:
        case Compare(path, op, value):
            return _compare(_lookup(element, path), op, value)
        case Logical("and", left, right):
            return matches(left, element) and matches(right, element)
        case Logical(_, left, right):
            return matches(left, element) or matches(right, element)
        case Not(inner):
            return not matches(inner, element)
    return False
