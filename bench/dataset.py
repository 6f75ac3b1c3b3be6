"""A realistic district, loaded fast: schools of 1,000 users each, 40 classes a school, and their memberships.

Everything is set-based SQL (generate_series), run as the owner role. Row-level security is FORCED even for
the owner, so each school is bound (`set_config('app.school_id', ..., true)`) before its rows are written.
Ids are derived from the school's number (md5), so the same district comes out every time, and every user
has the same password, hashed once. `VACUUM ANALYZE` afterwards, so plans and index-only scans are those of a
settled database.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db.passwords import hash_password

PASSWORD = "bench-password-1"
LOADERS = os.cpu_count() or 2
USERS_PER_SCHOOL = 1000
TEACHERS_PER_SCHOOL = 60  # user 1 of each school is its admin
REGISTRATION_CLASSES = 30
TEACHING_CLASSES = (
    "Maths",
    "English",
    "Science",
    "History",
    "Geography",
    "Art",
    "Music",
    "PE",
    "Computing",
    "French",
)
FIRST_NAMES = (
    "Aoife",
    "Ben",
    "Caoimhe",
    "Daniel",
    "Ella",
    "Finn",
    "Grace",
    "Harry",
    "Isla",
    "Jack",
    "Katie",
    "Liam",
    "Mia",
    "Noah",
    "Orla",
    "Patrick",
    "Quinn",
    "Ruby",
    "Sean",
    "Tara",
    "Usman",
    "Victoria",
    "William",
    "Xavier",
    "Yasmin",
    "Zara",
    "Amelia",
    "Oliver",
    "Sophie",
    "Jamie",
    "Niamh",
    "Conor",
    "Chloe",
    "Ryan",
    "Erin",
    "Adam",
    "Hannah",
    "Luke",
    "Emma",
    "Matthew",
    "Lucy",
    "Cian",
    "Ava",
    "Thomas",
    "Eva",
    "James",
    "Anna",
    "Ethan",
    "Leah",
    "Dylan",
)
SURNAMES = (
    "Smith",
    "Jones",
    "Williams",
    "Brown",
    "Taylor",
    "Davies",
    "Evans",
    "Wilson",
    "Thomas",
    "Johnson",
    "Roberts",
    "Robinson",
    "Thompson",
    "Wright",
    "Walker",
    "White",
    "Edwards",
    "Hughes",
    "Green",
    "Hall",
    "Lewis",
    "Harris",
    "Clarke",
    "Patel",
    "Jackson",
    "Wood",
    "Turner",
    "Martin",
    "Cooper",
    "Hill",
    "Ward",
    "Morris",
    "Moore",
    "Clark",
    "Lee",
    "King",
    "Baker",
    "Harrison",
    "Morgan",
    "Allen",
    "James",
    "Scott",
    "Phillips",
    "Watson",
    "Davis",
    "Parker",
    "Price",
    "Bennett",
    "Young",
    "Griffiths",
    "Mitchell",
    "Kelly",
    "Cook",
    "Carter",
    "Richardson",
    "Bailey",
    "Collins",
    "Bell",
    "Shaw",
    "Murphy",
    "Miller",
    "Cox",
    "Richards",
    "Khan",
    "Marshall",
    "Anderson",
    "Simpson",
    "Ellis",
    "Adams",
    "Singh",
    "Begum",
    "Wilkinson",
    "Foster",
    "Chapman",
    "Powell",
    "Webb",
    "Rogers",
    "Gray",
    "Mason",
    "Ali",
    "Hunt",
    "Hussain",
    "Campbell",
    "Matthews",
    "Owen",
    "Palmer",
    "Holmes",
    "Mills",
    "Barnes",
    "Knight",
    "Lloyd",
    "Butler",
    "Russell",
    "Barker",
    "Fisher",
    "Stevens",
    "Jenkins",
    "Murray",
    "Dixon",
    "Harvey",
    "O'Neill",
    "McLaughlin",
    "Ní Bhriain",
    "Ó Súilleabháin",
    "Müller",
    "Nowak",
    "Kowalski",
    "Ferreira",
)

# One statement each; every one reads the school from the transaction's binding.
_BIND = "select set_config('app.school_id', :school_id, true)"
_SCHOOL = "insert into schools (id, slug, name) values (:school_id, :slug, :name)"
# The class names are ASCII, so lower() gives their name key (db.names.class_name_key).
_CLASSES = f"""
insert into classes (school_id, id, name, kind, name_key)
select school_id, id, name, kind, lower(name) from (
select s.id as school_id, md5(s.id::text || '-c' || k)::uuid as id,
       case when k <= {REGISTRATION_CLASSES} then 'Year ' || (7 + (k - 1) / 6) || chr(65 + (k - 1) % 6)
            else (cast(:teaching as text[]))[k - {REGISTRATION_CLASSES}] end as name,
       case when k <= {REGISTRATION_CLASSES} then 'REGISTRATION' else 'TEACHING' end as kind
from (select cast(:school_id as uuid) as id) s, generate_series(1, {REGISTRATION_CLASSES + len(TEACHING_CLASSES)}) k
) c
"""
_USERS = f"""
insert into users (school_id, id, username, first_name, surname, type, is_admin, password_hash, created_at,
                   updated_at)
select s.id, md5(s.id::text || '-u' || n)::uuid,
       case when n = 1 then 'admin' else lower(left(f.name, 1) || regexp_replace(l.name, '[^A-Za-z]', '', 'g'))
                                         || n end,
       f.name, l.name, case when n <= {TEACHERS_PER_SCHOOL} then 'TEACHER' else 'PUPIL' end, n = 1, cast(:password_hash as text),
       now() - make_interval(secs => n), now() - make_interval(secs => n)
from (select cast(:school_id as uuid) as id, cast(:number as integer) as number) s,
     generate_series(1, {USERS_PER_SCHOOL}) n,
     lateral (select (cast(:first_names as text[]))[1 + (n * 7 + s.number) % cast(:first_count as integer)] as name) f,
     lateral (select (cast(:surnames as text[]))[1 + (n * 13 + s.number * 3) % cast(:surname_count as integer)] as name) l
"""
# Pupils: a registration class and a teaching class each; teachers: two teaching classes each.
_MEMBERSHIPS = f"""
insert into class_memberships (school_id, class_id, user_id, kind)
select s.id, md5(s.id::text || '-c' || m.k)::uuid, md5(s.id::text || '-u' || m.n)::uuid, m.kind
from (select cast(:school_id as uuid) as id) s,
     lateral (
       select n, 1 + n % {REGISTRATION_CLASSES} as k, 'REGISTRATION' as kind
         from generate_series({TEACHERS_PER_SCHOOL + 1}, {USERS_PER_SCHOOL}) n
       union all
       select n, {REGISTRATION_CLASSES + 1} + n % {len(TEACHING_CLASSES)}, 'TEACHING'
         from generate_series(1, {USERS_PER_SCHOOL}) n
       union all
       select n, {REGISTRATION_CLASSES + 1} + (n + 3) % {len(TEACHING_CLASSES)}, 'TEACHING'
         from generate_series(1, {TEACHERS_PER_SCHOOL}) n
     ) m
"""


@dataclass(frozen=True, slots=True)
class School:
    number: int
    id: uuid.UUID
    slug: str


def school(number: int) -> School:
    return School(
        number=number,
        id=uuid.UUID(hashlib.md5(f"school-{number}".encode()).hexdigest()),
        slug=f"school-{number:04}",
    )


# A statement and the parameters it takes for one school (besides the school's id).
Statement = tuple[str, Callable[[School], dict[str, Any]]]


async def _each_school(owner: AsyncEngine, numbers: range, statements: list[Statement]) -> None:
    """The statements for every school, each school in its own transaction bound to it; one connection per
    core, sharing the schools out."""

    async def part(numbers: range) -> None:
        async with owner.connect() as connection:
            for number in numbers:
                one = school(number)
                async with connection.begin():
                    await connection.execute(text(_BIND), {"school_id": str(one.id)})
                    for statement, params in statements:
                        await connection.execute(text(statement), {"school_id": one.id, **params(one)})

    await asyncio.gather(*(part(numbers[i::LOADERS]) for i in range(LOADERS)))


async def _analyze(owner: AsyncEngine, *, vacuum: bool) -> None:
    async with owner.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        for table in ("schools", "users", "classes", "class_memberships"):
            await autocommit.execute(text(f"vacuum (analyze) {table}" if vacuum else f"analyze {table}"))


async def load(owner: AsyncEngine, numbers: range) -> float:
    """Load the schools numbered `numbers`; the seconds it took.

    Memberships come second, once the users are analyzed: their foreign-key checks are planned from the
    statistics, and a plan made while `users` looked empty scans the table for every membership.
    """
    started = time.perf_counter()
    password_hash = hash_password(PASSWORD)
    await _each_school(
        owner,
        numbers,
        [
            (_SCHOOL, lambda one: {"slug": one.slug, "name": f"Bench School {one.number}"}),
            (_CLASSES, lambda one: {"teaching": list(TEACHING_CLASSES)}),
            (
                _USERS,
                lambda one: {
                    "number": one.number,
                    "password_hash": password_hash,
                    "first_names": list(FIRST_NAMES),
                    "first_count": len(FIRST_NAMES),
                    "surnames": list(SURNAMES),
                    "surname_count": len(SURNAMES),
                },
            ),
        ],
    )
    await _analyze(owner, vacuum=False)
    await _each_school(owner, numbers, [(_MEMBERSHIPS, lambda one: {})])
    await _analyze(owner, vacuum=True)
    return time.perf_counter() - started
