"""The models and the migrations describe one schema: Alembic, comparing the two, finds nothing to do; and
functions that run as their owner search a fixed path, pg_temp last.

Alembic compares tables, columns, types, indexes and keys but not CHECK constraints, so those are compared
by name as PostgreSQL's catalog and the models' own DDL give them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.schema import CreateTable

from db.embedded import EmbeddedServer
from db.migrate import alembic_config
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


SECURITY_DEFINERS = text("""
select p.proname, p.proconfig from pg_proc p join pg_namespace n on n.oid = p.pronamespace
where p.prosecdef and n.nspname = 'public'
""")
CLASS_COLUMNS = text("select column_name from information_schema.columns where table_name = 'classes'")


async def _definers(connection: AsyncConnection) -> dict[str, list[str] | None]:
    return {name: config for name, config in await connection.execute(SECURITY_DEFINERS)}


async def test_every_security_definer_function_searches_pg_temp_last(owner_engine: AsyncEngine) -> None:
    # PostgreSQL searches pg_temp first unless the search_path names it: a function that runs as its owner
    # names it, last, so no temporary table or function of the caller's stands in for the owner's.
    async with owner_engine.connect() as connection:
        definers = await _definers(connection)
    assert "rollcall_caller" in definers
    assert definers == {name: ["search_path=pg_catalog, public, pg_temp"] for name in definers}


async def test_migration_0012_goes_down_and_up_again(
    owner_engine: AsyncEngine, migrated: EmbeddedServer
) -> None:
    config = alembic_config(make_url(migrated.urls().app).username or "")

    def to(revision: str) -> Callable[[Connection], None]:
        def run(connection: Connection) -> None:
            config.attributes["connection"] = connection
            if revision == "head":
                command.upgrade(config, revision)
            else:
                command.downgrade(config, revision)

        return run

    # In one transaction, rolled back: DDL is transactional, so the database ends as it began.
    async with owner_engine.connect() as connection:
        transaction = await connection.begin()
        try:
            await connection.run_sync(to("0011"))
            assert (await _definers(connection))["rollcall_caller"] == ["search_path=pg_catalog, public"]
            assert "provisioned_at" not in set((await connection.execute(CLASS_COLUMNS)).scalars())
            await connection.run_sync(to("head"))
            assert (await _definers(connection))["rollcall_caller"] == [
                "search_path=pg_catalog, public, pg_temp"
            ]
            assert "provisioned_at" in set((await connection.execute(CLASS_COLUMNS)).scalars())
        finally:
            await transaction.rollback()
