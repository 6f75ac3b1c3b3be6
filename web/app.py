"""The Starlette application: GraphQL at /graphql, SCIM at /scim/v2, liveness at /healthz, readiness at
/readyz."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any, cast

from cross_web import AsyncHTTPRequestAdapter, HTTPException
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLHTTPResponse
from strawberry.types import ExecutionResult
from strawberry.types.unset import UNSET

from db.embedded import DatabaseUrls
from db.engine import Database
from db.scope import SchoolTransactions
from gql.compiled import CompiledReads
from gql.context import Context
from gql.loaders import Loaders
from gql.schema import build_schema
from scim.routes import scim_routes
from tenants import policies
from tenants.callers import Person
from web.bodies import BadBody, place_files, read_json
from web.exports import users_csv
from web.graphiql import STATIC_PATH, ServedGraphiQL, graphiql_static
from web.graphql_http import GraphQLOverHTTP, refusal_response
from web.http_auth import CSRF_HEADER, bearer_secret, request_caller_and_transaction
from web.login_card_sheet import sheet_endpoint
from web.settings import Settings
from web.telemetry import RequestId, configure_logging, metrics_endpoint

log = logging.getLogger("rollcall")


class BodyLimit:
    """Refuses request bodies over `limit` bytes with 413, whether or not they declare their length."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await PlainTextResponse("The request is too large.", status_code=413)(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise HTTPException(413, "The request is too large.")
            return message

        await self.app(scope, counted, send)


class RollcallGraphQL(GraphQLOverHTTP, ServedGraphiQL, GraphQL[Context, None]):
    def __init__(self, db: Database, settings: Settings) -> None:
        super().__init__(
            build_schema(introspection=settings.introspection),
            graphql_ide="graphiql" if settings.graphiql else None,
            allow_queries_via_get=True,
            multipart_uploads_enabled=True,
        )
        self.db = db
        self.settings = settings
        self.session_policy = settings.session_policy

    def decode_json(self, data: str | bytes) -> object:
        try:
            decoded = read_json(data)
        except BadBody as error:
            raise HTTPException(400, str(error)) from None
        if not isinstance(decoded, dict | list):
            raise HTTPException(400, "The request body must be a JSON object.")
        return decoded

    async def parse_multipart(self, request: AsyncHTTPRequestAdapter) -> dict[str, Any]:
        try:
            form = cast(FormData, (await request.get_form_data()).form)
        except ValueError:
            raise HTTPException(400, "The multipart body cannot be read.") from None
        try:
            operations, files_map = form.get("operations", "{}"), form.get("map", "{}")
            placed: dict[str, Any] = place_files(
                self.decode_json(operations) if isinstance(operations, str) else operations,
                self.decode_json(files_map) if isinstance(files_map, str) else files_map,
                form,
            )
            return placed
        except (HTTPException, BadBody) as error:
            # process_result, which closes the uploaded files, is never reached.
            await form.close()
            raise HTTPException(400, str(error) if isinstance(error, BadBody) else error.reason) from None

    async def process_result(self, request: Request, result: ExecutionResult) -> GraphQLHTTPResponse:
        if request.headers.get("content-type", "").startswith("multipart/"):
            # Uploaded files are closed here, also when a permission check kept the resolver from reading them.
            await (await request.form()).close()
        return await super().process_result(request, result)

    async def get_context(self, request: Request, response: Response) -> Context:  # type: ignore[override]
        if (
            request.headers.get("content-type", "").startswith("multipart/")
            and not bearer_secret(request)
            and not request.headers.get(CSRF_HEADER)
        ):
            raise HTTPException(403, f"File uploads need a bearer token or the {CSRF_HEADER} header.")
        caller, first = await request_caller_and_transaction(request, self.db, self.session_policy)
        transactions = SchoolTransactions(self.db, caller.school_id, first) if caller is not None else None
        try:
            policies.require_not_provider(caller)
        except policies.Denied as error:
            if transactions is not None:
                await transactions.finish()
            raise HTTPException(error.status, error.message) from None
        context = Context(
            request=request,
            response=response,
            db=self.db,
            settings=self.settings,
            request_id=request.state.request_id,
            client=request.client.host if request.client else "",
            caller=caller,
            loaders=Loaders(
                self.db,
                caller.school_id if caller else None,
                transactions,
                viewer_id=caller.user_id if isinstance(caller, Person) else None,
            ),
            transactions=transactions,
        )
        request.state.graphql_context = context
        return context

    async def run(self, request: Request, context: Any = UNSET, root_value: Any = UNSET) -> Any:  # type: ignore[override]
        try:
            return await super().run(request, context, root_value)
        except HTTPException as error:
            # Refused before any GraphQL ran: said as a GraphQL error, so GraphQL clients show it.
            return refusal_response(error.status_code, error.reason, accept=request.headers.get("accept"))
        finally:
            # The caller's own transaction ends with the operation, before the response is sent.
            made: Context | None = getattr(request.state, "graphql_context", None)
            if made is not None:
                await made.finish()


def create_app(settings: Settings, urls: DatabaseUrls) -> Starlette:
    db = Database(urls.app, pool_size=settings.pool_size, pooler=settings.db_pooler)

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
    # Roster reads it can compile into one SQL statement are answered in front of Strawberry.
    endpoint = CompiledReads(graphql, db, graphql.session_policy) if settings.compiled_reads else graphql
    app = Starlette(
        routes=[
            Route("/graphql", endpoint, methods=["GET", "POST"]),
            Route("/users.csv", users_csv(db, graphql.session_policy)),
            Route(
                "/login-cards", sheet_endpoint(db, graphql.session_policy, secret=settings.login_code_secret)
            ),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            *([Route("/metrics", metrics_endpoint(settings.metrics_token))] if settings.metrics else []),
            *([Mount(STATIC_PATH, graphiql_static())] if settings.graphiql else []),
            scim_routes(db, graphql.session_policy, settings.public_url),
        ],
        lifespan=lifespan,
    )
    # Room for the largest roster file plus the multipart envelope around it.
    app.add_middleware(BodyLimit, limit=settings.import_max_bytes + 64 * 1024)
    app.add_middleware(RequestId)
    app.state.db = db
    return app


def app_from_env() -> Starlette:
    """The factory uvicorn calls in each worker; `rollcall serve` has put both database URLs in the environment."""
    settings = Settings.from_env()
    configure_logging(json_lines=settings.json_logs)
    assert settings.database_url and settings.app_database_url
    return create_app(settings, DatabaseUrls(owner=settings.database_url, app=settings.app_database_url))
