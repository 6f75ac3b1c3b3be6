"""The demo school that `make serve` seeds: a few classes, teachers and pupils. Seeding twice changes nothing."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from db.audit import Actor
from db.models import ClassKind, ClassMembership, SchoolClass, UserType
from db.passwords import hash_password_async, memorable_password
from db.schools import create_school, school_id_for_slug
from db.scope import bind_school
from db.users import create_user

SLUG = "demo"
ADMIN = "admin"
TEACHERS = [("mrs.jones", "Megan", "Jones"), ("mr.patel", "Ravi", "Patel")]
PUPILS = [
    ("amy.b", "Amy", "Brown", "P3"),
    ("ben.c", "Ben", "Clarke", "P3"),
    ("chloe.d", "Chloe", "Doyle", "P3"),
    ("dan.e", "Dan", "Evans", "P3"),
    ("ella.f", "Ella", "Fisher", "P4"),
    ("finn.g", "Finn", "Grant", "P4"),
    ("grace.h", "Grace", "Hughes", "P4"),
    ("harry.i", "Harry", "Irwin", "P4"),
]
TEACHING = {"Maths Group A": ["amy.b", "dan.e", "ella.f"], "Choir": ["ben.c", "grace.h", "mrs.jones"]}
PUPIL_PASSWORD = "cat1"


@dataclass(frozen=True, slots=True)
class DemoAdmin:
    school: str
    username: str
    password: str | None


async def seed_demo(session: AsyncSession, password_file: Path) -> DemoAdmin:
    """Create the demo school once; the admin's password is kept in `password_file` so it can be shown again."""
    if await school_id_for_slug(session, SLUG) is not None:
        password = password_file.read_text().strip() if password_file.exists() else None
        return DemoAdmin(SLUG, ADMIN, password)

    password = memorable_password()
    school = await create_school(
        session,
        slug=SLUG,
        name="Demo Primary School",
        admin_username=ADMIN,
        admin_password=password,
        admin_first_name="Alex",
        admin_surname="Admin",
    )
    school_id = school.school_id
    await bind_school(session, school_id, Actor(id=None, label="rollcall demo"))
    classes: dict[str, SchoolClass] = {}
    for name, kind in [
        ("P3", ClassKind.REGISTRATION),
        ("P4", ClassKind.REGISTRATION),
        *((name, ClassKind.TEACHING) for name in TEACHING),
    ]:
        classes[name] = SchoolClass(school_id=school_id, id=uuid.uuid4(), name=name, kind=kind)
        session.add(classes[name])
    await session.flush()

    teacher_hash = await hash_password_async(memorable_password())
    pupil_hash = await hash_password_async(PUPIL_PASSWORD)
    users: dict[str, uuid.UUID] = {}
    for username, first, surname in TEACHERS:
        user = await create_user(
            session,
            school_id=school_id,
            username=username,
            password_hash=teacher_hash,
            type=UserType.TEACHER,
            first_name=first,
            surname=surname,
        )
        users[username] = user.id
    for username, first, surname, registration in PUPILS:
        user = await create_user(
            session,
            school_id=school_id,
            username=username,
            password_hash=pupil_hash,
            type=UserType.PUPIL,
            first_name=first,
            surname=surname,
        )
        users[username] = user.id
        session.add(
            ClassMembership(
                school_id=school_id,
                class_id=classes[registration].id,
                user_id=user.id,
                kind=ClassKind.REGISTRATION,
            )
        )
    for name, members in TEACHING.items():
        for username in members:
            session.add(
                ClassMembership(
                    school_id=school_id,
                    class_id=classes[name].id,
                    user_id=users[username],
                    kind=ClassKind.TEACHING,
                )
            )
    await session.flush()
    password_file.write_text(password + "\n")
    password_file.chmod(0o600)
    return DemoAdmin(SLUG, ADMIN, password)
