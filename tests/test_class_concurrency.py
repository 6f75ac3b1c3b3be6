"""Admins changing the same pupils' classes at the same moment, over real HTTP: each pupil stays in at most
one registration class, and every request gets a clean answer (never an internal error)."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import defaultdict
from typing import Any

import httpx
from sqlalchemy import text

from db.engine import Database
from db.models import UserType
from db.scope import school_scope
from tests.conftest import SchoolFixture, graphql, make_user, sign_in_as

ROUNDS = 20
PUPILS = 10
ERRORS = "errors { code message }"
CREATE = (
    f"mutation ($name: String!, $kind: ClassKind!) {{ createClass(name: $name, kind: $kind) "
    f"{{ schoolClass {{ id }} {ERRORS} }} }}"
)
ASSIGN = (
    f"mutation ($id: ID!, $users: [ID!]!) {{ assignClass(classId: $id, userIds: $users) {{ {ERRORS} }} }}"
)
REMOVE = (
    f"mutation ($id: ID!, $users: [ID!]!) {{ removeFromClass(classId: $id, userIds: $users) {{ {ERRORS} }} }}"
)
DELETE = f"mutation ($id: ID!) {{ deleteClass(classId: $id) {{ {ERRORS} }} }}"


async def new_class(
    http: httpx.AsyncClient, school: SchoolFixture, name: str, kind: str = "REGISTRATION"
) -> str:
    body = await graphql(http, CREATE, {"name": name, "kind": kind}, token=school.admin_token)
    assert body["data"]["createClass"]["errors"] == [], body
    return str(body["data"]["createClass"]["schoolClass"]["id"])


async def admins(db: Database, school: SchoolFixture, count: int) -> list[str]:
    """Session tokens for `count` different admins of the school."""
    others = [await make_user(db, school, type=UserType.TEACHER, is_admin=True) for _ in range(count - 1)]
    return [school.admin_token] + [await sign_in_as(db, school, admin) for admin in others]


async def registration_classes(db: Database, school: SchoolFixture) -> dict[uuid.UUID, list[uuid.UUID]]:
    """Every user's registration classes, read straight from the table."""
    async with school_scope(db, school.id) as session:
        rows = await session.execute(
            text("select user_id, class_id from class_memberships where kind = 'REGISTRATION'")
        )
        found: dict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)
        for user_id, class_id in rows:
            found[user_id].append(class_id)
        return found


def payload_errors(body: dict[str, Any]) -> list[str]:
    """The payload's error codes; a top-level error (internal or otherwise) fails the test."""
    assert "errors" not in body, body
    return [error["code"] for error in next(iter(body["data"].values()))["errors"]]


async def test_concurrent_moves_leave_every_pupil_in_exactly_one_registration_class(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    # given: ten pupils, four registration classes and four admins
    pupils = [str(await make_user(db, school)) for _ in range(PUPILS)]
    classes = [await new_class(http, school, f"7{letter}") for letter in "ABCD"]
    tokens = await admins(db, school, 4)
    rng = random.Random(5)
    for round in range(ROUNDS):
        # when: two to four admins each move every pupil, listed in their own order, into a different class
        targets = rng.sample(classes, 2 + round % 3)
        bodies = await asyncio.gather(
            *(
                graphql(http, ASSIGN, {"id": target, "users": rng.sample(pupils, PUPILS)}, token=token)
                for token, target in zip(tokens, targets, strict=False)
            )
        )
        # then: every move applied whole, one after the other, so all the pupils are in the last one's class
        assert [payload_errors(body) for body in bodies] == [[]] * len(targets)
        placed = await registration_classes(db, school)
        assert sorted(str(user_id) for user_id in placed) == sorted(pupils)
        assert all(len(found) == 1 for found in placed.values()), placed
        assert len({found[0] for found in placed.values()}) == 1
        assert str(next(iter(placed.values()))[0]) in targets


async def test_overlapping_moves_removals_and_teaching_adds_at_once(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    # given
    pupils = [str(await make_user(db, school)) for _ in range(PUPILS)]
    registration = [await new_class(http, school, f"8{letter}") for letter in "ABC"]
    teaching = await new_class(http, school, "Maths", "TEACHING")
    tokens = await admins(db, school, 2)
    rng = random.Random(8)
    for _ in range(ROUNDS):
        # when: overlapping sets of pupils are moved, removed and added to a teaching class, all at once
        requests = [
            *(
                graphql(
                    http,
                    ASSIGN,
                    {"id": class_id, "users": rng.sample(pupils, rng.randint(3, PUPILS))},
                    token=rng.choice(tokens),
                )
                for class_id in registration
            ),
            graphql(
                http,
                REMOVE,
                {"id": rng.choice(registration), "users": rng.sample(pupils, 4)},
                token=rng.choice(tokens),
            ),
            *(
                graphql(http, ASSIGN, {"id": teaching, "users": rng.sample(pupils, 5)}, token=token)
                for token in tokens
            ),
        ]
        bodies = await asyncio.gather(*requests)
        # then
        assert [payload_errors(body) for body in bodies] == [[]] * len(requests)
        assert all(len(found) == 1 for found in (await registration_classes(db, school)).values())


async def test_a_class_deleted_while_pupils_move_into_it(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    pupils = [str(await make_user(db, school)) for _ in range(PUPILS)]
    tokens = await admins(db, school, 2)
    for round in range(ROUNDS // 2):
        doomed = await new_class(http, school, f"Doomed {round}")
        other = await new_class(http, school, f"9-{round}")
        bodies = await asyncio.gather(
            graphql(http, ASSIGN, {"id": doomed, "users": pupils}, token=tokens[0]),
            graphql(http, DELETE, {"id": doomed}, token=tokens[1]),
            graphql(http, ASSIGN, {"id": other, "users": pupils[::2]}, token=tokens[0]),
        )
        moved, deleted, others = (payload_errors(body) for body in bodies)
        # The move into the doomed class ran before the delete (which let its members go), or found no class.
        assert moved in ([], ["NOT_FOUND"]) and deleted == [] and others == []
        placed = await registration_classes(db, school)
        assert all(placed.get(uuid.UUID(pupil), []) in ([], [uuid.UUID(other)]) for pupil in pupils[::2])
        assert all(not placed.get(uuid.UUID(pupil)) for pupil in pupils[1::2])
