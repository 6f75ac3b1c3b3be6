"""`GET /users.csv`: the school's active users in the import format, which is also the upload template."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from cross_web import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from db.engine import Database
from db.imports.jobs import export_rows
from db.imports.roster_csv import export_lines
from db.schools import get_school
from db.scope import school_scope
from db.sessions import SessionPolicy
from tenants import policies
from web.graphql_http import refusal_response
from web.http_auth import request_caller


def users_csv(db: Database, policy: SessionPolicy) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            caller = policies.require_roster_exporter(await request_caller(request, db, policy))
        except HTTPException as error:
            return refusal_response(error.status_code, error.reason)
        except policies.Denied as error:
            return refusal_response(error.status, error.message)
        async with school_scope(db, caller.school_id) as session:
            school = await get_school(session, caller.school_id)
            rows = await export_rows(session, school_id=caller.school_id)
        assert school is not None
        return StreamingResponse(
            export_lines(rows),
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="{school.slug}-users.csv"',
                "Cache-Control": "no-store",
            },
        )

    return endpoint
