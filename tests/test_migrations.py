"""The models and the migrations describe one schema: Alembic, comparing the two, finds nothing to do.

Alembic compares tables, columns, types, indexes and keys but not CHECK constraints, so those are compared
by name as PostgreSQL's catalog and the models' own DDL give them.
"""

from __future__ import annotations

import re
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.schema import CreateTable

from db.models import Base

CHECKS = text("""
select c.relname || '.' || k.conname from pg_constraint k join pg_class c on c.oid = k.conrelid
join pg_namespace n on n.oid = c.relnamespace
where k.contype = 'c' and n.nspname = 'public' and c.relname <> 'alembic_version'
""")


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


def _model_checks() -> set[str]:
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    return {
        f"{table.name}.{name}"
        for table in Base.metadata.sorted_tables
        for name in re.findall(r"CONSTRAINT (\w+) CHECK", str(CreateTable(table).compile(dialect=dialect)))
    }


async def test_the_models_match_the_migrated_database(owner_engine: AsyncEngine) -> None:
    async with owner_engine.connect() as connection:
        differences = await connection.run_sync(_differences)
    assert differences == [], "\n".join(map(str, differences))


async def test_the_models_have_the_migrated_databases_check_constraints(owner_engine: AsyncEngine) -> None:
    async with owner_engine.connect() as connection:
        migrated = set((await connection.execute(CHECKS)).scalars())
    assert _model_checks() == migrated
