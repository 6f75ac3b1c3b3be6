"""The per-request context every resolver receives."""

from __future__ import annotations

from dataclasses import dataclass

import strawberry
from starlette.requests import Request
from starlette.responses import Response

from db.engine import Database
from db.settings import Settings
from tenants.callers import Caller


@dataclass(slots=True)
class Context:
    request: Request
    response: Response
    db: Database
    settings: Settings
    request_id: str
    caller: Caller | None


Info = strawberry.Info[Context, None]
