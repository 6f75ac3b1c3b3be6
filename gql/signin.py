"""Signing in and out, `me`, and changing one's own password."""

from __future__ import annotations

import strawberry
from sqlalchemy import select

from db.errors import DomainError
from db.models import User as UserRow
from db.sessions import revoke_session
from db.signin import set_own_password, sign_in
from gql.context import Info
from gql.payloads import Payload, UserError, user_errors
from gql.permissions import MayChangeOwnPassword
from gql.roster import User
from tenants.callers import Person
from tenants.reauth import reauthenticate
from web.telemetry import count_refused_sign_in


@strawberry.type
class LoginPayload(Payload):
    token: str | None = strawberry.field(
        default=None,
        description="The session's bearer token, shown once, for API clients. Null for a browser (a "
        "request carrying the x-rollcall-csrf header or a session cookie): it gets the session as an "
        "HttpOnly cookie only, which no script of the page can read.",
    )
    user: User | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class LogoutPayload(Payload):
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class ChangeMyPasswordPayload(Payload):
    user: User | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class AuthQueries:
    @strawberry.field(description="Whoever is signed in, or null.")
    async def me(self, info: Info) -> User | None:
        caller = info.context.caller
        if not isinstance(caller, Person):
            return None  # nobody, or an app
        async with info.context.scope() as session:
            row = (
                await session.execute(
                    select(UserRow).where(UserRow.school_id == caller.school_id, UserRow.id == caller.user_id)
                )
            ).scalar_one()
            return User.from_row(row)


@strawberry.type
class AuthMutations:
    @strawberry.mutation(description="Sign in with the school's slug, a username and a password.")
    async def login(self, info: Info, school: str, username: str, password: str) -> LoginPayload:
        context = info.context
        try:
            signed_in = await sign_in(
                await context.database(),
                school=school,
                username=username,
                password=password,
                client=context.client,
                policy=context.session_policy,
                secret=context.login_code_secret,
                device_cookie=context.device_cookie,
            )
        except DomainError as error:
            count_refused_sign_in({p.code for p in error.problems}, "password")
            return LoginPayload(errors=user_errors(error))
        context.signed_in_now(signed_in.token, signed_in.user.school_id)
        if signed_in.device_cookie is not None:
            context.set_device_cookie(signed_in.device_cookie)
        return LoginPayload(token=context.token_for_body(signed_in.token), user=User.from_row(signed_in.user))

    @strawberry.mutation(
        description="End this session and clear its cookie. Without a session (signed out already, or an "
        "API token) it does nothing, and says nothing is wrong."
    )
    async def logout(self, info: Info) -> LogoutPayload:
        caller = info.context.caller
        if isinstance(caller, Person):
            async with info.context.scope() as session:
                await revoke_session(session, school_id=caller.school_id, session_id=caller.session_id)
        info.context.clear_session_cookie()
        return LogoutPayload()

    @strawberry.mutation(
        permission_classes=[MayChangeOwnPassword],
        description="Change your own password; your other sessions end.",
    )
    async def change_my_password(
        self, info: Info, current_password: str, new_password: str, confirm_password: str
    ) -> ChangeMyPasswordPayload:
        context, caller = info.context, info.context.person()
        try:
            await reauthenticate(await context.database(), caller, current_password)
            async with context.scope() as session:
                row = await set_own_password(
                    session,
                    school_id=caller.school_id,
                    user_id=caller.user_id,
                    session_id=caller.session_id,
                    new_password=new_password,
                    confirm_password=confirm_password,
                )
                return ChangeMyPasswordPayload(user=User.from_row(row))
        except DomainError as error:
            return ChangeMyPasswordPayload(errors=user_errors(error))
