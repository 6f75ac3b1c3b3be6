"""Who may resolve a field, declared on the field with `permission_classes=[...]`."""

from __future__ import annotations

from typing import Any

from strawberry.permission import BasePermission

from gql.context import Info


class IsSignedIn(BasePermission):
    message = "Sign in first."
    error_extensions = {"code": "UNAUTHENTICATED"}

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        return info.context.caller is not None
