"""OneRoster 1.2 rostering over HTTP, read-only, at /ims/oneroster/rostering/v1p2; its OAuth 2.0 token endpoint
at /oauth/token.

Only an OAuth access token gets in (tenants.policies.require_oneroster_reader), and the token names the school:
every read runs in that school's scope, under its row-level security, in the transaction the token was
checked in. Lists are one SQL statement each (oneroster/query.py); errors are OneRoster's status-info payload.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote_plus, urlencode

from cross_web import HTTPException
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from db import rostering, throttle
from db.engine import Database, retry_if_disconnected
from db.oauth import granted_scopes, issue_access_token
from db.rostering import Roster
from db.scope import SchoolTransactions
from db.sessions import API_TOKEN_PREFIX, SessionPolicy
from db.text import shown
from oneroster import resources as r
from oneroster.protocol import OneRosterError, fields_of, list_query, unknown_object
from oneroster.query import Scope, exists_one, read_one, read_page, uuid_or_none
from oneroster.resources import Resource
from tenants import policies
from tenants.callers import caller_and_transaction, resolve_caller
from web.http_auth import bearer_secret, refuse_secrets_in_url

PREFIX = "/ims/oneroster/rostering/v1p2"
TOKEN_PATH = "/oauth/token"
MEDIA_TYPE = "application/json"
MAX_TOKEN_BODY = 16 * 1024

log = logging.getLogger("rollcall.oneroster")


def json_response(body: str, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def error_response(error: OneRosterError) -> Response:
    headers = {"WWW-Authenticate": 'Bearer realm="rollcall-oneroster"'} if error.status == 401 else None
    return json_response(json.dumps(error.body()), error.status, headers)


def public_base_url(request: Request, public_url: str | None) -> str:
    """Where links start: the configured public URL, else the address the server listens on (never the
    request's Host header, which a client can forge into the links a consumer follows)."""
    if public_url is not None:
        return public_url.rstrip("/")
    server = request.scope.get("server")
    if not server:
        return ""
    host, port = server
    host = f"[{host}]" if ":" in host else host
    scheme = "https" if request.url.scheme == "https" else "http"
    default = {"http": 80, "https": 443}[scheme]
    return f"{scheme}://{host}" + ("" if port in (None, default) else f":{port}")


@dataclass(frozen=True, slots=True)
class Reader:
    """The app reading, by its access token: its school, the request's transactions, where links start."""

    school_id: uuid.UUID
    transactions: SchoolTransactions
    origin: str

    @property
    def base_url(self) -> str:
        return self.origin + PREFIX


Handler = Callable[[Request, Reader], Awaitable[Response]]


# What a listing keeps to, given the year and the id in the path (None for a top-level list).
ScopeOf = Callable[[Roster, uuid.UUID | None], Scope | None]


def everything(roster: Roster, parent: uuid.UUID | None) -> Scope | None:
    return None


def where_equals(column: str, value: str) -> ScopeOf:
    return lambda roster, parent: lambda src: src.c[column] == value


def with_role(role: str) -> ScopeOf:
    return where_equals("roles.role", role)


def of_type(kind: str) -> ScopeOf:
    return where_equals("type", kind)


def _members(role: str) -> ScopeOf:
    def scope(roster: Roster, parent: uuid.UUID | None) -> Scope:
        assert parent is not None
        member = rostering.member_of_class(roster, parent)
        return lambda src: (src.c["roles.role"] == role) & member(src.c._id)

    return scope


def _classes_of_user(roster: Roster, parent: uuid.UUID | None) -> Scope:
    assert parent is not None
    member = rostering.classes_of_user(roster, parent)
    return lambda src: member(src.c._id)


def _grading_periods_of_term(roster: Roster, parent: uuid.UUID | None) -> Scope:
    return lambda src: (src.c.type == "gradingPeriod") & (src.c["parent.sourcedId"] == str(parent))


def _classes_of_course(roster: Roster, parent: uuid.UUID | None) -> Scope:
    return lambda src: src.c["course.sourcedId"] == str(parent)


@dataclass(frozen=True, slots=True)
class Listing:
    resource: Resource
    scope: ScopeOf = everything


TOP = {
    "orgs": Listing(r.ORGS),
    "schools": Listing(r.SCHOOLS, where_equals("type", "school")),
    "academicSessions": Listing(r.ACADEMIC_SESSIONS),
    "terms": Listing(r.TERMS, of_type("term")),
    "gradingPeriods": Listing(r.GRADING_PERIODS, of_type("gradingPeriod")),
    "courses": Listing(r.COURSES),
    "classes": Listing(r.CLASSES),
    "users": Listing(r.USERS),
    "students": Listing(r.STUDENTS, with_role("student")),
    "teachers": Listing(r.TEACHERS, with_role("teacher")),
    "enrollments": Listing(r.ENROLLMENTS),
}

# parent collection, child path -> what is listed.
NESTED: dict[tuple[str, str], Listing] = {
    ("schools", "classes"): Listing(r.CLASSES),
    ("schools", "students"): Listing(r.STUDENTS, with_role("student")),
    ("schools", "teachers"): Listing(r.TEACHERS, with_role("teacher")),
    ("schools", "enrollments"): Listing(r.ENROLLMENTS),
    ("classes", "students"): Listing(r.STUDENTS, _members("student")),
    ("classes", "teachers"): Listing(r.TEACHERS, _members("teacher")),
    ("teachers", "classes"): Listing(r.CLASSES, _classes_of_user),
    ("students", "classes"): Listing(r.CLASSES, _classes_of_user),
    ("users", "classes"): Listing(r.CLASSES, _classes_of_user),
    ("terms", "classes"): Listing(r.CLASSES),
    ("terms", "gradingPeriods"): Listing(r.GRADING_PERIODS, _grading_periods_of_term),
    ("courses", "classes"): Listing(r.CLASSES, _classes_of_course),
}


def _link_header(request: Request, origin: str, offset: int, limit: int, total: int) -> str:
    params = [(name, value) for name, value in request.query_params.multi_items() if name != "offset"]
    url = origin + request.url.path

    def at(where: int) -> str:
        return f"<{url}?{urlencode([*params, ('offset', str(where))])}>"

    last = max(0, (total - 1) // limit * limit) if total else 0
    links = []
    if offset + limit < total:
        links.append(f'{at(offset + limit)}; rel="next"')
    if offset > 0:
        links.append(f'{at(max(0, offset - limit))}; rel="prev"')
    links += [f'{at(0)}; rel="first"', f'{at(last)}; rel="last"']
    return ", ".join(links)


class OneRoster:
    def __init__(self, db: Database, policy: SessionPolicy, public_url: str | None = None) -> None:
        self.db, self.policy, self.public_url = db, policy, public_url

    async def reader(self, request: Request) -> Reader:
        refuse_secrets_in_url(request)
        secret = bearer_secret(request)
        if secret is None:
            raise OneRosterError(
                401,
                "Send an access token from POST /oauth/token: Authorization: Bearer <token>.",
                "unauthorisedrequest",
            )
        caller, first = await caller_and_transaction(self.db, secret, self.policy)
        try:
            app = policies.require_oneroster_reader(caller)
        except policies.Denied as error:
            if first is not None:
                await first.commit()
                await first.close()
            code = "unauthorisedrequest" if error.status == 401 else "forbidden"
            message = (
                "This access token is unknown, expired or revoked." if error.status == 401 else error.message
            )
            raise OneRosterError(error.status, message, code) from None
        transactions = SchoolTransactions(
            self.db, app.school_id, first, policies.actor_of(app, request.state.request_id)
        )
        return Reader(app.school_id, transactions, public_base_url(request, self.public_url))

    def endpoint(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """One URL: GET (and HEAD) only, the reader checked, every failure a status-info payload."""

        async def endpoint(request: Request) -> Response:
            reader: Reader | None = None
            try:
                if request.method not in ("GET", "HEAD"):
                    error = OneRosterError(
                        405, f"{request.method} is not supported: OneRoster here is read-only.", "invaliddata"
                    )
                    response = error_response(error)
                    response.headers["Allow"] = "GET, HEAD"
                    return response
                reader = await self.reader(request)
                return await handler(request, reader)
            except OneRosterError as error:
                return error_response(error)
            except HTTPException as error:  # a token in the URL
                return error_response(OneRosterError(error.status_code, error.reason, "invaliddata"))
            except (SQLAlchemyError, OSError):
                log.warning("OneRoster read failed: the database is not answering", exc_info=True)
                return error_response(
                    OneRosterError(
                        503, "The database is not answering; try again in a moment.", "server_busy"
                    )
                )
            except Exception:
                request_id = request.state.request_id
                log.exception("OneRoster request failed (request %s)", request_id)
                return error_response(
                    OneRosterError(
                        500, f"Internal server error (request {request_id}).", "internal_server_error"
                    )
                )
            finally:
                if reader is not None:
                    await reader.transactions.finish()

        return endpoint

    def listing(self, listing: Listing, parent: tuple[Listing, str] | None = None) -> Handler:
        resource = listing.resource

        async def handler(request: Request, reader: Reader) -> Response:
            asked = list_query(request.query_params, resource)
            async with reader.transactions.scope() as session:
                roster = await _roster(session, reader)
                parent_id: uuid.UUID | None = None
                if parent is not None:
                    above, what = parent
                    sourced_id = request.path_params["id"]
                    parent_id = uuid_or_none(sourced_id)
                    if parent_id is None or not await exists_one(
                        session, above.resource, roster, sourced_id, above.scope(roster, None)
                    ):
                        raise unknown_object(what, sourced_id)
                page = await read_page(
                    session, resource, roster, asked, reader.base_url, listing.scope(roster, parent_id)
                )
            headers = {
                "X-Total-Count": str(page.total),
                "Link": _link_header(request, reader.origin, asked.offset, asked.limit, page.total),
            }
            return json_response(f'{{"{resource.key}":{page.json}}}', headers=headers)

        return handler

    def item(self, listing: Listing, what: str) -> Handler:
        resource = listing.resource

        async def handler(request: Request, reader: Reader) -> Response:
            fields = fields_of(request.query_params, resource)
            sourced_id = request.path_params["id"]
            async with reader.transactions.scope() as session:
                roster = await _roster(session, reader)
                found = await read_one(
                    session,
                    resource,
                    roster,
                    sourced_id,
                    reader.base_url,
                    fields,
                    listing.scope(roster, None),
                )
            if found is None:
                raise unknown_object(what, sourced_id)
            return json_response(f'{{"{resource.singular}":{found}}}')

        return handler


async def _roster(session: Any, reader: Reader) -> Roster:
    found = await rostering.roster(session, reader.school_id)
    if found is None:  # the school went away under the token
        raise OneRosterError(401, "This access token is unknown, expired or revoked.", "unauthorisedrequest")
    return found


ITEM_NAMES = {
    "orgs": "org",
    "schools": "school",
    "academicSessions": "academic session",
    "terms": "term",
    "gradingPeriods": "grading period",
    "courses": "course",
    "classes": "class",
    "users": "user",
    "students": "student",
    "teachers": "teacher",
    "enrollments": "enrollment",
}


# The token endpoint (RFC 6749 section 4.4): client credentials only.


class TokenError(Exception):
    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status, self.error, self.description = status, error, description

    def response(self) -> Response:
        headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
        if self.status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="rollcall-oauth"'
        if self.status == 429:
            headers["Retry-After"] = "60"
        body = {"error": self.error, "error_description": self.description}
        return json_response(json.dumps(body), self.status, headers)


def _invalid_client() -> TokenError:
    return TokenError(401, "invalid_client", "The client id and secret are not a roster API token's.")


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if not scheme:
        return None
    if scheme.lower() != "basic":
        raise _invalid_client()
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise _invalid_client() from None
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        raise _invalid_client()
    # RFC 6749 section 2.3.1: both are form-urlencoded before they are joined.
    return unquote_plus(client_id), unquote_plus(secret)


async def _form(request: Request) -> dict[str, str]:
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != (
        "application/x-www-form-urlencoded"
    ):
        raise TokenError(400, "invalid_request", "Send the request as application/x-www-form-urlencoded.")
    body = await request.body()
    if len(body) > MAX_TOKEN_BODY:
        raise TokenError(400, "invalid_request", "The request body is too large.")
    try:
        pairs = parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        raise TokenError(400, "invalid_request", "The request body cannot be read.") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise TokenError(400, "invalid_request", f"'{shown(name)}' is sent more than once.")
        if "\x00" in value:
            raise TokenError(400, "invalid_request", f"'{shown(name)}' contains a NUL character.")
        form[name] = value
    return form


def _client_address(request: Request) -> str:
    return request.client.host if request.client else ""


def token_endpoint(db: Database, policy: SessionPolicy) -> Callable[[Request], Awaitable[Response]]:
    async def issue(request: Request) -> Response:
        try:
            if request.method != "POST":
                raise TokenError(405, "invalid_request", "Ask for a token with POST.")
            if request.query_params:
                raise TokenError(400, "invalid_request", "Send the parameters in the body, never in the URL.")
            form = await _form(request)
            basic = _basic_credentials(request)
            if basic is not None and ("client_id" in form or "client_secret" in form):
                raise TokenError(400, "invalid_request", "Send the client's credentials one way only.")
            grant = form.get("grant_type")
            if grant is None:
                raise TokenError(400, "invalid_request", "grant_type is missing.")
            if grant != "client_credentials":
                raise TokenError(
                    400, "unsupported_grant_type", "Only grant_type=client_credentials is supported."
                )
            client_id, secret = basic or (form.get("client_id", ""), form.get("client_secret", ""))
            if not client_id or not secret or len(client_id) > 64 or len(secret) > 256:
                raise _invalid_client()
            return await _exchange(db, policy, request, client_id, secret, form.get("scope"))
        except TokenError as error:
            return error.response()
        except HTTPException as error:  # a body over the size limit
            return TokenError(error.status_code, "invalid_request", error.reason).response()
        except (SQLAlchemyError, OSError):
            log.warning("could not issue a token: the database is not answering", exc_info=True)
            return TokenError(
                503, "temporarily_unavailable", "The database is not answering; try again."
            ).response()

    return issue


async def _exchange(
    db: Database, policy: SessionPolicy, request: Request, client_id: str, secret: str, scope: str | None
) -> Response:
    # Counted before the secret is checked, as a sign-in is (db/throttle.py).
    attempt = await throttle.count_attempt(
        db, account=f"oauth-client:{client_id}", client=_client_address(request), known=False
    )
    if attempt.refused:
        raise TokenError(429, "invalid_request", "Too many attempts for this client; try again later.")
    await throttle.slow_down(attempt)
    scopes = granted_scopes(scope)
    if not secret.startswith(API_TOKEN_PREFIX):
        raise _invalid_client()

    async def exchange() -> Any:
        async with db.sessionmaker() as session, session.begin():
            caller = await resolve_caller(await session.connection(), secret, policy)
            try:
                app = policies.require_oauth_client(caller, client_id)
            except policies.Denied:
                raise _invalid_client() from None
            if not scopes:
                raise TokenError(
                    400, "invalid_scope", "None of the scopes asked for can be granted to this client."
                )
            return await issue_access_token(
                session, school_id=app.school_id, client_id=app.token_id, scopes=scopes
            )

    token = await retry_if_disconnected(exchange)
    await throttle.succeeded(db, attempt)
    body = {
        "access_token": token.secret,
        "token_type": "Bearer",
        "expires_in": token.expires_in,
        "scope": " ".join(token.scopes),
    }
    return json_response(json.dumps(body), headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


def _not_found(path: str) -> Handler:
    async def handler(request: Request, reader: Reader) -> Response:
        raise OneRosterError(404, f"There is nothing at {shown(request.url.path)}.", "unknownobject")

    return handler


def oneroster_routes(db: Database, policy: SessionPolicy, public_url: str | None = None) -> list[BaseRoute]:
    service = OneRoster(db, policy, public_url)
    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
    routes: list[BaseRoute] = []
    for name, listing in TOP.items():
        routes.append(Route(f"/{name}", service.endpoint(service.listing(listing)), methods=methods))
        routes.append(
            Route(
                f"/{name}/{{id}}", service.endpoint(service.item(listing, ITEM_NAMES[name])), methods=methods
            )
        )
    for (parent, child), listing in NESTED.items():
        handler = service.listing(listing, (TOP[parent], ITEM_NAMES[parent]))
        routes.append(Route(f"/{parent}/{{id}}/{child}", service.endpoint(handler), methods=methods))
    routes.append(Route("/{rest:path}", service.endpoint(_not_found("")), methods=methods))
    return [
        Route(TOKEN_PATH, token_endpoint(db, policy), methods=methods),
        Mount(PREFIX, routes=routes),
    ]
