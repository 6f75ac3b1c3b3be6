"""The schema is its own documentation: every type, field, argument and enum value says what it is."""

from __future__ import annotations

import json
import re
from pathlib import Path

from graphql import GraphQLSchema, parse, validate

import gql.descriptions
from gql.descriptions import DESCRIPTIONS, coordinates
from gql.schema import build_schema


def served() -> GraphQLSchema:
    return build_schema()._schema


def as_the_modules_describe_it() -> GraphQLSchema:
    """The schema without the DESCRIPTIONS table applied."""
    saved = dict(DESCRIPTIONS)
    gql.descriptions.DESCRIPTIONS.clear()
    try:
        return build_schema()._schema
    finally:
        gql.descriptions.DESCRIPTIONS.update(saved)


def test_every_type_field_argument_and_enum_value_has_a_description() -> None:
    parts = coordinates(served())
    assert len(parts) > 300
    undescribed = sorted(c for c, part in parts.items() if not (part.description or "").strip())
    assert undescribed == []


def test_each_entry_of_the_table_describes_a_part_its_module_leaves_undescribed() -> None:
    in_code = coordinates(as_the_modules_describe_it())
    assert sorted(set(DESCRIPTIONS) - set(in_code)) == []  # names nothing
    assert sorted(c for c in DESCRIPTIONS if in_code[c].description) == []  # described twice


def test_a_deprecation_gives_its_reason() -> None:
    reasons = [getattr(part, "deprecation_reason", None) for part in coordinates(served()).values()]
    assert all(reason.strip() for reason in reasons if reason is not None)


def test_the_readme_examples_are_valid_against_the_schema() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    blocks = re.findall(r"```graphql\n(.*?)```", readme, re.DOTALL)
    blocks += [json.loads(op)["query"] for op in re.findall(r"-F operations='([^']*)'", readme)]
    assert len(blocks) >= 4
    for block in blocks:
        assert validate(served(), parse(block)) == [], block
