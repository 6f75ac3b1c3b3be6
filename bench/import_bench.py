"""Bulk import: rows/s for preview and apply, beside argon2 hashes/s on the bulk hashing threads, and peak memory.

Every imported user gets a password hash, so hashing is the floor: the apply should run at >= 0.8 x the
rate at which this machine hashes many passwords at once (every core but one, the one left to sign-in),
measured in the same run. The apply runs as the server runs it: confirmed (the job RUNNING), applied in the
background, and followed by reading the job as `importJobProgress` does (every 0.25 s) until it has
SUCCEEDED; the apply's time is from the confirmation to the first read that sees the end. The progress writes the follower saw are
counted too (at most four a second).
"""

from __future__ import annotations

import argparse
import asyncio
import time
import tracemalloc
import uuid
from typing import Any

from sqlalchemy.ext.asyncio import async_sessionmaker

from bench.harness import Bench, bench_database, save, table
from db.audit import Actor
from db.imports.jobs import apply_import, get_job, preview_import, start_import
from db.models import ImportStatus
from db.passwords import BULK_HASHING_THREADS, hash_passwords
from db.schools import create_school
from db.scope import school_scope

SERVER_SECRET = bytes(32)  # seals the typed passwords of the benchmark's own previews only
FOLLOW_EVERY = 0.25  # seconds between two reads of the job, as importJobProgress reads it


def roster_file(rows: int) -> bytes:
    lines = ["username,first_name,surname,type,registration_class,teaching_classes,is_admin,password"]
    lines += [
        f"pupil{i:05},First{i},Surname{i},PUPIL,Class {i % 40},Club {i % 13};Choir {i % 5},false,"
        for i in range(rows)
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


async def hashing_floor(count: int) -> float:
    started = time.perf_counter()
    await hash_passwords([f"floor-{i}" for i in range(count)])
    return count / (time.perf_counter() - started)


async def one_import(bench: Bench, rows: int) -> dict[str, Any]:
    async with async_sessionmaker(bench.owner)() as session, session.begin():
        school = await create_school(
            session,
            slug=f"bench-{uuid.uuid4().hex[:8]}",
            name="Bench School",
            admin_username="admin",
            admin_password="bench-admin-password",
        )
    actor = Actor(id=school.admin_id, label="admin")
    data = roster_file(rows)
    tracemalloc.start()
    started = time.perf_counter()
    async with school_scope(bench.db, school.school_id) as session:
        job = await preview_import(
            session,
            school_id=school.school_id,
            actor=actor,
            file_name="bench.csv",
            data=data,
            remove_missing_pupils=False,
            max_bytes=50 * 1024 * 1024,
            max_rows=100_000,
            server_secret=SERVER_SECRET,
        )
    preview_seconds = time.perf_counter() - started
    started = time.perf_counter()
    confirmed = await start_import(
        bench.db, school_id=school.school_id, actor=actor, job_id=job.id, server_secret=SERVER_SECRET
    )
    applying = asyncio.create_task(
        apply_import(bench.db, confirmed.work, actor=actor, server_secret=SERVER_SECRET)
    )
    seen: set[int] = set()
    while True:
        async with school_scope(bench.db, school.school_id) as session:
            now = await get_job(session, school_id=school.school_id, job_id=job.id, with_rows=False)
        assert now is not None
        seen.add(now.processed)
        if now.status in (ImportStatus.SUCCEEDED, ImportStatus.FAILED):
            break
        await asyncio.sleep(FOLLOW_EVERY)
    apply_seconds = time.perf_counter() - started
    assert await applying == ImportStatus.SUCCEEDED
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "rows": rows,
        "preview_rows_per_s": rows / preview_seconds,
        "apply_rows_per_s": rows / apply_seconds,
        "apply_seconds": apply_seconds,
        "progress_values_seen": len(seen),
        "peak_memory_mb": peak / 1e6,
    }


async def main(full: bool) -> dict[str, Any]:
    rows = 10_000 if full else 1_000
    async with bench_database() as bench:
        # The floor is measured before and after the imports, so a busy moment weighs on both sides alike.
        before = await hashing_floor(max(200, rows // 5))
        small = await one_import(bench, rows // 4)
        big = await one_import(bench, rows)
        floor = (before + await hashing_floor(max(200, rows // 5))) / 2
    per_row_kb = (big["peak_memory_mb"] - small["peak_memory_mb"]) * 1000 / (big["rows"] - small["rows"])
    results = {
        "import_rows": rows,
        "import_preview_rows_per_s": round(big["preview_rows_per_s"], 1),
        "import_apply_rows_per_s": round(big["apply_rows_per_s"], 2),
        "argon2_hashes_per_s_bulk_threads": round(floor, 2),
        "import_apply_ratio": round(big["apply_rows_per_s"] / floor, 3),
        "import_apply_seconds": round(big["apply_seconds"], 2),
        "import_progress_values_seen": big["progress_values_seen"],
        "import_peak_memory_mb": round(big["peak_memory_mb"], 1),
        "import_peak_memory_mb_at_quarter_rows": round(small["peak_memory_mb"], 1),
        "import_memory_kb_per_row": round(per_row_kb, 2),
        "bulk_hashing_threads": BULK_HASHING_THREADS,
    }
    print(table([(k, str(v)) for k, v in results.items()]))
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--full", action="store_true")
    save(asyncio.run(main(parser.parse_args().full)))
