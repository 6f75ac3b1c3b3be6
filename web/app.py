"""The Starlette application: GraphQL at /graphql, SCIM at /scim/v2, liveness at /healthz, readiness at
/readyz."""

from __future__ import annotations

import contextlib
import gc
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

from cross_web import AsyncHTTPRequestAdapter, HTTPException
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError, MissingQueryError
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData
from strawberry.http.base import BaseRequestProtocol
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.subscriptions.protocols.graphql_transport_ws import types as transport_ws
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import BaseGraphQLTransportWSHandler
from strawberry.subscriptions.protocols.graphql_transport_ws.types import SubscribeMessage
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType
from strawberry.types.unset import UNSET, UnsetType

from db.embedded import DatabaseUrls
from db.engine import Database
from db.scope import SchoolTransactions
from gql.compiled import CompiledReads
from gql.context import Context
from gql.errors import client_error
from gql.loaders import Loaders
from gql.persisted import PersistedQueries, Refused
from gql.schema import build_schema
from oneroster.routes import oneroster_routes
from scim.routes import scim_routes
from tenants import policies
from tenants.callers import Person
from web.background import BackgroundTasks
from web.bodies import BadBody, place_files, read_json
from web.exports import users_csv
from web.graphiql import STATIC_PATH, ServedGraphiQL, graphiql_static
from web.graphql_http import GraphQLOverHTTP, refusal_response
from web.http_auth import (
    CSRF_HEADER,
    NotSignedIn,
    bearer_secret,
    request_caller_and_transaction,
    websocket_secret,
)
from web.login_card_sheet import sheet_endpoint
from web.settings import Settings
from web.telemetry import RequestId, configure_logging, metrics_endpoint

log = logging.getLogger("rollcall")
# Operations one WebSocket may run at once (each subscription polls the database until it ends).
MAX_OPERATIONS = 16
SUBSCRIPTIONS_OVER_HTTP = "Subscriptions are answered over a WebSocket only: connect to /graphql with the graphql-transport-ws protocol."


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


def _message_problem(message: object) -> str | None:
    """What makes a graphql-transport-ws message one the protocol does not define (the socket is then closed
    with 4400), or None. Unknown types and missing keys Strawberry's handler refuses itself."""
    if not isinstance(message, dict):
        return "A message must be a JSON object."
    kind = message.get("type")
    if not isinstance(kind, str):
        return "A message's type must be a string."
    if kind in ("subscribe", "complete") and not isinstance(message.get("id", ""), str):
        return f"The id of a {kind} message must be a string."
    if kind != "subscribe":
        return None
    payload = message.get("payload")
    if not isinstance(payload, dict) or not isinstance(payload.get("query"), str):
        return "A subscribe message's payload must be an object with the query as a string."
    for key, kinds in (("variables", dict), ("operationName", str), ("extensions", dict)):
        if not isinstance(payload.get(key), kinds | None):
            return f"A subscribe message's {key} must be {'an object' if kinds is dict else 'a string'}."
    return None


class LiveConnection(BaseGraphQLTransportWSHandler[Context, None]):
    """A graphql-transport-ws connection that looks its caller up again for every operation it starts, runs at
    most MAX_OPERATIONS at once, and closes with 4400 on any message the protocol does not define."""

    async def handle(self) -> None:
        try:
            await super().handle()
        except HTTPException as error:
            # decode_json refuses the frame as it refuses such a request body (not JSON, nested too deep, not an
            # object or list); the handler has already ended every operation of the socket.
            await self.handle_invalid_message(
                f"The message is not JSON that can be read: {error.reason}"[:120]
            )

    async def handle_message(self, message: transport_ws.Message) -> None:
        problem = _message_problem(message)
        if problem is not None:
            await self.handle_invalid_message(problem)
            return
        await super().handle_message(message)

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        if (
            self.connection_acknowledged
            and message["id"] not in self.operations
            and len(self.operations) >= MAX_OPERATIONS
        ):
            # Refused on its own: the operations already running go on.
            refusal = client_error(
                f"A connection runs at most {MAX_OPERATIONS} operations at once: complete one before starting "
                "another.",
                "BAD_REQUEST",
            )
            await self.send_message({"id": message["id"], "type": "error", "payload": [refusal.formatted]})
            return
        if self.connection_acknowledged:
            try:
                await self.context.recheck_caller()
            except Exception:
                log.warning("could not check a WebSocket's caller", exc_info=True)
                await self.websocket.close(code=1011, reason="The database is not answering; try again.")
                return
        await super().handle_subscribe(message)


class RollcallGraphQL(GraphQLOverHTTP, ServedGraphiQL, GraphQL[Context, None]):
    graphql_transport_ws_handler_class = LiveConnection

    def __init__(self, db: Database, settings: Settings, background: BackgroundTasks) -> None:
        super().__init__(
            build_schema(introspection=settings.introspection),
            graphql_ide="graphiql" if settings.graphiql else None,
            allow_queries_via_get=True,
            multipart_uploads_enabled=True,
            subscription_protocols=[GRAPHQL_TRANSPORT_WS_PROTOCOL],
            # Any page may open the socket; only a bearer token, or the cookie from this server's own pages,
            # signs it in (on_ws_connect).
            allowed_origins=["*"],
            # LiveConnection refuses one more with its own message before Strawberry's limit is reached.
            max_subscriptions_per_connection=MAX_OPERATIONS,
        )
        self.db = db
        self.settings = settings
        self.background = background
        self.session_policy = settings.session_policy
        self.persisted = PersistedQueries()

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

    def should_render_graphql_ide(self, request: BaseRequestProtocol) -> bool:
        # A GET with only a persisted query's hash is a query, not a visit to GraphiQL.
        return super().should_render_graphql_ide(request) and "extensions" not in request.query_params

    async def execute_single(
        self,
        request: Request,
        request_adapter: AsyncHTTPRequestAdapter,
        sub_response: Response,
        context: Context,
        root_value: None,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        # Automatic persisted queries (gql.persisted), on GET and POST alike.
        query = self.persisted.resolve(request_data.query, request_data.extensions)
        if isinstance(query, Refused):
            return ExecutionResult(data=None, errors=[query.error])
        # Strawberry's own execute_single, but a subscription is never run over HTTP (it would be run as a
        # query, and its field cannot answer one): it is refused, pointing at the WebSocket.
        method = request_adapter.method
        try:
            return await self.schema.execute(
                query,
                root_value=root_value,
                variable_values=request_data.variables,
                context_value=context,
                operation_name=request_data.operation_name,
                allowed_operation_types=OperationType.from_http(method) - {OperationType.SUBSCRIPTION},
                operation_extensions=request_data.extensions,
            )
        except CannotGetOperationTypeError as error:
            raise HTTPException(400, error.as_http_error_reason()) from None
        except InvalidOperationTypeError as error:
            if error.operation_type == OperationType.SUBSCRIPTION:
                raise HTTPException(400, SUBSCRIPTIONS_OVER_HTTP) from None
            raise HTTPException(400, error.as_http_error_reason(method)) from None
        except MissingQueryError:
            raise HTTPException(400, "No GraphQL query found in the request") from None

    async def process_result(self, request: Request, result: ExecutionResult) -> GraphQLHTTPResponse:
        if request.headers.get("content-type", "").startswith("multipart/"):
            # Uploaded files are closed here, also when a permission check kept the resolver from reading them.
            await (await request.form()).close()
        return await super().process_result(request, result)

    async def get_context(self, request: Request | WebSocket, response: Response | WebSocket) -> Context:
        if isinstance(request, WebSocket):
            # Nobody yet: connection_init says who (on_ws_connect).
            return Context(
                request=request,
                response=Response(),
                db=self.db,
                settings=self.settings,
                request_id=uuid.uuid4().hex,
                client=request.client.host if request.client else "",
                caller=None,
                loaders=Loaders(self.db, None),
                background=self.background,
            )
        if (
            request.headers.get("content-type", "").startswith("multipart/")
            and not bearer_secret(request)
            and not request.headers.get(CSRF_HEADER)
        ):
            raise HTTPException(403, f"File uploads need a bearer token or the {CSRF_HEADER} header.")
        caller, first = await request_caller_and_transaction(request, self.db, self.session_policy)
        transactions = (
            SchoolTransactions(
                self.db, caller.school_id, first, policies.actor_of(caller, request.state.request_id)
            )
            if caller is not None
            else None
        )
        try:
            policies.require_not_provider(caller)
        except policies.Denied as error:
            if transactions is not None:
                await transactions.finish()
            raise HTTPException(error.status, error.message) from None
        assert isinstance(response, Response)
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
            background=self.background,
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

    async def on_ws_connect(self, context: Context) -> UnsetType:
        """connection_init: a bearer token in its payload, or the session cookie from this server's own pages;
        anything else closes the socket (4403)."""
        try:
            secret = websocket_secret(context.request, context.connection_params, self.settings.public_url)
            context.secret = secret
            caller = policies.require_caller(policies.require_not_provider(await context.recheck_caller()))
        except (NotSignedIn, policies.Denied) as error:
            log.info("WebSocket refused: %s", error)
            raise ConnectionRejectionError from None
        except Exception:
            log.warning("could not check a WebSocket's caller", exc_info=True)
            raise ConnectionRejectionError from None
        context.loaders = Loaders(self.db, caller.school_id)
        return cast(UnsetType, UNSET)  # the plain connection_ack


def create_app(settings: Settings, urls: DatabaseUrls) -> Starlette:
    db = Database(urls.app, pool_size=settings.pool_size, pooler=settings.db_pooler)
    # The work requests start and do not wait for (an import's apply): this worker's, ended by the lifespan.
    background = BackgroundTasks()

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
        # Everything built at start-up (the schema, the ORM's mappers, compiled statements) lives as long as the
        # worker: moved out of the collector's sight, so a full collection no longer walks it in the middle of
        # requests (it made the roster page's p99 over three times its p50 under load).
        gc.collect()
        gc.freeze()
        yield
        await background.shutdown(settings.shutdown_grace_seconds)
        await db.dispose()
        gc.unfreeze()

    graphql = RollcallGraphQL(db, settings, background)
    # Roster reads it can compile into one SQL statement, and plain sign-ins, are answered in front of Strawberry.
    endpoint = (
        CompiledReads(graphql, db, graphql.session_policy, settings) if settings.compiled_reads else graphql
    )
    app = Starlette(
        routes=[
            Route("/graphql", endpoint, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql),
            Route("/users.csv", users_csv(db, graphql.session_policy)),
            Route(
                "/login-cards", sheet_endpoint(db, graphql.session_policy, secret=settings.login_code_secret)
            ),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            *([Route("/metrics", metrics_endpoint(settings.metrics_token))] if settings.metrics else []),
            *([Mount(STATIC_PATH, graphiql_static())] if settings.graphiql else []),
            scim_routes(db, graphql.session_policy, settings.public_url),
            *oneroster_routes(db, graphql.session_policy, settings.public_url),
        ],
        lifespan=lifespan,
    )
    # Room for the largest roster file plus the multipart envelope around it.
    app.add_middleware(BodyLimit, limit=settings.import_max_bytes + 64 * 1024)
    app.add_middleware(RequestId)
    app.state.db = db
    app.state.background = background
    return app


def app_from_env() -> Starlette:
    """The factory uvicorn calls in each worker; `rollcall serve` has put both database URLs in the environment."""
    settings = Settings.from_env()
    configure_logging(json_lines=settings.json_logs)
    assert settings.database_url and settings.app_database_url
    return create_app(settings, DatabaseUrls(owner=settings.database_url, app=settings.app_database_url))
