"""The Starlette application: GraphQL at /graphql, liveness at /healthz, readiness at /readyz."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

from sqlalchemy import text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send
from cross_web import HTTPException
from strawberry.asgi import GraphQL

from db.embedded import DatabaseUrls
from db.engine import Database
from db.sessions import SessionPolicy
from db.settings import Settings
from gql.context import CSRF_HEADER, SESSION_COOKIE, Context
from gql.loaders import Loaders
from gql.schema import build_schema
from tenants.callers import caller_for_secret

log = logging.getLogger("rollcall")


def bearer_secret(request: Request) -> str | None:
    scheme, _, secret = request.headers.get("authorization", "").partition(" ")
    return secret.strip() if scheme.lower() == "bearer" and secret.strip() else None


def refuse_secrets_in_url(request: Request) -> None:
    # URLs end up in logs, proxies and browser history.
    for name, value in request.query_params.multi_items():
        if name.lower() in {"token", "access_token", "api_token", "apitoken"} or value.startswith(("rcs_", "rca_")):
            raise HTTPException(400, "Send tokens in the Authorization header, never in the URL.")


def session_secret(request: Request) -> str | None:
    """The bearer token, or else the session cookie; a cookie-authenticated POST must carry the CSRF header."""
    if secret := bearer_secret(request):
        return secret
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie and request.method == "POST" and not request.headers.get(CSRF_HEADER):
        raise HTTPException(403, f"Requests signed in with the session cookie must send the {CSRF_HEADER} header.")
    return cookie


class RequestId:
    """Gives every request an id, in `request.state` and in the `X-Request-Id` response header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: dict) -> None:  # type: ignore[type-arg]
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        await self.app(scope, receive, send_with_id)


class RollcallGraphQL(GraphQL[Context, None]):
    def __init__(self, db: Database, settings: Settings) -> None:
        super().__init__(
            build_schema(introspection=settings.introspection),
            graphql_ide="graphiql" if settings.graphiql else None,
            allow_queries_via_get=True,
        )
        self.db = db
        self.settings = settings
        self.session_policy = SessionPolicy(
            idle=timedelta(minutes=settings.session_idle_minutes),
            lifetime=timedelta(hours=settings.session_lifetime_hours),
        )

    async def get_context(self, request: Request, response: Response) -> Context:  # type: ignore[override]
        refuse_secrets_in_url(request)
        secret = session_secret(request)
        caller = await caller_for_secret(self.db, secret, self.session_policy) if secret else None
        return Context(request=request, response=response, db=self.db, settings=self.settings,
                       request_id=request.state.request_id, client=request.client.host if request.client else "",
                       caller=caller, loaders=Loaders(self.db, caller.school_id if caller else None))


def create_app(settings: Settings, urls: DatabaseUrls) -> Starlette:
    db = Database(urls.app, pool_size=settings.pool_size)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        try:
            async with db.engine.connect() as connection:
                await connection.execute(text("select 1"))
        except Exception:
            log.warning("database not reachable", exc_info=True)
            return JSONResponse({"status": "unavailable"}, status_code=503)
        return JSONResponse({"status": "ready"})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await db.dispose()

    graphql = RollcallGraphQL(db, settings)
    app = Starlette(
        routes=[
            Route("/graphql", graphql, methods=["GET", "POST"]),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
        ],
        lifespan=lifespan,
    )
    app.add_middleware(RequestId)
    app.state.db = db
    return app


def app_from_env() -> Starlette:
    """The factory uvicorn calls in each worker; `rollcall serve` has put both database URLs in the environment."""
    settings = Settings.from_env()
    assert settings.database_url and settings.app_database_url
    return create_app(settings, DatabaseUrls(owner=settings.database_url, app=settings.app_database_url))
