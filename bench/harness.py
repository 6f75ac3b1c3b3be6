"""What every benchmark shares: a throwaway embedded PostgreSQL, migrated, and a place to put results."""

from __future__ import annotations

import json
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from db import migrate
from db.embedded import EmbeddedServer, start_embedded
from db.engine import Database

RESULTS = Path(__file__).parent / "results.json"


@dataclass
class Bench:
    server: EmbeddedServer
    db: Database
    owner: AsyncEngine


@asynccontextmanager
async def bench_database(pool_size: int = 10) -> AsyncIterator[Bench]:
    with tempfile.TemporaryDirectory(prefix="rollcall-bench-") as tmp:
        server = start_embedded(Path(tmp), throwaway=True)
        # Sized as docs/deployment.md says (servers x workers x 2 x ROLLCALL_POOL_SIZE, and more): a benchmark
        # serves several Rollcalls and PgBouncers from this one PostgreSQL at once.
        server.psql("alter system set max_connections = 400")
        server.stop()
        server.start()
        urls = server.urls()
        await migrate.upgrade(urls.owner, urls.app)
        db, owner = Database(urls.app, pool_size=pool_size), create_async_engine(urls.owner)
        try:
            yield Bench(server=server, db=db, owner=owner)
        finally:
            await db.dispose()
            await owner.dispose()
            server.stop()


def save(results: dict[str, Any]) -> None:
    """Merge these figures into bench/results.json (other benchmarks' keys stay)."""
    current = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    current.update(results)
    RESULTS.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")


def table(rows: list[tuple[str, str]]) -> str:
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
