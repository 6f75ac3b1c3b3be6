"""Who is asking over HTTP: the bearer token, or the web front end's session cookie (with its CSRF header)."""

from __future__ import annotations

import logging

from cross_web import HTTPException
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request

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
