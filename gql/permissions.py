"""Who may resolve a field, declared on the field with `permission_classes=[...]`.

A denial is a top-level GraphQL error with `extensions.code` UNAUTHENTICATED, FORBIDDEN or
PASSWORD_CHANGE_REQUIRED; business errors travel in payloads instead.
"""

from __future__ import annotations

from typing import Any

from strawberry.permission import BasePermission

from db.api_tokens import ApiScope
from db.models import UserType
from gql.context import Info
from gql.errors import client_error
from tenants.callers import Caller, CallerKind


def _person(info: Info, *, password_change_allowed: bool = False) -> Caller:
    caller = info.context.caller
    if caller is None:
        raise client_error("Sign in first.", "UNAUTHENTICATED")
    if caller.kind != CallerKind.SESSION:
        raise client_error("An API token cannot do this.", "FORBIDDEN")
    if caller.must_change_password and not password_change_allowed:
        raise client_error("Change your password before doing anything else.", "PASSWORD_CHANGE_REQUIRED")
    return caller


class IsSignedIn(BasePermission):
    """Any signed-in person: pupil, teacher or admin."""

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        _person(info)
        return True


class MayChangeOwnPassword(BasePermission):
    """Any signed-in person, even one who must change their password first."""

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        _person(info, password_change_allowed=True)
        return True


class IsStaff(BasePermission):
    """Teachers (admins are teachers too)."""

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        if _person(info).user_type != UserType.TEACHER:
            raise client_error("Only teachers can do this.", "FORBIDDEN")
        return True


class IsAdmin(BasePermission):
    """Teachers with the admin flag: every user-management operation."""

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        if not _person(info).is_admin:
            raise client_error("Only a school admin can do this.", "FORBIDDEN")
        return True


class CanReadRoster(BasePermission):
    """Teachers, or an app whose API token has the ROSTER_READ scope."""

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        caller = info.context.caller
        if caller is not None and caller.kind == CallerKind.API_TOKEN:
            if ApiScope.ROSTER_READ not in caller.scopes:
                raise client_error("This API token may not read the roster.", "FORBIDDEN")
            return True
        if _person(info).user_type != UserType.TEACHER:
            raise client_error("Only teachers can read the roster.", "FORBIDDEN")
        return True
