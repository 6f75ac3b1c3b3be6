"""Top-level GraphQL errors: who may not ask, and the masking of everything unexpected."""

from __future__ import annotations

import logging

from graphql import GraphQLError
from strawberry.extensions import MaskErrors

log = logging.getLogger("rollcall.errors")

# Errors raised on purpose carry one of these codes and are shown as they are.
PUBLIC_CODES = {"UNAUTHENTICATED", "FORBIDDEN", "BAD_REQUEST", "RATE_LIMITED", "PASSWORD_CHANGE_REQUIRED"}


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


class MaskInternalErrors(MaskErrors):
    """Hide internal failures from the client; log them once with the request id the client sees."""

    def __init__(self) -> None:
        super().__init__(should_mask_error=_is_internal, error_message="Internal server error.")

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        request_id = getattr(self.execution_context.context, "request_id", None)
        log.error("internal error in %s (request %s)", error.path, request_id, exc_info=error.original_error)
        return GraphQLError(
            message=self.error_message, nodes=error.nodes, source=error.source, positions=error.positions,
            path=error.path, original_error=None,
            extensions={"code": "INTERNAL_SERVER_ERROR", "requestId": request_id},
        )
