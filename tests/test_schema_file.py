"""schema.graphql is generated from the code; this fails when the two drift apart."""

from pathlib import Path

from gql.schema import build_schema, sdl

SCHEMA_FILE = Path(__file__).parent.parent / "schema.graphql"


def test_schema_graphql_matches_the_code() -> None:
    assert SCHEMA_FILE.read_text() == sdl(build_schema()), "run `make schema` and commit schema.graphql"
