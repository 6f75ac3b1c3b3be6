"""The `rollcall` command: serve, migrate, create schools, issue provisioning tokens, seed the demo."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from db import demo, migrate
from db.api_tokens import ApiScope, create_api_token
from db.audit import Actor
from db.embedded import DatabaseUrls, database_urls
from db.engine import owner_transaction
from db.errors import DomainError, ErrorCode, Problem
from db.maintenance import fail_stale_imports, forget_expired_import_passwords, parse_age, purge
from db.models import Provider
from db.schools import create_school, school_id_for_slug
from db.scope import bind_school
from web.settings import Settings
from web.telemetry import configure_logging


def _urls(settings: Settings) -> DatabaseUrls:
    try:
        return database_urls(settings.database_url, settings.app_database_url, settings.data_dir)
    except ValueError as error:
        raise SystemExit(f"rollcall: {error}") from None


async def _school_create(urls: DatabaseUrls, args: argparse.Namespace) -> None:
    async with owner_transaction(urls.owner) as session:
        school = await create_school(
            session,
            slug=args.slug,
            name=args.name,
            provider=Provider(args.provider),
            admin_username=args.admin_username,
            admin_password=args.admin_password,
            admin_first_name=args.admin_first_name,
            admin_surname=args.admin_surname,
        )
    print(school.school_id)


async def _provisioning_token(urls: DatabaseUrls, args: argparse.Namespace) -> None:
    async with owner_transaction(urls.owner) as session:
        school_id = await school_id_for_slug(session, args.slug)
        if school_id is None:
            raise DomainError(Problem(ErrorCode.NOT_FOUND, f"No school has the slug '{args.slug}'.", "slug"))
        await bind_school(session, school_id)
        secret, _ = await create_api_token(
            session,
            school_id=school_id,
            actor=Actor(id=None, label="rollcall school provisioning-token"),
            name=args.name,
            scopes=[ApiScope.PROVISION],
        )
    print(secret)


async def _demo(urls: DatabaseUrls, settings: Settings) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    async with owner_transaction(urls.owner) as session:
        admin = await demo.seed_demo(session, settings.data_dir / "demo-admin-password")
    print(f"Demo school: {admin.school}")
    print(f"Admin username: {admin.username}")
    print(f"Admin password: {admin.password or '(set when the demo was first seeded; not kept here)'}")


def _serve(urls: DatabaseUrls, settings: Settings, args: argparse.Namespace) -> None:
    import uvicorn

    # Workers build the app from the environment (web.app.app_from_env), so hand them both URLs.
    os.environ["DATABASE_URL"] = urls.owner
    os.environ["APP_DATABASE_URL"] = urls.app
    metrics_dir: Path | None = None
    if args.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Each worker counts into files here, and /metrics adds them up, whichever worker answers. The
        # directory is this server's own (by process id), so two servers sharing a data directory each count
        # their own requests.
        metrics_dir = _own_metrics_dir(settings.data_dir / "metrics")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    configure_logging(json_lines=settings.json_logs)
    failed = asyncio.run(fail_stale_imports(urls.owner))
    if failed:
        logging.getLogger("rollcall").warning(
            "marked %d import jobs FAILED: their worker stopped mid-apply", failed
        )
    if forgotten := asyncio.run(forget_expired_import_passwords(urls.owner)):
        logging.getLogger("rollcall").info(
            "removed the typed passwords of %d expired import previews", forgotten
        )
    print(f"Rollcall: GraphQL at http://{args.host}:{args.port}/graphql", flush=True)
    try:
        uvicorn.run(
            "web.app:app_from_env",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_config=None,
            access_log=False,
            proxy_headers=bool(settings.trusted_proxies),
            forwarded_allow_ips=",".join(settings.trusted_proxies) or None,
        )
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _own_metrics_dir(root: Path) -> Path:
    """A fresh metrics directory for this server under `root`, after removing those of servers that have
    stopped (and the files of the older layout, one directory for all)."""
    root.mkdir(parents=True, exist_ok=True)
    for entry in root.iterdir():
        if entry.is_dir() and entry.name.isdigit() and _running(int(entry.name)):
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    own = root / str(os.getpid())
    own.mkdir()
    return own


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _purge(urls: DatabaseUrls, args: argparse.Namespace) -> None:
    try:
        older_than = parse_age(args.older_than) if args.older_than else None
    except ValueError as error:
        raise SystemExit(f"rollcall: {error}") from None
    for school in asyncio.run(purge(urls.owner, older_than=older_than)):
        print(
            f"{school.school_slug}: {school.users} users purged, "
            f"typed passwords removed from {school.import_passwords} expired import previews, "
            f"{school.changes} change feed records removed"
        )


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="rollcall", description="Rollcall: school user management over GraphQL."
    )
    commands = root.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="apply migrations and serve GraphQL")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)

    database = commands.add_parser("db", help="database commands")
    database.add_subparsers(dest="db_command", required=True).add_parser("upgrade", help="apply migrations")

    school = commands.add_parser("school", help="school commands")
    school_commands = school.add_subparsers(dest="school_command", required=True)
    create = school_commands.add_parser(
        "create", help="create a school and its first admin; prints the school's id"
    )
    create.add_argument("--slug", required=True)
    create.add_argument("--name", required=True)
    create.add_argument("--provider", choices=[p.value for p in Provider], default=Provider.MANUAL.value)
    create.add_argument("--admin-username", required=True)
    create.add_argument("--admin-password", required=True)
    create.add_argument("--admin-first-name", default="")
    create.add_argument("--admin-surname", default="")

    token = school_commands.add_parser(
        "provisioning-token",
        help="issue a token for the school's provider to use SCIM at /scim/v2; prints it once",
    )
    token.add_argument("--slug", required=True)
    token.add_argument("--name", default="Provisioning")

    commands.add_parser("demo", help="seed the demo school (idempotent)")

    purge = commands.add_parser(
        "purge", help="hard-delete users deleted longer ago than the retention period"
    )
    purge.add_argument("--older-than", metavar="AGE", help="e.g. 30d; by default each school's own setting")
    return root


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except ValueError as error:
        raise SystemExit(f"rollcall: {error}") from None
    urls = _urls(settings)
    asyncio.run(migrate.upgrade(urls.owner, urls.app))
    try:
        match args.command:
            case "serve":
                _serve(urls, settings, args)
            case "db":
                print("Database is up to date.")
            case "school" if args.school_command == "provisioning-token":
                asyncio.run(_provisioning_token(urls, args))
            case "school":
                asyncio.run(_school_create(urls, args))
            case "demo":
                asyncio.run(_demo(urls, settings))
            case "purge":
                _purge(urls, args)
    except DomainError as error:
        print(f"rollcall: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
