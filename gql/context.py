"""The per-request context every resolver receives."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import strawberry
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import HTTPConnection
from starlette.responses import Response

from db.audit import Actor
from db.device_cookies import LIFETIME as DEVICE_COOKIE_LIFETIME
from db.engine import Database
from db.scope import SchoolTransactions, school_scope
from db.sessions import SessionPolicy
from gql.loaders import Loaders
from tenants.callers import Caller, Person, caller_for_secret
from tenants.policies import actor_of
from web.background import BackgroundTasks
from web.http_auth import CSRF_HEADER, DEVICE_COOKIE, SESSION_COOKIE
from web.settings import Settings


@dataclass(slots=True)
class Context:
    # The HTTP request, or the WebSocket upgrade request of a graphql-transport-ws connection.
    request: HTTPConnection
    response: Response
    db: Database
    settings: Settings
    request_id: str
    client: str
    caller: Caller | None
    loaders: Loaders
    # The caller's school's transactions, the first of them the one the caller was found in (db.scope).
    transactions: SchoolTransactions | None = None
    # Over a WebSocket: the secret the connection signed in with, looked up again for each operation and
    # while a subscription runs (`recheck_caller`), and the `connection_init` payload (Strawberry sets it).
    secret: str | None = None
    connection_params: dict[str, object] | None = None
    # This worker's background work (an import's apply), which the app's lifespan ends at shutdown.
    background: BackgroundTasks | None = None

    @property
    def session_policy(self) -> SessionPolicy:
        return self.settings.session_policy

    @property
    def login_code_secret(self) -> bytes:
        return self.settings.login_code_secret

    def signed_in(self) -> Caller:
        """The caller of a field whose permission class has already required one."""
        assert self.caller is not None, "the field's permission class lets only callers through"
        return self.caller

    def person(self) -> Person:
        """The signed-in person of a field whose permission class lets only people through."""
        caller = self.signed_in()
        assert isinstance(caller, Person), "the field's permission class lets only people through"
        return caller

    def actor(self) -> Actor:
        """Who the audit log says made this request's changes."""
        return actor_of(self.signed_in(), self.request_id)

    async def recheck_caller(self) -> Caller | None:
        """Who is asking now, on a connection that lasts (a WebSocket): its secret looked up again, so a logout,
        a revoked token or a lost admin flag ends what it may do. Over HTTP the caller is the request's."""
        if self.secret is not None:
            # The same secret: a provisioning token was refused at connection_init and stays one.
            self.caller = await caller_for_secret(self.db, self.secret, self.session_policy)
        return self.caller

    @asynccontextmanager
    async def scope(self) -> AsyncIterator[AsyncSession]:
        """A transaction bound to the caller's school, its changes made by the caller (for the change feed); the
        request's first runs in the transaction the caller was found in."""
        school_id = self.signed_in().school_id
        if self.transactions is not None and self.transactions.school_id == school_id:
            async with self.transactions.scope() as session:
                yield session
            return
        async with school_scope(self.db, school_id, self.actor()) as session:
            yield session

    async def database(self) -> Database:
        """The pool, for work outside `scope()` (sign-in, re-authentication): the caller's own transaction
        ends first, so this request never holds a connection idle while it waits for another."""
        await self.finish()
        return self.db

    async def finish(self) -> None:
        """Ends the caller's own transaction if no `scope()` took it (the request's work is done)."""
        if self.transactions is not None:
            await self.transactions.finish()

    def signed_in_now(self, token: str, school_id: uuid.UUID) -> None:
        """A sign-in in this request: the browser gets its session cookie, and the user the payload returns
        loads their classes from their own school (the request began with no caller, or another one)."""
        self.set_session_cookie(token)
        if self.loaders.school_id != school_id:
            self.loaders = Loaders(self.db, school_id)

    @property
    def from_browser(self) -> bool:
        """A browser's request: it sends the CSRF header with every POST, or holds a session cookie."""
        return from_browser(self.request)

    def token_for_body(self, token: str) -> str | None:
        """The new session's token as the response body may show it: never to a browser, which has it as an
        HttpOnly cookie (a script of the page could read it from the body)."""
        return token_for_body(self.request, token)

    def set_session_cookie(self, token: str) -> None:
        set_session_cookie(self.response, self.request, self.settings, token)

    @property
    def device_cookie(self) -> str | None:
        return self.request.cookies.get(DEVICE_COOKIE)

    def set_device_cookie(self, value: str) -> None:
        """Kept across sessions (signing out leaves it): this browser has signed in as the user before."""
        set_device_cookie(self.response, self.request, value)

    def clear_session_cookie(self) -> None:
        self.response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")


Info = strawberry.Info[Context, None]


# What a sign-in gives the response, for the resolvers above and for the compiled sign-in (gql.compiled_signin).


def from_browser(request: HTTPConnection) -> bool:
    """A browser's request: it sends the CSRF header with every POST, or holds a session cookie."""
    return bool(request.headers.get(CSRF_HEADER)) or SESSION_COOKIE in request.cookies


def token_for_body(request: HTTPConnection, token: str) -> str | None:
    """The new session's token as the response body may show it: never to a browser, which has it as an
    HttpOnly cookie (a script of the page could read it from the body)."""
    return None if from_browser(request) else token


def set_session_cookie(response: Response, request: HTTPConnection, settings: Settings, token: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=settings.session_lifetime_hours * 3600,
        httponly=True,
        samesite="strict",
        secure=request.scope.get("scheme") == "https",
        path="/",
    )


def set_device_cookie(response: Response, request: HTTPConnection, value: str) -> None:
    """Kept across sessions (signing out leaves it): this browser has signed in as the user before."""
    response.set_cookie(
        DEVICE_COOKIE,
        value,
        max_age=int(DEVICE_COOKIE_LIFETIME.total_seconds()),
        httponly=True,
        samesite="strict",
        secure=request.scope.get("scheme") == "https",
        path="/graphql",
    )
