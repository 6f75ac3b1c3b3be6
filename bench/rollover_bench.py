"""School-year rollover: planning and applying a rollover of a whole school, and its peak memory.

A 7-year primary school (P1..P7, plus teaching groups every pupil is in two of) moves up: P1..P6 renamed, P7
leaves, teaching groups emptied, every card rotated. The apply is one transaction; the target is under 2 s
for 1,500 pupils on this machine, with memory flat in the number of pupils (the work is set-based SQL, so the
peak at a third of the pupils should be about the same). The tables are not analysed after the school is
made, as right after a big import: the rollover's statements must stay fast on statistics that are stale.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import tracemalloc
import uuid
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker

from bench.harness import Bench, bench_database, save, table
from db.audit import Actor
from db.models import TeachingAction
from db.names import class_name_key
from db.rollover.jobs import confirm_rollover, plan_rollover_job
from db.rollover.plan import RolloverAction, Step
from db.schools import create_school
from db.scope import school_scope

YEARS = 7
GROUPS = 20


async def school_of(bench: Bench, pupils: int) -> tuple[uuid.UUID, Actor, dict[str, uuid.UUID]]:
    """A school with `pupils` pupils spread over P1..P7, each in two of the teaching groups."""
    async with async_sessionmaker(bench.owner)() as session, session.begin():
        school = await create_school(
            session,
            slug=f"bench-{uuid.uuid4().hex[:8]}",
            name="Bench School",
            admin_username="admin",
            admin_password="bench-admin-password",
        )
    school_id = school.school_id
    classes = {f"P{year}": uuid.uuid4() for year in range(1, YEARS + 1)}
    groups = [uuid.uuid4() for _ in range(GROUPS)]
    async with school_scope(bench.db, school_id) as session:
        for name, class_id in classes.items():
            await session.execute(
                text(
                    "INSERT INTO classes (school_id, id, name, name_key, kind) VALUES (:s, :c, :n, :k, 'REGISTRATION')"
                ),
                {"s": school_id, "c": class_id, "n": name, "k": class_name_key(name)},
            )
        for index, class_id in enumerate(groups):
            await session.execute(
                text(
                    "INSERT INTO classes (school_id, id, name, name_key, kind) VALUES (:s, :c, :n, :k, 'TEACHING')"
                ),
                {"s": school_id, "c": class_id, "n": f"group {index}", "k": f"group {index}"},
            )
        await session.execute(
            text("""
            INSERT INTO users (school_id, id, username, type, password_hash)
            SELECT :s, gen_random_uuid(), 'pupil' || g, 'PUPIL', 'not-a-hash' FROM generate_series(1, :n) g
            """),
            {"s": school_id, "n": pupils},
        )
        await session.execute(
            text("""
            INSERT INTO class_memberships (school_id, class_id, user_id, kind)
            SELECT u.school_id, (CAST(:years AS uuid[]))[1 + (row_number() OVER (ORDER BY u.id)) % 7], u.id,
                   'REGISTRATION'
            FROM users u WHERE u.school_id = :s AND u.type = 'PUPIL'
            """),
            {"s": school_id, "years": [str(c) for c in classes.values()]},
        )
        for offset in (0, 7):
            await session.execute(
                text("""
                INSERT INTO class_memberships (school_id, class_id, user_id, kind)
                SELECT u.school_id,
                       (CAST(:groups AS uuid[]))[1 + ((row_number() OVER (ORDER BY u.id)) + :o) % 20], u.id,
                       'TEACHING'
                FROM users u WHERE u.school_id = :s AND u.type = 'PUPIL'
                """),
                {"s": school_id, "groups": [str(g) for g in groups], "o": offset},
            )
    return school_id, Actor(id=school.admin_id, label="admin"), classes


async def one_rollover(bench: Bench, pupils: int) -> dict[str, Any]:
    school_id, actor, classes = await school_of(bench, pupils)
    steps = [Step(classes["P7"], RolloverAction.LEAVE)] + [
        Step(classes[f"P{year}"], RolloverAction.RENAME, new_name=f"P{year + 1}") for year in range(1, YEARS)
    ]
    tracemalloc.start()
    started = time.perf_counter()
    async with school_scope(bench.db, school_id, actor) as session:
        job = await plan_rollover_job(
            session,
            school_id=school_id,
            actor=actor,
            steps=steps,
            teaching=TeachingAction.EMPTY,
            rotate_login_codes=True,
        )
    plan_seconds = time.perf_counter() - started
    started = time.perf_counter()
    applied = await confirm_rollover(
        bench.db, school_id=school_id, actor=actor, job_id=job.id, expected_leavers=job.leaving
    )
    apply_seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert applied.totals["leaving"] == job.leaving and applied.totals["renamed"] == pupils - job.leaving
    return {"pupils": pupils, "plan_s": plan_seconds, "apply_s": apply_seconds, "peak_memory_mb": peak / 1e6}


async def main(full: bool) -> dict[str, Any]:
    pupils = 6_000 if full else 1_500
    async with bench_database() as bench:
        await one_rollover(bench, 100)  # warm up: connections, statement caches
        small = await one_rollover(bench, pupils // 3)
        big = await one_rollover(bench, pupils)
    per_pupil_kb = (
        (big["peak_memory_mb"] - small["peak_memory_mb"]) * 1000 / (big["pupils"] - small["pupils"])
    )
    results = {
        "rollover_pupils": pupils,
        "rollover_plan_s": round(big["plan_s"], 3),
        "rollover_apply_s": round(big["apply_s"], 3),
        "rollover_peak_memory_mb": round(big["peak_memory_mb"], 2),
        "rollover_peak_memory_mb_at_third_pupils": round(small["peak_memory_mb"], 2),
        "rollover_memory_kb_per_pupil": round(per_pupil_kb, 3),
    }
    print(table([(k, str(v)) for k, v in results.items()]))
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--full", action="store_true")
    save(asyncio.run(main(parser.parse_args().full)))
