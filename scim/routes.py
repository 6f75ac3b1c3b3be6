"""SCIM 2.0 over HTTP at /scim/v2: a managed school's provider keeps its users and classes up to date.

Only a provisioning token (scope PROVISION) gets in, and the token names the school: it reaches that school's
users and classes and nothing else. A school whose users are managed by hand refuses. Every answer, errors
included, is `application/scim+json`; errors have RFC 7644's shape (section 3.12).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from cross_web import HTTPException
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from db.audit import Actor
from db.classes import with_retries
from db.engine import Database
from db.errors import DomainError
from db.schools import get_school
from db.scope import SchoolTransactions
from db.sessions import SessionPolicy
from db.text import shown
from scim import discovery as scim_discovery
from scim import groups as scim_groups
from scim import users as scim_users
from scim.protocol import (
    LIST_RESPONSE,
    SEARCH_REQUEST,
    ScimError,
    Shape,
    require_object,
    scim_error,
    unchanged,
)
from scim.query import attribute_names, list_query, projected
from tenants import policies
from tenants.callers import caller_and_transaction
from web.bodies import BadBody, read_json
from web.http_auth import bearer_secret, refuse_secrets_in_url

PREFIX = "/scim/v2"
MEDIA_TYPE = "application/scim+json"
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]

log = logging.getLogger("rollcall.scim")


def scim_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status_code=status, media_type=MEDIA_TYPE, headers=headers)


def error_response(error: ScimError, headers: dict[str, str] | None = None) -> Response:
    if error.status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": 'Bearer realm="rollcall-scim"'}
    return scim_response(error.body(), error.status, headers)


@dataclass(frozen=True, slots=True)
class ProvisioningCaller:
    """The school's provider, by its token: whose school, how the audit log names it, where SCIM lives."""

    school_id: uuid.UUID
    actor: Actor
    base_url: str
    # The school's transactions for this request, the first of them the one the token was checked in.
    transactions: SchoolTransactions


Handler = Callable[[Request, ProvisioningCaller], Awaitable[Response]]
Transaction = Callable[[], AbstractAsyncContextManager[AsyncSession]]


@dataclass(frozen=True, slots=True)
class _Resources:
    """One resource type's operations (scim/users.py or scim/groups.py)."""

    shape: Shape
    id_name: str
    list: Callable[..., Awaitable[dict[str, Any]]]
    get: Callable[..., Awaitable[dict[str, Any]]]
    create: Callable[..., Awaitable[dict[str, Any]]]
    replace: Callable[..., Awaitable[dict[str, Any]]]
    patch: Callable[..., Awaitable[dict[str, Any]]]
    delete: Callable[..., Awaitable[None]]


USERS = _Resources(
    scim_users.SHAPE,
    "user_id",
    scim_users.list_users,
    scim_users.get_user,
    scim_users.create_user,
    scim_users.replace_user,
    scim_users.patch_user,
    scim_users.delete_user,
)
GROUPS = _Resources(
    scim_groups.SHAPE,
    "group_id",
    scim_groups.list_groups,
    scim_groups.get_group,
    scim_groups.create_group,
    scim_groups.replace_group,
    scim_groups.patch_group,
    scim_groups.delete_group,
)


async def _body(request: Request) -> Any:
    try:
        return read_json(await request.body())
    except BadBody as error:
        raise ScimError(400, str(error), "invalidSyntax") from None


def _resource_response(
    request: Request, resource: dict[str, Any], shape: Shape, status: int = 200
) -> Response:
    meta, params = resource["meta"], request.query_params
    headers = {"ETag": meta["version"], **({"Location": meta["location"]} if status == 201 else {})}
    shown = projected(
        resource, shape, attribute_names(params, "attributes"), attribute_names(params, "excludedAttributes")
    )
    return scim_response(shown, status, headers)


def public_base_url(request: Request, public_url: str | None) -> str:
    """Where links to this server start: the configured public URL, else the address the server listens on.
    Never the request's Host header, which any client can forge into links a provider then follows."""
    if public_url is not None:
        return public_url
    server = request.scope.get("server")
    if not server:
        return ""
    host, port = server
    host = f"[{host}]" if ":" in host else host
    scheme = "https" if request.url.scheme in {"https", "wss"} else "http"
    default = {"http": 80, "https": 443}[scheme]
    return f"{scheme}://{host}" + ("" if port in (None, default) else f":{port}")


class Scim:
    def __init__(self, db: Database, policy: SessionPolicy, public_url: str | None = None) -> None:
        self.db, self.policy, self.public_url = db, policy, public_url

    async def provider(self, request: Request) -> ProvisioningCaller:
        refuse_secrets_in_url(request)
        secret = bearer_secret(request)
        if secret is None:
            raise ScimError(401, "Send the school's provisioning token: Authorization: Bearer <token>.")
        caller, first = await caller_and_transaction(self.db, secret, self.policy)
        transactions = (
            SchoolTransactions(
                self.db, caller.school_id, first, policies.actor_of(caller, request.state.request_id)
            )
            if caller is not None
            else None
        )
        # The provider is read in the transaction the token was checked in, which the handler then uses.
        try:
            app = policies.require_provider(caller)
            assert transactions is not None, "a provider is a caller"
            async with transactions.borrow() as session:
                school = await get_school(session, app.school_id)
            policies.require_provisioned(school)
        except BaseException as error:
            if transactions is not None:
                await transactions.finish()
            if isinstance(error, policies.Denied):
                raise ScimError(error.status, error.message) from None
            raise
        return ProvisioningCaller(
            school_id=app.school_id,
            base_url=public_base_url(request, self.public_url) + PREFIX,
            actor=policies.actor_of(app, request.state.request_id),
            transactions=transactions,
        )

    def endpoint(self, **handlers: Handler) -> Callable[[Request], Awaitable[Response]]:
        """One URL: the caller checked, then the handler for the method, every failure a SCIM error."""

        async def endpoint(request: Request) -> Response:
            caller: ProvisioningCaller | None = None
            try:
                caller = await self.provider(request)
                method = "get" if request.method == "HEAD" else request.method.lower()
                handler = handlers.get(method)
                if handler is None:
                    return error_response(
                        ScimError(405, f"{request.method} is not supported here."),
                        {"Allow": ", ".join(sorted(name.upper() for name in handlers))},
                    )
                return await handler(request, caller)
            except ScimError as error:
                return error_response(error)
            except DomainError as error:
                return error_response(scim_error(error))
            except HTTPException as error:  # a token in the URL, or a body over the size limit
                return error_response(ScimError(error.status_code, error.reason))
            except Exception:
                request_id = request.state.request_id
                log.exception("SCIM request failed (request %s)", request_id)
                return error_response(ScimError(500, f"Internal server error (request {request_id})."))
            finally:
                if caller is not None:
                    # The token's transaction ends with the handler (discovery reads nothing), before the answer.
                    await caller.transactions.finish()

        return endpoint

    def transaction(self, caller: ProvisioningCaller) -> Transaction:
        return caller.transactions.scope

    async def page(self, kind: _Resources, caller: ProvisioningCaller, params: Any) -> Response:
        asked = list_query(params)
        async with caller.transactions.scope() as session:
            found = await kind.list(
                session, school_id=caller.school_id, asked=asked, base_url=caller.base_url
            )
        found["Resources"] = [
            projected(resource, kind.shape, asked.attributes, asked.excluded_attributes)
            for resource in found["Resources"]
        ]
        return scim_response(found)

    def collection(self, kind: _Resources) -> Callable[[Request], Awaitable[Response]]:
        async def listed(request: Request, caller: ProvisioningCaller) -> Response:
            return await self.page(kind, caller, request.query_params)

        async def created(request: Request, caller: ProvisioningCaller) -> Response:
            body = await _body(request)
            resource = await with_retries(
                self.transaction(caller),
                lambda session: kind.create(
                    session,
                    school_id=caller.school_id,
                    actor=caller.actor,
                    body=body,
                    base_url=caller.base_url,
                ),
            )
            return _resource_response(request, resource, kind.shape, 201)

        return self.endpoint(get=listed, post=created)

    def search(self, kind: _Resources) -> Callable[[Request], Awaitable[Response]]:
        async def searched(request: Request, caller: ProvisioningCaller) -> Response:
            return await self.page(kind, caller, require_object(await _body(request), SEARCH_REQUEST))

        return self.endpoint(post=searched)

    def item(self, kind: _Resources) -> Callable[[Request], Awaitable[Response]]:
        def named(request: Request) -> dict[str, str]:
            return {kind.id_name: request.path_params["id"]}

        async def read(request: Request, caller: ProvisioningCaller) -> Response:
            async with caller.transactions.scope() as session:
                resource = await kind.get(
                    session, school_id=caller.school_id, base_url=caller.base_url, **named(request)
                )
            version = resource["meta"]["version"]
            if unchanged(version, request.headers.get("if-none-match")):
                return Response(status_code=304, headers={"ETag": version})
            return _resource_response(request, resource, kind.shape)

        def changed(change: Callable[..., Awaitable[dict[str, Any]]]) -> Handler:
            async def handler(request: Request, caller: ProvisioningCaller) -> Response:
                body = await _body(request)
                resource = await with_retries(
                    self.transaction(caller),
                    lambda session: change(
                        session,
                        school_id=caller.school_id,
                        actor=caller.actor,
                        body=body,
                        if_match=request.headers.get("if-match"),
                        base_url=caller.base_url,
                        **named(request),
                    ),
                )
                return _resource_response(request, resource, kind.shape)

            return handler

        async def deleted(request: Request, caller: ProvisioningCaller) -> Response:
            await with_retries(
                self.transaction(caller),
                lambda session: kind.delete(
                    session,
                    school_id=caller.school_id,
                    actor=caller.actor,
                    if_match=request.headers.get("if-match"),
                    **named(request),
                ),
            )
            return Response(status_code=204)

        return self.endpoint(get=read, put=changed(kind.replace), patch=changed(kind.patch), delete=deleted)


async def _service_provider_config(request: Request, caller: ProvisioningCaller) -> Response:
    return scim_response(scim_discovery.service_provider_config(caller.base_url))


async def _resource_types(request: Request, caller: ProvisioningCaller) -> Response:
    found = [scim_discovery.resource_type(name, caller.base_url) for name in scim_discovery.RESOURCE_TYPES]
    return scim_response(_listed(found))


async def _resource_type(request: Request, caller: ProvisioningCaller) -> Response:
    name = request.path_params["id"]
    if name not in scim_discovery.RESOURCE_TYPES:
        raise ScimError(404, f"There is no resource type {shown(name)}.")
    return scim_response(scim_discovery.resource_type(name, caller.base_url))


async def _schemas(request: Request, caller: ProvisioningCaller) -> Response:
    found = [scim_discovery.schema(urn, caller.base_url) for urn in scim_discovery.SCHEMAS]
    return scim_response(_listed(found))


async def _schema(request: Request, caller: ProvisioningCaller) -> Response:
    urn = request.path_params["id"]
    if urn not in scim_discovery.SCHEMAS:
        raise ScimError(404, f"There is no schema {shown(urn)}.")
    return scim_response(scim_discovery.schema(urn, caller.base_url))


def _listed(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "schemas": [LIST_RESPONSE],
        "totalResults": len(resources),
        "startIndex": 1,
        "itemsPerPage": len(resources),
        "Resources": resources,
    }


async def _not_implemented(request: Request, caller: ProvisioningCaller) -> Response:
    raise ScimError(501, "Not supported: search /Users/.search or /Groups/.search; send changes one by one.")


async def _not_found(request: Request, caller: ProvisioningCaller) -> Response:
    raise ScimError(404, f"There is nothing at {shown(request.url.path)}.")


def scim_routes(db: Database, policy: SessionPolicy, public_url: str | None = None) -> Mount:
    scim = Scim(db, policy, public_url)
    nowhere = {method.lower(): _not_found for method in METHODS}
    return Mount(
        PREFIX,
        routes=[
            Route("/ServiceProviderConfig", scim.endpoint(get=_service_provider_config), methods=METHODS),
            Route("/ResourceTypes", scim.endpoint(get=_resource_types), methods=METHODS),
            Route("/ResourceTypes/{id}", scim.endpoint(get=_resource_type), methods=METHODS),
            Route("/Schemas", scim.endpoint(get=_schemas), methods=METHODS),
            Route("/Schemas/{id}", scim.endpoint(get=_schema), methods=METHODS),
            Route("/Users", scim.collection(USERS), methods=METHODS),
            Route("/Users/.search", scim.search(USERS), methods=METHODS),
            Route("/Users/{id}", scim.item(USERS), methods=METHODS),
            Route("/Groups", scim.collection(GROUPS), methods=METHODS),
            Route("/Groups/.search", scim.search(GROUPS), methods=METHODS),
            Route("/Groups/{id}", scim.item(GROUPS), methods=METHODS),
            Route("/.search", scim.endpoint(post=_not_implemented), methods=METHODS),
            Route("/Bulk", scim.endpoint(post=_not_implemented), methods=METHODS),
            Route("/{rest:path}", scim.endpoint(**nowhere), methods=METHODS),
        ],
    )
