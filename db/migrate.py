"""Apply the Alembic migrations as the owner role, granting the application role what it needs."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url

from db.engine import owner_engine

HERE = Path(__file__).parent
_ONE_AT_A_TIME = text("select pg_advisory_xact_lock(hashtext('rollcall migrations'))")


def alembic_config(app_role: str) -> Config:
    config = Config(HERE / "alembic.ini")
    config.set_main_option("script_location", str(HERE / "migrations"))
    config.attributes["app_role"] = app_role
    return config


async def upgrade(owner_url: str, app_url: str) -> None:
    app_role = make_url(app_url).username
    if not app_role:
        raise ValueError("the application database URL must name its role")
    config = alembic_config(app_role)

    def run(connection: Connection) -> None:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")

    engine = owner_engine(owner_url)
    try:
        async with engine.begin() as connection:
            # Servers starting together each apply the migrations: one at a time, the later ones finding
            # nothing left to do. The lock is the transaction's, so it holds behind a pooler too.
            await connection.execute(_ONE_AT_A_TIME)
            await connection.run_sync(run)
    finally:
        await engine.dispose()
