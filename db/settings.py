"""Settings, read once from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


@dataclass(frozen=True, slots=True)
class Settings:
    data_dir: Path
    # Owner role: runs migrations and the CLI's school commands. None means the embedded server.
    database_url: str | None
    # Application role: what the server connects as (not superuser, not owner, no BYPASSRLS).
    app_database_url: str | None
    production: bool
    graphiql: bool
    introspection: bool
    pool_size: int
    session_idle_minutes: int
    session_lifetime_hours: int

    @classmethod
    def from_env(cls) -> Settings:
        production = os.environ.get("ROLLCALL_ENV", "development").lower() == "production"
        return cls(
            data_dir=Path(os.environ.get("ROLLCALL_DATA_DIR") or ".rollcall").resolve(),
            database_url=os.environ.get("DATABASE_URL") or None,
            app_database_url=os.environ.get("APP_DATABASE_URL") or None,
            production=production,
            graphiql=_flag("ROLLCALL_GRAPHIQL", not production),
            introspection=_flag("ROLLCALL_INTROSPECTION", not production),
            pool_size=_int("ROLLCALL_POOL_SIZE", 10),
            session_idle_minutes=_int("ROLLCALL_SESSION_IDLE_MINUTES", 60),
            session_lifetime_hours=_int("ROLLCALL_SESSION_LIFETIME_HOURS", 12),
        )
