"""The domain's enums, exposed to GraphQL under the same names."""

import strawberry

from db import models
from db.errors import ErrorCode as DomainErrorCode

Provider = strawberry.enum(models.Provider, description="MANUAL, or the service that manages the school's users.")
UserType = strawberry.enum(models.UserType, description="A pupil or a teacher (admins are teachers).")
ClassKind = strawberry.enum(models.ClassKind, description="A user has at most one REGISTRATION class.")
ErrorCode = strawberry.enum(DomainErrorCode, description="Why a mutation changed nothing.")
