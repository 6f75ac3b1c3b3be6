"""Top-level GraphQL errors: who may not ask, the masking of everything unexpected, and how errors are logged."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from graphql import GraphQLError
from strawberry.extensions import MaskErrors
from strawberry.types import ExecutionContext

from web.telemetry import operation_label

log = logging.getLogger("rollcall.errors")

# Errors raised on purpose carry one of these codes and are shown as they are.
PUBLIC_CODES = {
    "UNAUTHENTICATED",
    "FORBIDDEN",
    "BAD_REQUEST",
    "RATE_LIMITED",
    "PASSWORD_CHANGE_REQUIRED",
    "QUERY_TOO_COSTLY",
    "RESYNC_REQUIRED",
}


def client_error(message: str, code: str) -> GraphQLError:
    return GraphQLError(message, extensions={"code": code})


def _is_internal(error: GraphQLError) -> bool:
    if error.original_error is None:
        return False  # parsing and validation errors speak about the query itself
    code = (error.extensions or {}).get("code")
    if code in PUBLIC_CODES:
        return False
    # A GraphQLError underneath is the query's own fault: a value that does not fit its type, or one of ours
    # raised with a public code. Anything else is a failure of the server.
    return not isinstance(error.original_error, GraphQLError)


def error_code(error: GraphQLError) -> str:
    code = (error.extensions or {}).get("code")
    if isinstance(code, str):
        return code
    if error.original_error is None:
        return "GRAPHQL_VALIDATION_FAILED"
    return "BAD_USER_INPUT" if isinstance(error.original_error, GraphQLError) else "INTERNAL_SERVER_ERROR"


def log_errors(errors: Sequence[GraphQLError], execution_context: ExecutionContext | None) -> None:
    """One line per error: its code, path, operation and request id. Never the document or the variables, and
    the message only when it is one of ours: graphql-core's own messages quote the literals and values that
    were sent (a password written in the query, a login code in a variable)."""
    context = execution_context.context if execution_context is not None else None
    request_id = getattr(context, "request_id", None) or "-"
    operation = operation_label(execution_context.operation_name if execution_context else None)
    for error in errors:
        code = error_code(error)
        where = ".".join(str(key) for key in error.path or ()) or "-"
        if _is_internal(error):
            log.error(
                "graphql error %s at %s in %s (request %s)",
                code,
                where,
                operation,
                request_id,
                exc_info=error.original_error,
            )
        else:
            told = f": {error.message}" if code in PUBLIC_CODES else ""
            log.info("graphql error %s at %s in %s (request %s)%s", code, where, operation, request_id, told)


class MaskInternalErrors(MaskErrors):
    """Hide internal failures from the client, with the request id the client sees (log_errors logs them)."""

    def __init__(self) -> None:
        super().__init__(should_mask_error=_is_internal, error_message="Internal server error.")

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        request_id = getattr(self.execution_context.context, "request_id", None)
        return GraphQLError(
            message=self.error_message,
            nodes=error.nodes,
            source=error.source,
            positions=error.positions,
            path=error.path,
            original_error=None,
            extensions={"code": "INTERNAL_SERVER_ERROR", "requestId": request_id},
        )
