"""OneRoster 1.2 filters (section 3.4.1 of the REST binding): `field op 'value'`, joined by ` AND ` and ` OR `.

The operators are `=`, `!=`, `>`, `>=`, `<`, `<=` and `~` (contains). A value is quoted in single quotes (a
quote inside it is written twice). `AND` binds tighter than `OR`; there are no brackets. Field names are kept
as written: what they name is for the resource to say (oneroster/resources.py). A parsed filter is a list of
alternatives (OR), each a list of comparisons (AND).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from db.text import shown

OPERATORS = ("!=", ">=", "<=", "=", ">", "<", "~")
# Far beyond what consumers send; bounded before anything else sees the text.
MAX_LENGTH = 4096
MAX_TERMS = 50

_FIELD = re.compile(r"[A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z][A-Za-z0-9_]*)*")
_OPERATOR = re.compile(r"!=|>=|<=|=|>|<|~")
_LOGICAL = re.compile(r"\s+(AND|OR)\s+", re.IGNORECASE)
_SPACE = re.compile(r"\s*")


class FilterSyntaxError(ValueError):
    """The text is not a filter; the message says where and why."""


@dataclass(frozen=True, slots=True)
class Comparison:
    field: str
    op: str  # one of OPERATORS
    value: str


# (a AND b) OR (c): alternatives, each a conjunction of comparisons.
Filter = tuple[tuple[Comparison, ...], ...]


def parse_filter(text: str) -> Filter:
    if len(text) > MAX_LENGTH:
        raise FilterSyntaxError(f"The filter is longer than {MAX_LENGTH} characters.")
    if "\x00" in text:
        raise FilterSyntaxError("The filter contains a NUL character.")
    alternatives: list[tuple[Comparison, ...]] = []
    current: list[Comparison] = []
    at, terms = _skip(text, 0), 0
    if at == len(text):
        raise FilterSyntaxError("The filter is empty.")
    while True:
        comparison, at = _comparison(text, at)
        terms += 1
        if terms > MAX_TERMS:
            raise FilterSyntaxError(f"The filter has more than {MAX_TERMS} comparisons.")
        current.append(comparison)
        if _skip(text, at) == len(text):
            break
        logical = _LOGICAL.match(text, at)
        if logical is None:
            raise FilterSyntaxError(
                f"Expected ' AND ' or ' OR ' at position {at + 1}, found '{shown(text[at : at + 20])}'."
            )
        at = logical.end()
        if logical.group(1).upper() == "OR":
            alternatives.append(tuple(current))
            current = []
    alternatives.append(tuple(current))
    return tuple(alternatives)


def _skip(text: str, at: int) -> int:
    space = _SPACE.match(text, at)
    assert space is not None, "an empty match always matches"
    return space.end()


def _comparison(text: str, at: int) -> tuple[Comparison, int]:
    at = _skip(text, at)
    field = _FIELD.match(text, at)
    if field is None:
        raise FilterSyntaxError(f"Expected a field name at position {at + 1}.")
    at = _skip(text, field.end())
    operator = _OPERATOR.match(text, at)
    if operator is None:
        raise FilterSyntaxError(
            f"Expected an operator (=, !=, >, >=, <, <= or ~) at position {at + 1} after "
            f"'{shown(field.group())}'."
        )
    at = _skip(text, operator.end())
    if at >= len(text) or text[at] != "'":
        raise FilterSyntaxError(f"Expected a value in single quotes at position {at + 1}.")
    value, at = _quoted(text, at)
    return Comparison(field.group(), operator.group(), value), at


def _quoted(text: str, at: int) -> tuple[str, int]:
    """The value of the quoted string starting at `at`, and where it ends."""
    parts, at = [], at + 1
    while True:
        end = text.find("'", at)
        if end < 0:
            raise FilterSyntaxError("A value's closing quote is missing.")
        parts.append(text[at:end])
        if text.startswith("''", end):
            parts.append("'")
            at = end + 2
            continue
        return "".join(parts), end + 1


def render(found: Filter) -> str:
    """The text of a parsed filter; parsing it again gives the same filter."""
    return " OR ".join(
        " AND ".join(f"{c.field}{c.op}'{c.value.replace(chr(39), chr(39) * 2)}'" for c in conjunction)
        for conjunction in found
    )
