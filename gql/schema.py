"""The Strawberry schema. `python -m gql.schema` prints it as SDL (that is `schema.graphql`)."""

from __future__ import annotations

import strawberry
from graphql import lexicographic_sort_schema, print_schema

from db.schools import get_school
from gql.context import Info
from gql.errors import MaskInternalErrors
from gql.permissions import IsSignedIn
from gql.types import School
from tenants.scope import school_scope


@strawberry.type
class Query:
    @strawberry.field(permission_classes=[IsSignedIn], description="The school of whoever is asking.")
    async def school(self, info: Info) -> School:
        caller = info.context.caller
        assert caller is not None
        async with school_scope(info.context.db, caller.school_id) as session:
            row = await get_school(session, caller.school_id)
            assert row is not None
            return School.from_row(row)


def build_schema() -> strawberry.Schema:
    return strawberry.Schema(query=Query, extensions=[MaskInternalErrors])


def sdl(schema: strawberry.Schema) -> str:
    return print_schema(lexicographic_sort_schema(schema._schema)) + "\n"


if __name__ == "__main__":
    print(sdl(build_schema()), end="")
