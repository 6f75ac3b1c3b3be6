"""What the server shows about itself: a request id on every log line, structured logs, Prometheus metrics."""

from __future__ import annotations

import hmac
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from datetime import UTC, datetime

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.extensions import SchemaExtension

from db.text import escaped

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
access = logging.getLogger("rollcall.access")

REQUESTS = Counter("rollcall_http_requests", "HTTP requests answered", ["method", "route", "status"])
OPERATION_SECONDS = Histogram(
    "rollcall_graphql_operation_seconds",
    "GraphQL operations by name and type",
    ["operation", "type"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SIGN_IN_FAILURES = Counter(
    "rollcall_sign_in_failures", "Refused sign-ins (wrong school, user, password or code)", ["method"]
)
THROTTLED = Counter("rollcall_throttled_attempts", "Attempts refused by throttling", ["what"])
IMPORT_JOBS = Counter("rollcall_import_jobs", "Import jobs by outcome", ["outcome"])

# Operation names come from clients: only short plain names are shown, and only so many of them get a series
# of their own (every label value is kept until restart), the rest counting as "other".
OPERATION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
MAX_OPERATION_LABELS = 200
_operation_labels: set[str] = set()


def operation_label(name: str | None) -> str:
    """How an operation is named in logs: its own name when short and plain, else "other"."""
    if name is None:
        return "anonymous"
    return name if OPERATION_NAME.fullmatch(name) else "other"


def observe_operation(name: str | None, kind: str, seconds: float) -> None:
    label = operation_label(name)
    if label not in _operation_labels:
        if len(_operation_labels) >= MAX_OPERATION_LABELS:
            label = "other"
        else:
            _operation_labels.add(label)
    OPERATION_SECONDS.labels(label, kind).observe(seconds)


class RequestId:
    """Gives every request an id: in `request.state`, in the log context and in the `X-Request-Id` header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        token = request_id.set(rid)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", rid.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            REQUESTS.labels(scope["method"], route, str(status)).inc()
            # The path only, never the query string: it could carry something secret by mistake.
            access.info(
                "%s %s %d %.1fms",
                scope["method"],
                scope["path"],
                status,
                (time.perf_counter() - started) * 1000,
            )
            request_id.reset(token)


class OperationMetrics(SchemaExtension):
    """Times each GraphQL operation under its name (anonymous ones as "anonymous")."""

    def on_operation(self) -> Iterator[None]:
        started = time.perf_counter()
        yield
        context = self.execution_context
        if context.graphql_document is None:
            return  # the document did not parse: no operation ran
        observe_operation(context.operation_name, context.operation_type.value, time.perf_counter() - started)


def metrics_endpoint(token: str | None) -> Callable[[Request], Awaitable[Response]]:
    """Prometheus text format, for anyone or only for `Authorization: Bearer <token>`; with several workers,
    the shared multiprocess directory is read."""
    expected = f"Bearer {token}".encode() if token else None

    async def metrics(request: Request) -> Response:
        if expected is not None and not hmac.compare_digest(
            request.headers.get("authorization", "").encode(), expected
        ):
            return Response(
                "Send the metrics token: Authorization: Bearer <token>.",
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return metrics


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get() or "-"
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Readable lines, one per record. What a client sent reaches the message (a request's path, decoded; an
    error's text), so the line is escaped (db.text.escaped): a newline, ESC or NUL in it is shown as \\x0a,
    \\x1b or \\x00 and cannot forge a line or drive a terminal. A traceback keeps its own lines, each escaped
    and indented, so none of them can pass for a record either. (JSON lines escape control characters
    already.)"""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s [%(request_id)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        line = escaped(self.formatMessage(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        for block in (record.exc_text, self.formatStack(record.stack_info) if record.stack_info else None):
            if block:
                line += "".join(f"\n    {escaped(part)}" for part in block.splitlines())
        return line


def configure_logging(*, json_lines: bool, level: str = "INFO") -> None:
    """JSON lines in production, readable lines in development; the request id on every line."""
    handler = logging.StreamHandler()
    handler.addFilter(_RequestIdFilter())
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # RequestId logs each request itself, with its id and without the query string.
    logging.getLogger("uvicorn.access").handlers[:] = []
    logging.getLogger("uvicorn.access").propagate = False


def count_refused_sign_in(codes: set[str], method: str) -> None:
    if "RATE_LIMITED" in codes:
        THROTTLED.labels(method).inc()
    else:
        SIGN_IN_FAILURES.labels(method).inc()
