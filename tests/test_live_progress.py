"""Live progress over a real WebSocket (graphql-transport-ws) against the real server: signing the socket in,
following a 1,000-row import from start to end, and what ends a subscription."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from db.api_tokens import ApiScope
from db.engine import Database
from db.models import Provider, UserType
from gql.schema import MAX_ALIASES
from tests.conftest import SchoolFixture, graphql, make_api_token, make_school, make_user, sign_in_as
from tests.test_imports import confirm, preview
from web.app import MAX_OPERATIONS

FOLLOW = "subscription ($id: ID!) { importJobProgress(id: $id) { jobId status processed total finished } }"
PROTOCOL = Subprotocol("graphql-transport-ws")


def ws_url(server_url: str) -> str:
    return server_url.replace("http://", "ws://") + "/graphql"


@asynccontextmanager
async def socket(
    server_url: str, payload: dict[str, Any] | None = None, **options: Any
) -> AsyncIterator[ClientConnection]:
    """A connection that has sent connection_init (the caller then reads the ack, or the close)."""
    async with connect(ws_url(server_url), subprotocols=[PROTOCOL], **options) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": payload or {}}))
        yield ws


async def signed_in(ws: ClientConnection) -> None:
    assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"type": "connection_ack"}


async def refused(ws: ClientConnection) -> int | None:
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 10)
    return closed.value.rcvd.code if closed.value.rcvd else None


def codes(message: dict[str, Any]) -> list[str]:
    """The error codes of a message: an `error` (refused before it ran) or a `next` carrying errors."""
    errors = message["payload"] if message["type"] == "error" else message["payload"].get("errors", [])
    return [error.get("extensions", {}).get("code") for error in errors]


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def messages(
    ws: ClientConnection, query: str, variables: dict[str, Any], id_: str = "1"
) -> AsyncIterator[dict[str, Any]]:
    """Every message of one operation, up to and including its `complete` (or `error`)."""
    await ws.send(
        json.dumps({"id": id_, "type": "subscribe", "payload": {"query": query, "variables": variables}})
    )
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 120))
        if message.get("type") == "ping":
            await ws.send(json.dumps({"type": "pong"}))
            continue
        assert message["id"] == id_, message
        yield message
        if message["type"] in ("complete", "error"):
            return


async def collect(ws: ClientConnection, query: str, variables: dict[str, Any]) -> list[dict[str, Any]]:
    return [message async for message in messages(ws, query, variables)]


def roster(rows: int) -> bytes:
    return (
        "username,first_name,surname,type,registration_class\r\n"
        + "".join(f"pupil{i:04},First{i},Last{i},PUPIL,P{i % 9}\r\n" for i in range(rows))
    ).encode()


@pytest.fixture
async def waiting_job(http: httpx.AsyncClient, school: SchoolFixture) -> str:
    """A previewed job nobody confirms: it stays PREVIEW, so a subscription to it waits."""
    job_id: str = (await preview(http, school, roster(3)))["job"]["id"]
    return job_id


@pytest.mark.slow
async def test_a_websocket_client_watches_a_1000_row_import_from_start_to_end(
    server_url: str, http: httpx.AsyncClient, school: SchoolFixture
) -> None:
    job = (await preview(http, school, roster(1000)))["job"]
    assert job["total"] == 1000
    async with socket(server_url, bearer(school.admin_token)) as ws:
        await signed_in(ws)
        stream = messages(ws, FOLLOW, {"id": job["id"]})
        first = await anext(stream)
        assert first["type"] == "next"
        assert first["payload"]["data"]["importJobProgress"] == {
            "jobId": job["id"],
            "status": "PREVIEW",
            "processed": 0,
            "total": 1000,
            "finished": False,
        }

        async def follow() -> list[dict[str, Any]]:
            return [message async for message in stream]

        async with httpx.AsyncClient(base_url=server_url, timeout=300) as patient:
            applied, rest = await asyncio.gather(confirm(patient, school, job["id"]), follow())
    assert applied["errors"] == [] and len(applied["generatedPasswords"]) == 1000
    assert rest[-1] == {"id": "1", "type": "complete"}
    states = [message["payload"]["data"]["importJobProgress"] for message in rest[:-1]]
    assert all(message["type"] == "next" and "errors" not in message["payload"] for message in rest[:-1])
    running = [state["processed"] for state in states if state["status"] == "RUNNING"]
    assert any(0 < processed < 1000 for processed in running), states
    assert running == sorted(running) and len(set(running)) == len(running)
    assert states[-1] == {
        "jobId": job["id"],
        "status": "SUCCEEDED",
        "processed": 1000,
        "total": 1000,
        "finished": True,
    }
    assert all(not state["finished"] for state in states[:-1])


async def test_a_logout_ends_the_subscription(
    server_url: str, http: httpx.AsyncClient, db: Database, school: SchoolFixture, waiting_job: str
) -> None:
    token = await sign_in_as(db, school, school.admin_id)
    async with socket(server_url, bearer(token)) as ws:
        await signed_in(ws)
        stream = messages(ws, FOLLOW, {"id": waiting_job})
        assert (await anext(stream))["payload"]["data"]["importJobProgress"]["status"] == "PREVIEW"
        body = await graphql(http, "mutation { logout { errors { code } } }", token=token)
        assert body["data"]["logout"]["errors"] == []
        ended = [message async for message in stream]
        assert codes(ended[0]) == ["UNAUTHENTICATED"]
        assert ended[-1]["type"] == "complete"
        # Every later operation on the socket sees nobody too.
        later = await collect(ws, "query { school { id } }", {})
        assert codes(later[0]) == ["UNAUTHENTICATED"]


async def test_a_revoked_token_ends_the_subscription(
    server_url: str,
    http: httpx.AsyncClient,
    owner_engine: AsyncEngine,
    db: Database,
    waiting_job: str,
    school: SchoolFixture,
) -> None:
    # An API token is not an admin: it may not follow imports at all.
    async with socket(server_url, bearer(await make_api_token(db, school))) as ws:
        await signed_in(ws)
        answer = await collect(ws, FOLLOW, {"id": waiting_job})
        assert codes(answer[0]) == ["FORBIDDEN"]
    # An admin who stops being one mid-subscription is cut off.
    second_admin = await make_user(db, school, type=UserType.TEACHER, is_admin=True)
    token = await sign_in_as(db, school, second_admin)
    async with socket(server_url, bearer(token)) as ws:
        await signed_in(ws)
        stream = messages(ws, FOLLOW, {"id": waiting_job})
        assert (await anext(stream))["type"] == "next"
        body = await graphql(
            http,
            'mutation ($id: ID!) { updateUserField(userId: $id, field: IS_ADMIN, value: "false", expectedVersion: 1) '
            "{ errors { code } } }",
            {"id": str(second_admin)},
            token=school.admin_token,
        )
        assert body["data"]["updateUserField"]["errors"] == [], body
        ended = [message async for message in stream]
        assert codes(ended[0]) == ["FORBIDDEN"]


async def test_who_may_open_a_socket(
    server_url: str, owner_engine: AsyncEngine, db: Database, school: SchoolFixture, waiting_job: str
) -> None:
    for payload in (
        {},
        bearer("rc_sess_unknown"),
        {"authorization": "Basic abc"},
        bearer(
            await make_api_token(
                db, await make_school(owner_engine, db, provider=Provider.C2K), [ApiScope.PROVISION]
            )
        ),
    ):
        async with socket(server_url, payload) as ws:
            assert await refused(ws) == 4403, payload
    cookie = {"Cookie": f"rollcall_session={school.admin_token}"}
    # The session cookie signs a socket in only from this server's own pages.
    for origin in ("http://evil.example", None):
        async with socket(server_url, additional_headers=cookie, origin=origin) as ws:
            assert await refused(ws) == 4403, origin
    async with socket(server_url, additional_headers=cookie, origin=server_url) as ws:
        await signed_in(ws)
        first = await anext(messages(ws, FOLLOW, {"id": waiting_job}))
        assert first["payload"]["data"]["importJobProgress"]["status"] == "PREVIEW"
    # A bearer token works from any page: it is not sent by the browser on its own.
    async with socket(server_url, bearer(school.admin_token), origin="http://launchpad.example") as ws:
        await signed_in(ws)


async def test_a_subscription_sees_only_its_school(
    server_url: str, owner_engine: AsyncEngine, db: Database, waiting_job: str
) -> None:
    other = await make_school(owner_engine, db)
    async with socket(server_url, bearer(other.admin_token)) as ws:
        await signed_in(ws)
        for job_id in (waiting_job, str(uuid.uuid4()), "not-an-id"):
            answer = await collect(ws, FOLLOW, {"id": job_id})
            assert codes(answer[0]) == ["NOT_FOUND"]
            assert answer[0]["payload"]["data"] is None and answer[-1]["type"] == "complete"


async def test_subscription_documents_meet_the_query_limits(
    server_url: str, school: SchoolFixture, waiting_job: str
) -> None:
    aliases = " ".join(f"a{i}: importJobProgress(id: $id) {{ total }}" for i in range(MAX_ALIASES + 1))
    too_long = "subscription ($id: ID!) { importJobProgress(id: $id) { " + "total " * 2001 + "} }"
    async with socket(server_url, bearer(school.admin_token)) as ws:
        await signed_in(ws)
        (answer,) = await collect(ws, f"subscription ($id: ID!) {{ {aliases} }}", {"id": waiting_job})
        assert answer["type"] == "error"
        assert any("aliases" in error["message"] for error in answer["payload"]), answer
        # Too long a document is a syntax error, which graphql-transport-ws answers by closing the socket.
        with pytest.raises(ConnectionClosed) as closed:
            await collect(ws, too_long, {"id": waiting_job})
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4400
        assert "more than 2000 tokens" in closed.value.rcvd.reason


async def test_every_operation_on_a_socket_looks_its_caller_up_again(
    server_url: str, http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    token = await sign_in_as(db, school, school.admin_id)
    async with socket(server_url, bearer(token)) as ws:
        await signed_in(ws)
        (answer, _) = await collect(ws, "query { school { slug } }", {})
        assert answer["payload"]["data"]["school"]["slug"] == school.slug
        await graphql(http, "mutation { logout { errors { code } } }", token=token)
        (answer, _) = await collect(ws, "query { school { slug } }", {})
        assert codes(answer) == ["UNAUTHENTICATED"]


@pytest.mark.parametrize("accept", ["application/json", "application/graphql-response+json"])
async def test_a_subscription_over_http_is_told_to_use_the_websocket(
    http: httpx.AsyncClient, school: SchoolFixture, waiting_job: str, accept: str
) -> None:
    headers = {**bearer(school.admin_token), "Accept": accept}
    request = {"query": FOLLOW, "variables": json.dumps({"id": waiting_job})}
    answers = [
        await http.post("/graphql", json={**request, "variables": {"id": waiting_job}}, headers=headers),
        await http.get("/graphql", params=request, headers=headers),
    ]
    for response in answers:
        assert response.status_code == 400, response.text
        (error,) = response.json()["errors"]
        assert error["extensions"]["code"] == "BAD_REQUEST", error
        assert "WebSocket" in error["message"] and "graphql-transport-ws" in error["message"], error


@pytest.mark.parametrize("frame", ["{not json", "[1]", '"connection_init"', "1", '{"type": 1}', "[" * 5000])
async def test_a_frame_that_is_not_a_message_closes_the_socket_with_4400(
    server_url: str, school: SchoolFixture, frame: str
) -> None:
    async with socket(server_url, bearer(school.admin_token)) as ws:
        await signed_in(ws)
        await ws.send(frame)
        assert await refused(ws) == 4400


@pytest.mark.parametrize(
    "message",
    [
        {"type": "subscribe", "id": "1", "payload": "query { me { id } }"},
        {"type": "subscribe", "id": "1", "payload": {"query": 1}},
        {"type": "subscribe", "id": "1", "payload": {"query": "{ me { id } }", "variables": [1]}},
        {"type": "subscribe", "id": "1", "payload": {"query": "{ me { id } }", "operationName": 1}},
        {"type": "subscribe", "id": 1, "payload": {"query": "{ me { id } }"}},
        {"type": "subscribe", "payload": {"query": "{ me { id } }"}},
        {"type": "complete", "id": ["1"]},
    ],
)
async def test_a_message_of_the_wrong_shape_closes_the_socket_with_4400(
    server_url: str, school: SchoolFixture, message: dict[str, Any]
) -> None:
    async with socket(server_url, bearer(school.admin_token)) as ws:
        await signed_in(ws)
        await ws.send(json.dumps(message))
        assert await refused(ws) == 4400


async def test_a_socket_runs_a_limited_number_of_operations_at_once(
    server_url: str, school: SchoolFixture, waiting_job: str
) -> None:
    async with socket(server_url, bearer(school.admin_token)) as ws:
        await signed_in(ws)
        streams = [messages(ws, FOLLOW, {"id": waiting_job}, id_=str(n)) for n in range(MAX_OPERATIONS)]
        for stream in streams:  # each has started (its first state is sent) before the next is sent
            assert (await anext(stream))["type"] == "next"
        # the next one is refused on its own, and says why
        (over,) = await collect_as(ws, FOLLOW, {"id": waiting_job}, "over")
        assert over["type"] == "error" and codes(over) == ["BAD_REQUEST"], over
        assert f"at most {MAX_OPERATIONS}" in over["payload"][0]["message"], over
        # once one is completed, another may start, and the socket still answers
        await ws.send(json.dumps({"id": "0", "type": "complete"}))
        first = await anext(messages(ws, FOLLOW, {"id": waiting_job}, id_="again"))
        assert first["type"] == "next", first
        ping = json.dumps({"type": "ping"})
        await ws.send(ping)
        while (message := json.loads(await asyncio.wait_for(ws.recv(), 10)))["type"] != "pong":
            assert message["type"] == "next", message


async def collect_as(
    ws: ClientConnection, query: str, variables: dict[str, Any], id_: str
) -> list[dict[str, Any]]:
    """One operation's messages, skipping those of the others running on the socket."""
    await ws.send(
        json.dumps({"id": id_, "type": "subscribe", "payload": {"query": query, "variables": variables}})
    )
    found: list[dict[str, Any]] = []
    while not found or found[-1]["type"] not in ("complete", "error"):
        message = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if message.get("id") == id_:
            found.append(message)
    return found
