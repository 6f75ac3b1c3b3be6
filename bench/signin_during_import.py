"""Sign-in while a large import hashes: how long one school's login takes while another school's import of
generated passwords is being confirmed on the same worker, beside the same login on an idle worker.

`python -m bench.signin_during_import [--full] [--rows N]`, also in `make bench`. Sign-in should cost about the same during an import as
without one (one argon2 check on the threads kept for it), and every login should end while the import is
still running.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from bench.harness import Bench, bench_database, save, table
from db.audit import Actor
from db.imports.jobs import confirm_import, preview_import
from db.models import ImportJob
from db.schools import create_school
from db.scope import school_scope
from db.sessions import SessionPolicy
from db.signin import sign_in

SECRET = bytes(32)  # seals the benchmark's own previews and signs its own device cookies only
POLICY = SessionPolicy(idle=timedelta(hours=1), lifetime=timedelta(hours=12))
PASSWORD = "bench-admin-password"
LOGINS = 5


async def new_school(bench: Bench) -> tuple[uuid.UUID, uuid.UUID, str]:
    slug = f"bench-{uuid.uuid4().hex[:8]}"
    async with async_sessionmaker(bench.owner)() as session, session.begin():
        school = await create_school(
            session, slug=slug, name="Bench School", admin_username="admin", admin_password=PASSWORD
        )
    return school.school_id, school.admin_id, slug


async def timed_login(bench: Bench, slug: str) -> float:
    started = time.perf_counter()
    await sign_in(
        bench.db,
        school=slug,
        username="admin",
        password=PASSWORD,
        client="192.0.2.1",
        policy=POLICY,
        secret=SECRET,
    )
    return time.perf_counter() - started


async def processed(bench: Bench, school_id: uuid.UUID, job_id: uuid.UUID) -> int:
    async with school_scope(bench.db, school_id) as session:
        count: int = (
            await session.execute(select(ImportJob.processed).where(ImportJob.id == job_id))
        ).scalar_one()
    return count


async def main(full: bool, rows: int | None = None) -> dict[str, Any]:
    rows = rows or (10_000 if full else 1_000)
    async with bench_database() as bench:
        importing_id, admin_id, _ = await new_school(bench)
        _, _, signing_in = await new_school(bench)
        idle = [await timed_login(bench, signing_in) for _ in range(LOGINS)]
        data = (
            "username,first_name,surname,type,registration_class\r\n"
            + "".join(f"pupil{i:05},First{i},Last{i},PUPIL,Class {i % 40}\r\n" for i in range(rows))
        ).encode()
        actor = Actor(id=admin_id, label="admin")
        async with school_scope(bench.db, importing_id) as session:
            job = await preview_import(
                session,
                school_id=importing_id,
                actor=actor,
                file_name="bench.csv",
                data=data,
                remove_missing_pupils=False,
                max_bytes=50 * 1024 * 1024,
                max_rows=100_000,
                server_secret=SECRET,
            )
        started = time.perf_counter()
        task = asyncio.create_task(
            confirm_import(bench.db, school_id=importing_id, actor=actor, job_id=job.id, server_secret=SECRET)
        )
        while True:  # until hashing is under way
            if await processed(bench, importing_id, job.id) > 0:
                break
            await asyncio.sleep(0.05)
        during: list[float] = []
        ended_while_importing = 0
        for _ in range(LOGINS):
            during.append(await timed_login(bench, signing_in))
            ended_while_importing += not task.done()
        await task
        import_seconds = time.perf_counter() - started
    results = {
        "signin_during_import_rows": rows,
        "signin_idle_median_s": round(statistics.median(idle), 3),
        "signin_during_import_median_s": round(statistics.median(during), 3),
        "signin_during_import_max_s": round(max(during), 3),
        "signin_during_import_ended_while_importing": f"{ended_while_importing}/{LOGINS}",
        "signin_during_import_import_s": round(import_seconds, 1),
    }
    print(table([(k, str(v)) for k, v in results.items()]))
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--rows", type=int, help="rows to import (1,000 quick, 10,000 full)")
    arguments = parser.parse_args()
    save(asyncio.run(main(arguments.full, arguments.rows)))
