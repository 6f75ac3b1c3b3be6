"""The domain's enums, exposed to GraphQL under the same names."""

import strawberry

from db import models
from db.errors import ErrorCode as DomainErrorCode

# strawberry.enum marks the domain's own class and returns it; naming that class keeps each name a type.
Provider = models.Provider
strawberry.enum(Provider, description="MANUAL, or the service that manages the school's users.")
UserType = models.UserType
strawberry.enum(UserType, description="A pupil or a teacher (admins are teachers).")
ClassKind = models.ClassKind
strawberry.enum(ClassKind, description="A user has at most one REGISTRATION class.")
ErrorCode = DomainErrorCode
strawberry.enum(ErrorCode, description="Why a mutation changed nothing.")
