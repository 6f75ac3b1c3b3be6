"""Settings, read once from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from db.engine import POOLERS
from db.login_cards.codes import load_or_create_secret, secret_from_env
from db.sessions import SessionPolicy
from web.background import DEFAULT_GRACE_SECONDS


def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def _seconds(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


def parse_public_url(value: str | None) -> str | None:
    """ROLLCALL_PUBLIC_URL: where clients reach this server, e.g. https://rollcall.example.org."""
    if not value:
        return None
    url = value.strip().rstrip("/")
    scheme, _, rest = url.partition("://")
    if scheme not in {"http", "https"} or not rest or any(c in rest for c in "?#@ "):
        raise ValueError(
            "ROLLCALL_PUBLIC_URL must be an http or https URL, like https://rollcall.example.org"
        )
    return url


def parse_pooler(value: str | None) -> str | None:
    """ROLLCALL_DB_POOLER: the transaction-mode connection pooler between the server and PostgreSQL, if any."""
    name = (value or "").strip().lower()
    if name in {"", "none"}:
        return None
    if name not in POOLERS:
        raise ValueError(
            f"ROLLCALL_DB_POOLER must be {' or '.join(POOLERS)} (behind a transaction-mode pooler), or unset"
        )
    return name


def _login_code_secret(data_dir: Path) -> bytes:
    """The key that signs QR login codes: ROLLCALL_SECRET_KEY (hex), else one kept in the data directory."""
    if value := os.environ.get("ROLLCALL_SECRET_KEY"):
        try:
            return secret_from_env(value)
        except ValueError as error:
            raise ValueError(f"ROLLCALL_SECRET_KEY: {error}") from None
    data_dir.mkdir(parents=True, exist_ok=True)
    return load_or_create_secret(data_dir / "login-code-secret")


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
    # Kept out of the database, so a dump cannot mint login cards; never shown in a repr.
    login_code_secret: bytes = field(repr=False)
    import_max_bytes: int = 5 * 1024 * 1024
    import_max_rows: int = 20_000
    json_logs: bool = False
    # Proxies whose X-Forwarded-For is believed: the client address that sign-in throttling counts.
    trusted_proxies: tuple[str, ...] = ()
    # Roster reads answered by one SQL statement (gql/compiled.py), and plain sign-ins in front of Strawberry
    # (gql/compiled_signin.py); off, every query and mutation goes through Strawberry.
    compiled_reads: bool = True
    # /metrics: off altogether, or only for `Authorization: Bearer <metrics_token>`.
    metrics: bool = True
    metrics_token: str | None = field(default=None, repr=False)
    # The URL clients use to reach this server (behind a proxy); links such as SCIM's `location` start with
    # it. Unset, they start with the address the server itself listens on, never with a client's Host header.
    public_url: str | None = None
    # A transaction-mode pooler (PgBouncer) between the application role's connections and PostgreSQL.
    db_pooler: str | None = None
    # At shutdown, how long background work under way (an import's apply) may run on before it is cancelled.
    shutdown_grace_seconds: float = DEFAULT_GRACE_SECONDS

    @property
    def session_policy(self) -> SessionPolicy:
        """How long a session lasts, idle and at most."""
        return SessionPolicy(
            idle=timedelta(minutes=self.session_idle_minutes),
            lifetime=timedelta(hours=self.session_lifetime_hours),
        )

    @classmethod
    def from_env(cls) -> Settings:
        production = os.environ.get("ROLLCALL_ENV", "development").lower() == "production"
        data_dir = Path(os.environ.get("ROLLCALL_DATA_DIR") or ".rollcall").resolve()
        return cls(
            data_dir=data_dir,
            database_url=os.environ.get("DATABASE_URL") or None,
            app_database_url=os.environ.get("APP_DATABASE_URL") or None,
            production=production,
            graphiql=_flag("ROLLCALL_GRAPHIQL", not production),
            introspection=_flag("ROLLCALL_INTROSPECTION", not production),
            pool_size=_int("ROLLCALL_POOL_SIZE", 10),
            session_idle_minutes=_int("ROLLCALL_SESSION_IDLE_MINUTES", 60),
            session_lifetime_hours=_int("ROLLCALL_SESSION_LIFETIME_HOURS", 12),
            login_code_secret=_login_code_secret(data_dir),
            import_max_bytes=_int("ROLLCALL_IMPORT_MAX_BYTES", 5 * 1024 * 1024),
            import_max_rows=_int("ROLLCALL_IMPORT_MAX_ROWS", 20_000),
            json_logs=os.environ.get("ROLLCALL_LOG_FORMAT", "json" if production else "text").lower()
            == "json",
            trusted_proxies=tuple(
                p.strip() for p in os.environ.get("ROLLCALL_TRUSTED_PROXIES", "").split(",") if p.strip()
            ),
            compiled_reads=_flag("ROLLCALL_COMPILED_READS", True),
            metrics=_flag("ROLLCALL_METRICS", True),
            metrics_token=os.environ.get("ROLLCALL_METRICS_TOKEN") or None,
            public_url=parse_public_url(os.environ.get("ROLLCALL_PUBLIC_URL")),
            db_pooler=parse_pooler(os.environ.get("ROLLCALL_DB_POOLER")),
            shutdown_grace_seconds=_seconds("ROLLCALL_SHUTDOWN_GRACE_SECONDS", DEFAULT_GRACE_SECONDS),
        )
