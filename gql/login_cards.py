"""Login cards: `loginCards` to print, `loginWithQr` to sign in with one, and rotating their codes."""

from __future__ import annotations

from datetime import datetime

import strawberry

from db.errors import DomainError
from db.login_cards import signin as qr_signin
from db.login_cards.sheet import qr_svg as draw_qr
from gql.context import Info
from gql.errors import client_error
from gql.ids import parse_id, parse_ids
from gql.payloads import Payload, UserError, user_errors
from gql.permissions import IsAdmin, IsStaff
from gql.roster import User
from gql.signin import LoginPayload
from tenants import policies
from web.telemetry import count_refused_sign_in


@strawberry.type(description="A pupil's login card: the QR code they hold up to the camera to sign in.")
class LoginCard:
    user: User
    code: str = strawberry.field(
        description="The login code the QR code holds. A secret: whoever has it can sign in as the pupil."
    )
    expires_at: datetime = strawberry.field(
        description="The end of the school year, when the card stops working."
    )

    @strawberry.field(
        description="The code as a standard QR code (error correction M, quiet zone included): "
        "an inline <svg> 3.5 cm wide."
    )
    def qr_svg(self) -> str:
        return draw_qr(self.code)


@strawberry.type
class RotateLoginCodesPayload(Payload):
    users: list[User] = strawberry.field(
        default_factory=list, description="The pupils whose cards were rotated."
    )
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class LoginCardQueries:
    @strawberry.field(
        permission_classes=[IsStaff],
        description="The login cards of a class's pupils, or of the selected pupils (give one or the "
        "other). Teachers get the cards of the classes they are in; admins any. Teachers, "
        "deleted users and unknown ids get no card.",
    )
    async def login_cards(
        self, info: Info, class_id: strawberry.ID | None = None, user_ids: list[strawberry.ID] | None = None
    ) -> list[LoginCard]:
        context, caller = info.context, info.context.person()
        try:
            chosen_class = parse_id(class_id, field="classId") if class_id is not None else None
            chosen_users = parse_ids(user_ids, field="userIds") if user_ids is not None else None
            async with context.scope() as session:
                found = await qr_signin.login_cards(
                    session,
                    school_id=caller.school_id,
                    secret=context.login_code_secret,
                    actor=context.actor(),
                    sees_every_pupil=policies.sees_every_pupil(caller),
                    class_id=chosen_class,
                    user_ids=chosen_users,
                    via="graphql",
                )
        except DomainError as error:
            raise client_error(error.problems[0].message, "BAD_REQUEST") from None
        except qr_signin.CardsForbidden as error:
            raise client_error(str(error), "FORBIDDEN") from None
        return [
            LoginCard(user=User.from_row(card.user), code=card.code, expires_at=card.expires_at)
            for card in found.cards
        ]


@strawberry.type
class LoginCardMutations:
    @strawberry.mutation(description="Sign a pupil in with the code on their login card (what its QR holds).")
    async def login_with_qr(self, info: Info, code: str) -> LoginPayload:
        context = info.context
        try:
            signed_in = await qr_signin.sign_in_with_code(
                await context.database(),
                code=code,
                secret=context.login_code_secret,
                client=context.client,
                policy=context.session_policy,
            )
        except DomainError as error:
            count_refused_sign_in({p.code for p in error.problems}, "qr")
            return LoginPayload(errors=user_errors(error))
        context.signed_in_now(signed_in.token, signed_in.user.school_id)
        return LoginPayload(token=signed_in.token, user=User.from_row(signed_in.user))

    @strawberry.mutation(
        permission_classes=[IsAdmin],
        description="Make the pupils' login cards stop working at once; print new ones "
        "after. Allowed in managed schools too: login cards are Rollcall's own.",
    )
    async def rotate_login_codes(self, info: Info, user_ids: list[strawberry.ID]) -> RotateLoginCodesPayload:
        context, caller = info.context, info.context.person()
        try:
            targets = parse_ids(user_ids, field="userIds")
            async with context.scope() as session:
                rows = await qr_signin.rotate_login_codes(
                    session,
                    school_id=caller.school_id,
                    user_ids=targets,
                    actor=context.actor(),
                )
        except DomainError as error:
            return RotateLoginCodesPayload(errors=user_errors(error))
        return RotateLoginCodesPayload(users=[User.from_row(row) for row in rows])

    @strawberry.mutation(
        permission_classes=[IsAdmin],
        description="Rotate the login codes of every pupil in the class (deleted ones too).",
    )
    async def rotate_class_login_codes(self, info: Info, class_id: strawberry.ID) -> RotateLoginCodesPayload:
        context, caller = info.context, info.context.person()
        try:
            target = parse_id(class_id, field="classId")
            async with context.scope() as session:
                rows = await qr_signin.rotate_class_login_codes(
                    session,
                    school_id=caller.school_id,
                    class_id=target,
                    actor=context.actor(),
                )
        except DomainError as error:
            return RotateLoginCodesPayload(errors=user_errors(error))
        return RotateLoginCodesPayload(users=[User.from_row(row) for row in rows])
