"""The change feed: what recording it adds to writes, and how fast it is read.

Measured in one run on one database, with the feed's triggers on and off in turns (`ALTER TABLE ... DISABLE
TRIGGER USER`, as the owner), so both sides see the same machine at the same moment:

- `updateUserField`: the domain operation (its transaction: lock, version check, update, audit event),
  one edit after another. Over HTTP the same added work is a smaller share still.
- an import of 1,000 rows (`confirm_import`, waiting for the apply: new users, their classes and memberships, hashed passwords).
- reading 10,000 changes, a page of 1,000 at a time (`db.changes.read_changes`, collapsed as the API does).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import async_sessionmaker

from bench.harness import Bench, bench_database, save, table
from bench.import_bench import SERVER_SECRET, roster_file
from db import changes
from db.audit import Actor
from db.imports.jobs import confirm_import, preview_import
from db.manage_users import UserField, update_user_field
from db.models import User
from db.schools import NewSchool, create_school
from db.scope import school_scope

WATCHED = ("users", "classes", "class_memberships")


async def recording(bench: Bench, on: bool) -> None:
    async with bench.owner.begin() as connection:
        for table_name in WATCHED:
            await connection.execute(
                text(f"ALTER TABLE {table_name} {'ENABLE' if on else 'DISABLE'} TRIGGER USER")
            )


async def new_school(bench: Bench) -> NewSchool:
    async with async_sessionmaker(bench.owner)() as session, session.begin():
        return await create_school(
            session,
            slug=f"feed-{uuid.uuid4().hex[:8]}",
            name="Feed Bench",
            admin_username="admin",
            admin_password="bench-admin-password",
        )


async def imported(bench: Bench, school: NewSchool, rows: int) -> float:
    """Seconds to apply an import of `rows` new pupils."""
    actor = Actor(id=school.admin_id, label="admin")
    async with school_scope(bench.db, school.school_id, actor) as session:
        job = await preview_import(
            session,
            school_id=school.school_id,
            actor=actor,
            file_name="bench.csv",
            data=roster_file(rows),
            remove_missing_pupils=False,
            max_bytes=50 * 1024 * 1024,
            max_rows=100_000,
            server_secret=SERVER_SECRET,
        )
    started = time.perf_counter()
    await confirm_import(
        bench.db, school_id=school.school_id, actor=actor, job_id=job.id, server_secret=SERVER_SECRET
    )
    return time.perf_counter() - started


async def edits(bench: Bench, school: NewSchool, user_ids: list[uuid.UUID], count: int) -> float:
    """Seconds per updateUserField, over `count` edits."""
    actor = Actor(id=school.admin_id, label="admin")
    started = time.perf_counter()
    for i in range(count):
        user_id = user_ids[i % len(user_ids)]
        async with school_scope(bench.db, school.school_id, actor) as session:
            version = (await session.execute(select(User.version).where(User.id == user_id))).scalar_one()
        async with school_scope(bench.db, school.school_id, actor) as session:
            await update_user_field(
                session,
                school_id=school.school_id,
                actor=actor,
                user_id=user_id,
                field=UserField.SURNAME,
                value=f"Surname {i}",
                expected_version=version,
            )
    return (time.perf_counter() - started) / count


async def read_all(bench: Bench, school: NewSchool, cursor: str, page: int) -> tuple[float, int]:
    started = time.perf_counter()
    read = 0
    while True:
        async with school_scope(bench.db, school.school_id) as session:
            found = await changes.read_changes(session, school_id=school.school_id, after=cursor, first=page)
        read += len(found.changes)
        cursor = found.end_cursor
        if not found.has_next_page:
            return time.perf_counter() - started, read


async def main(full: bool) -> dict[str, Any]:
    # Short rounds, on and off in turns, each pair in the other order from the last: drift on a shared machine
    # weighs on both sides alike, and the medians leave out the rounds a neighbour's burst hit.
    edit_rounds, import_turns = (20, 6) if full else (10, 3)
    edit_count = 40
    rows = 1_000
    async with bench_database() as bench:
        # updateUserField, on and off in turns, on one school's 200 pupils.
        school = await new_school(bench)
        await imported(bench, school, 200)
        async with school_scope(bench.db, school.school_id) as session:
            pupils = list((await session.execute(select(User.id).where(User.type == "PUPIL"))).scalars())
        edit: dict[bool, list[float]] = {True: [], False: []}
        imports: dict[bool, list[float]] = {True: [], False: []}
        for turn in range(edit_rounds):
            for on in (True, False) if turn % 2 == 0 else (False, True):
                await recording(bench, on)
                edit[on].append(await edits(bench, school, pupils, edit_count))
        for turn in range(import_turns):
            for on in (True, False) if turn % 2 == 0 else (False, True):
                await recording(bench, on)
                imports[on].append(await imported(bench, await new_school(bench), rows))
        await recording(bench, True)

        # Reading 10,000 changes of 1,000 users (ten edits each, each edit its own record).
        reader = await new_school(bench)
        await imported(bench, reader, 1_000)
        async with school_scope(bench.db, reader.school_id) as session:
            cursor = await changes.current_cursor(session)
        async with school_scope(bench.db, reader.school_id, Actor(id=None, label="bench")) as session:
            for i in range(10):
                await session.execute(
                    text("update users set surname = :s where type = 'PUPIL'"), {"s": f"S{i}"}
                )
        seconds, read = await read_all(bench, reader, cursor, 1_000)
        # Collapsed per page: each page of 1,000 records holds each user once.
        async with school_scope(bench.db, reader.school_id) as session:
            total = (await session.execute(text("select count(*) from changes"))).scalar_one()

    edit_on, edit_off = statistics.median(edit[True]), statistics.median(edit[False])
    import_on, import_off = statistics.median(imports[True]), statistics.median(imports[False])
    results = {
        "feed_update_user_field_ms_with_feed": round(edit_on * 1000, 3),
        "feed_update_user_field_ms_without_feed": round(edit_off * 1000, 3),
        "feed_update_user_field_ratio": round(edit_on / edit_off, 3),
        "feed_import_1000_rows_s_with_feed": round(import_on, 3),
        "feed_import_1000_rows_s_without_feed": round(import_off, 3),
        "feed_import_1000_rows_ratio": round(import_on / import_off, 3),
        "feed_read_10000_changes_s": round(seconds, 3),
        "feed_read_changes_per_s": round(10_000 / seconds),
        "feed_read_records_in_school": total,
        "feed_read_nodes_after_collapse": read,
    }
    print(table([(k, str(v)) for k, v in results.items()]))
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--full", action="store_true")
    save(asyncio.run(main(parser.parse_args().full)))
