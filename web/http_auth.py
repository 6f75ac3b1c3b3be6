"""Who is asking over HTTP: the bearer token, or the web front end's session cookie (with its CSRF header);
over a WebSocket, the bearer token in `connection_init`, or the session cookie from a page of this server's
own origin."""

from __future__ import annotations

import logging

from cross_web import HTTPException
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import HTTPConnection, Request
from strawberry.http.websocket_origin import is_same_origin, normalize_origin

from db.engine import Database
from db.sessions import BEARER_PREFIXES, SessionPolicy
from tenants.callers import Caller, caller_and_transaction, caller_for_secret

log = logging.getLogger("rollcall.auth")

# The web front end signs in with cookies; a browser that has signed in as a user before keeps a device cookie.
SESSION_COOKIE = "rollcall_session"
CSRF_HEADER = "x-rollcall-csrf"
DEVICE_COOKIE = "rollcall_device"


def bearer_secret(request: Request) -> str | None:
    scheme, _, secret = request.headers.get("authorization", "").partition(" ")
    return secret.strip() if scheme.lower() == "bearer" and secret.strip() else None


def refuse_secrets_in_url(request: Request) -> None:
    # URLs end up in logs, proxies and browser history.
    for name, value in request.query_params.multi_items():
        if name.lower() in {"token", "access_token", "api_token", "apitoken"} or value.startswith(
            BEARER_PREFIXES
        ):
            raise HTTPException(400, "Send tokens in the Authorization header, never in the URL.")


def session_secret(request: Request) -> str | None:
    """The bearer token, or else the session cookie; a cookie-authenticated POST must carry the CSRF header."""
    if secret := bearer_secret(request):
        return secret
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie and request.method == "POST" and not request.headers.get(CSRF_HEADER):
        raise HTTPException(
            403, f"Requests signed in with the session cookie must send the {CSRF_HEADER} header."
        )
    return cookie


async def request_caller(request: Request, db: Database, policy: SessionPolicy) -> Caller | None:
    """Who is asking, from the bearer token or the session cookie."""
    refuse_secrets_in_url(request)
    secret = session_secret(request)
    if not secret:
        return None
    try:
        return await caller_for_secret(db, secret, policy)
    except (SQLAlchemyError, OSError):
        log.warning("could not check a token: the database is not answering", exc_info=True)
        raise _not_answering(request) from None


async def request_caller_and_transaction(
    request: Request, db: Database, policy: SessionPolicy
) -> tuple[Caller | None, AsyncSession | None]:
    """Who is asking, and the open transaction they were found in (tenants.callers.caller_and_transaction):
    the caller's owner must end it."""
    refuse_secrets_in_url(request)
    secret = session_secret(request)
    if not secret:
        return None, None
    try:
        return await caller_and_transaction(db, secret, policy)
    except (SQLAlchemyError, OSError):
        log.warning("could not check a token: the database is not answering", exc_info=True)
        raise _not_answering(request) from None


def _not_answering(request: Request) -> HTTPException:
    return HTTPException(
        503, f"The database is not answering; try again in a moment. (request {request.state.request_id})"
    )


class NotSignedIn(Exception):
    """A WebSocket's `connection_init` that names nobody, or a cookie sent from a page of another origin."""


def websocket_secret(websocket: HTTPConnection, params: object, public_url: str | None) -> str:
    """The secret a WebSocket signs in with: `{"authorization": "Bearer ..."}` in `connection_init`, or else
    the session cookie of the upgrade request, but only from a page of this server's own origin (browsers send
    the cookie whatever page opens the socket: that would be cross-site WebSocket hijacking)."""
    if isinstance(params, dict):
        value = params.get("authorization", params.get("Authorization"))
        if isinstance(value, str) and value:
            scheme, _, secret = value.partition(" ")
            if scheme.lower() != "bearer" or not secret.strip():
                raise NotSignedIn("connection_init's authorization must be `Bearer <token>`.")
            return secret.strip()
    cookie = websocket.cookies.get(SESSION_COOKIE)
    if not cookie:
        raise NotSignedIn('Send {"authorization": "Bearer <token>"} in connection_init.')
    origin = websocket.headers.get("origin")
    if origin is None:
        raise NotSignedIn("A WebSocket signed in with the session cookie must come from a page (Origin).")
    if public_url is not None:
        same = normalize_origin(origin) == normalize_origin(public_url)
    else:
        same = is_same_origin(origin, websocket.headers.get("host"))
    if not same:
        raise NotSignedIn("The session cookie is accepted only from this server's own pages.")
    return cookie
