"""Apply the Alembic migrations as the owner role, granting the application role what it needs."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection
from sqlalchemy.engine import make_url

from db.engine import owner_engine

HERE = Path(__file__).parent


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
            await connection.run_sync(run)
    finally:
        await engine.dispose()
