"""`GET /login-cards?classId=…` (or `?userIds=a,b`): an A4 page of login cards, for the browser to print.

A plain page rather than GraphQL, so a teacher can open it in a tab (signed in by the session cookie) and
print it. The answer holds login codes, so it is never cached and runs no script.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from cross_web import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from db.engine import Database
from db.errors import DomainError, ErrorCode
from db.login_cards import signin as qr_signin
from db.login_cards.sheet import login_card_sheet
from db.scope import school_scope
from db.sessions import SessionPolicy
from db.text import shown
from tenants import policies
from web.graphql_http import refusal_response
from web.http_auth import request_caller

HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


class BadSelection(Exception):
    """The query string does not say which cards to print."""


def _plain(status: int, message: str, **headers: str) -> Response:
    """A refusal, in the shape a GraphQL error has (the front end shows it as it shows those)."""
    return refusal_response(status, message, headers={**HEADERS, **headers})


def _id(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value.strip())
    except ValueError:
        raise BadSelection(f"'{shown(value)}' is not {what} id.") from None


def _selection(request: Request) -> tuple[uuid.UUID | None, list[uuid.UUID] | None]:
    class_id, user_ids = request.query_params.get("classId"), request.query_params.get("userIds")
    if (class_id is None) == (user_ids is None):
        raise BadSelection(
            "Say which cards to print: ?classId=<class id> or ?userIds=<id>,<id>,… (not both)."
        )
    if class_id is not None:
        return _id(class_id, "a class"), None
    assert user_ids is not None
    return None, [_id(value, "a user") for value in user_ids.split(",") if value.strip()]


def sheet_endpoint(
    db: Database, policy: SessionPolicy, *, secret: bytes
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            caller = policies.require_card_printer(await request_caller(request, db, policy))
        except HTTPException as error:
            return _plain(error.status_code, error.reason)
        except policies.Denied as error:
            challenge = {"WWW-Authenticate": "Bearer"} if error.status == 401 else {}
            return _plain(error.status, error.message, **challenge)
        try:
            class_id, user_ids = _selection(request)
            async with school_scope(db, caller.school_id) as session:
                found = await qr_signin.login_cards(
                    session,
                    school_id=caller.school_id,
                    secret=secret,
                    actor=policies.actor_of(caller, request.state.request_id),
                    sees_every_pupil=policies.sees_every_pupil(caller),
                    class_id=class_id,
                    user_ids=user_ids,
                    via="sheet",
                )
        except BadSelection as error:
            return _plain(400, str(error))
        except qr_signin.CardsForbidden as error:
            return _plain(403, str(error))
        except DomainError as error:
            problem = error.problems[0]
            return _plain(404 if problem.code == ErrorCode.NOT_FOUND else 400, problem.message)
        sheet = login_card_sheet(
            [card.view() for card in found.cards], school_name=found.school_name, title=found.title
        )
        return HTMLResponse(sheet, headers=HEADERS)

    return endpoint
