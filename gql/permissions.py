"""Who may resolve a field, declared on the field with `permission_classes=[...]`.

Each class asks one policy of tenants.policies; a denial becomes a top-level GraphQL error whose
`extensions.code` is UNAUTHENTICATED, FORBIDDEN or PASSWORD_CHANGE_REQUIRED. Business errors travel in
payloads instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from graphql import GraphQLError
from strawberry.permission import BasePermission

from gql.context import Info
from gql.errors import client_error
from tenants import policies
from tenants.callers import Caller


def denial(error: policies.Denied) -> GraphQLError:
    """A policy's refusal, as GraphQL says it."""
    return client_error(error.message, error.refusal.value)


def _let_through(policy: Callable[[Caller | None], object], info: Info) -> bool:
    try:
        policy(info.context.caller)
    except policies.Denied as error:
        raise denial(error) from None
    return True


class IsSignedIn(BasePermission):
    """Any signed-in person: pupil, teacher or admin."""

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        return _let_through(policies.require_person, info)


class MayChangeOwnPassword(BasePermission):
    """Any signed-in person, even one who must change their password first."""

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        return _let_through(
            lambda caller: policies.require_person(caller, password_change_allowed=True), info
        )


class IsStaff(BasePermission):
    """Teachers (admins are teachers too)."""

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        return _let_through(policies.require_staff, info)


class IsAdmin(BasePermission):
    """Teachers with the admin flag: every user-management operation."""

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        return _let_through(policies.require_admin, info)


class CanFollowChanges(BasePermission):
    """Admins, or an app whose API token has the ROSTER_READ scope: the change feed."""

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        return _let_through(policies.require_feed_reader, info)


class CanReadRoster(BasePermission):
    """Teachers, or an app whose API token has the ROSTER_READ scope."""

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        return _let_through(policies.require_roster_reader, info)


class AnyCaller(BasePermission):
    """Anyone signed in, person or app; what they then see is narrowed by the field itself."""

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        return _let_through(policies.require_caller, info)


class CanPrintCards(BasePermission):
    """Teachers (admins too), never an app: the cards' codes are secrets."""

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        return _let_through(policies.require_card_printer, info)
