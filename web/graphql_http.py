"""GraphQL over HTTP as its specification describes it: the answer's media type, and the status of a request
that could not be run.

A client that asks for `application/graphql-response+json` gets it: a request error (the document does not
parse, does not validate, or its variables do not fit) is answered 400 with `errors` and no `data` entry,
and a request that ran is answered 200. A client that asks for `application/json`, for anything (`*/*`), or
sends no Accept header gets `application/json` as before: 200 with `"data": null` for a request error.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocket
from strawberry.http import GraphQLHTTPResponse
from strawberry.types import ExecutionResult

GRAPHQL_RESPONSE = "application/graphql-response+json"
JSON = "application/json"


# The code an HTTP-level refusal carries in `extensions.code`, by its status.
_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "REQUEST_TOO_LARGE",
    503: "SERVICE_UNAVAILABLE",
}


def refusal_response(
    status: int, message: str, *, accept: str | None = None, headers: dict[str, str] | None = None
) -> Response:
    """A request refused before any GraphQL ran (no CSRF header, an upload without a token, a mutation over
    GET, a bad id in a page's query string), answered as a GraphQL error would be: `{"errors": [{"message",
    "extensions": {"code"}}]}`, with the HTTP status, so a GraphQL client shows it like any other error."""
    body = {"errors": [{"message": message, "extensions": {"code": _CODES.get(status, "BAD_REQUEST")}}]}
    media_type = response_media_type(accept) if accept is not None else JSON
    return JSONResponse(body, status_code=status, headers=headers, media_type=media_type)


def _quality(parameters: list[str]) -> float:
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "q":
            try:
                return min(max(float(value), 0.0), 1.0)
            except ValueError:
                return 0.0
    return 1.0


def response_media_type(accept: str | None) -> str:
    """The media type of the answer to a GraphQL request with this Accept header."""
    # No Accept header counts as `Accept: application/json`.
    wanted, json = 0.0, (0.0 if accept and accept.strip() else 1.0)
    for media_range in (accept or "").split(","):
        kind, *parameters = media_range.split(";")
        kind = kind.strip().lower()
        if kind == GRAPHQL_RESPONSE:
            wanted = max(wanted, _quality(parameters))
        elif kind in {JSON, "application/*", "*/*"}:
            json = max(json, _quality(parameters))
    return GRAPHQL_RESPONSE if wanted > 0 and wanted >= json else JSON


def is_request_error(result: ExecutionResult) -> bool:
    """The request could not be run at all: no data, and no error belongs to a field (a field error has a path)."""
    errors = result.errors or []
    return result.data is None and bool(errors) and all(not error.path for error in errors)


class GraphQLOverHTTP:
    """Mixed into the Strawberry view at /graphql (before the view class): negotiates the media type."""

    async def get_sub_response(self, request: Request | WebSocket) -> Response:
        sub_response: Response = await super().get_sub_response(request)  # type: ignore[misc]
        # Read back by create_response, which is not given the request.
        sub_response.media_type = response_media_type(request.headers.get("accept"))
        return sub_response

    async def process_result(self, request: Request, result: ExecutionResult) -> GraphQLHTTPResponse:
        answer: GraphQLHTTPResponse = await super().process_result(request, result)  # type: ignore[misc]
        if (
            is_request_error(result)
            and response_media_type(request.headers.get("accept")) == GRAPHQL_RESPONSE
        ):
            answer.pop("data", None)
        return answer

    def create_response(
        self, response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse], sub_response: Response
    ) -> Response:
        response: Response = super().create_response(response_data, sub_response)  # type: ignore[misc]
        if sub_response.media_type == GRAPHQL_RESPONSE:
            response.headers["content-type"] = GRAPHQL_RESPONSE
            if (
                isinstance(response_data, dict)
                and "data" not in response_data
                and not sub_response.status_code
            ):
                response.status_code = 400
        return response
