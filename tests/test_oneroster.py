"""OneRoster 1.2 over real HTTP: the token endpoint, every endpoint, the protocol's parameters, the mapping,
the school's boundary under filters, and a consumer's sync."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from db.api_tokens import ApiScope, create_api_token
from db.audit import Actor
from db.classes import assign_to_class, create_class
from db.engine import Database
from db.models import ClassKind, UserType
from db.oauth import ROSTER_CORE_READONLY, ROSTER_READONLY
from db.scope import school_scope
from tests.conftest import SchoolFixture, make_school, make_user

BASE = "/ims/oneroster/rostering/v1p2"


async def make_client(
    db: Database, school: SchoolFixture, scopes: list[ApiScope] | None = None
) -> tuple[str, str]:
    """An API client: its id and its secret."""
    async with school_scope(db, school.id) as session:
        secret, token = await create_api_token(
            session,
            school_id=school.id,
            actor=Actor(id=school.admin_id, label="admin"),
            name="Roster app",
            scopes=scopes or [ApiScope.ROSTER_READ],
        )
    return str(token.id), secret


def basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


async def access_token(http: httpx.AsyncClient, client: tuple[str, str], scope: str | None = None) -> str:
    form = {"grant_type": "client_credentials", **({"scope": scope} if scope else {})}
    response = await http.post("/oauth/token", data=form, headers=basic(*client))
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


async def get(http: httpx.AsyncClient, token: str, path: str, **params: Any) -> httpx.Response:
    return await http.get(BASE + path, params=params, headers={"Authorization": f"Bearer {token}"})


async def test_smoke(http: httpx.AsyncClient, db: Database, school: SchoolFixture) -> None:
    pupil = await make_user(db, school, first_name="Ann", surname="Lee")
    teacher = await make_user(db, school, type=UserType.TEACHER, email="t@example.org")
    async with school_scope(db, school.id) as session:
        actor = Actor(id=school.admin_id, label="admin")
        room = await create_class(session, school_id=school.id, actor=actor, name="7A", kind=ClassKind.REGISTRATION)
        await assign_to_class(session, school_id=school.id, actor=actor, class_id=room.id, user_ids=[pupil, teacher])
    token = await access_token(http, await make_client(db, school))
    for path in ("/orgs", "/schools", "/academicSessions", "/terms", "/gradingPeriods", "/courses", "/classes", "/users", "/students", "/teachers", "/enrollments"):
        response = await get(http, token, path)
        assert response.status_code == 200, (path, response.text)
        print(path, response.headers["x-total-count"], response.text[:600])
