"""Login cards: `loginCards` to print, `loginWithQr` to sign in with one, and rotating their codes."""

from __future__ import annotations

import uuid
from datetime import datetime

import strawberry

from db.errors import DomainError, require_batch_size
from db.login_cards import signin as qr_signin
from db.login_cards.sheet import qr_svg as draw_qr
from db.users import sharing_a_class, users_by_id
from gql.context import Info
from gql.enums import ErrorCode
from gql.errors import client_error
from gql.ids import parse_id, parse_ids
from gql.payloads import Payload, UserError, user_errors
from gql.permissions import CanPrintCards, IsAdmin
from gql.roster import User
from gql.signin import LoginPayload
from tenants import policies
from tenants.callers import Person
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


CardRefusal = policies.CardRefusal  # marked as a GraphQL enum in place, as in gql.enums
strawberry.enum(CardRefusal, description="Why a user named gets no login card.")


@strawberry.type(description="A user named who gets no login card, and why.")
class RefusedLoginCard:
    user_id: strawberry.ID = strawberry.field(description="The id as it was sent.")
    reason: CardRefusal = strawberry.field(description="Why there is no card.")
    message: str = strawberry.field(description="The reason, in words to show.")


@strawberry.type(description="The login cards asked for, and the users named who get none.")
class LoginCardSheet:
    cards: list[LoginCard] = strawberry.field(
        description="The cards, in the order they are handed out: by registration class, then name."
    )
    refused: list[RefusedLoginCard] = strawberry.field(
        description="Every id of userIds that gets no card, with the reason, in the order sent."
    )


@strawberry.type(description="The answer to recording that login cards were printed.")
class RecordLoginCardsPrintedPayload(Payload):
    users: list[User] = strawberry.field(
        default_factory=list, description="The pupils whose printed cards were recorded."
    )
    errors: list[UserError] = strawberry.field(
        default_factory=list,
        description="Ids that get no card (each with its userId), or a bad request; nothing is recorded.",
    )


_REFUSALS = {
    CardRefusal.NOT_FOUND: "No user has this id in your school.",
    CardRefusal.DELETED: "This user is deleted; restore them first.",
    CardRefusal.NOT_A_PUPIL: "Only pupils have login cards.",
    CardRefusal.NOT_IN_YOUR_CLASSES: "You can print login cards only for pupils in the classes you are in.",
}


async def _sorted_ids(
    info: Info, caller: Person, user_ids: list[strawberry.ID]
) -> tuple[list[uuid.UUID], list[RefusedLoginCard]]:
    """The ids whose cards the caller gets, and the others with why not (tenants.policies.card_refusal: the
    rule viewerCanPrintLoginCard shows)."""
    require_batch_size(len(user_ids))
    parsed = {given: _uuid(given) for given in user_ids}
    ids = [user_id for user_id in parsed.values() if user_id is not None]
    async with info.context.scope() as session:
        found = await users_by_id(session, school_id=caller.school_id, user_ids=ids)
        mine = (
            set()
            if policies.sees_every_pupil(caller)
            else await sharing_a_class(
                session, school_id=caller.school_id, viewer_id=caller.user_id, user_ids=ids
            )
        )
    chosen: list[uuid.UUID] = []
    refused: list[RefusedLoginCard] = []
    for given, user_id in parsed.items():
        row = found.get(user_id) if user_id is not None else None
        facts = (
            None
            if row is None
            else policies.UserFacts(
                id=row.id,
                type=row.type,
                deleted=row.deleted_at is not None,
                shares_a_class_with_caller=row.id in mine,
            )
        )
        if (reason := policies.card_refusal(caller, facts)) is None:
            assert user_id is not None
            chosen.append(user_id)
        else:
            refused.append(RefusedLoginCard(user_id=given, reason=reason, message=_REFUSALS[reason]))
    return chosen, refused


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


@strawberry.type
class RotateLoginCodesPayload(Payload):
    users: list[User] = strawberry.field(
        default_factory=list, description="The pupils whose cards were rotated."
    )
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class LoginCardQueries:
    @strawberry.field(
        permission_classes=[CanPrintCards],
        description="The login cards of a class's pupils, or of the selected users (give one or the "
        "other), and every selected user who gets none, with the reason. Teachers get the cards of the "
        "classes they are in; admins any. Reading them is not printing them: print the sheet "
        "(/login-cards), or record the printing with recordLoginCardsPrinted.",
    )
    async def login_card_sheet(
        self, info: Info, class_id: strawberry.ID | None = None, user_ids: list[strawberry.ID] | None = None
    ) -> LoginCardSheet:
        return await _sheet(info, class_id, user_ids)

    @strawberry.field(
        permission_classes=[CanPrintCards],
        description="The login cards of a class's pupils, or of the selected pupils (give one or the "
        "other). Teachers get the cards of the classes they are in; admins any.",
        deprecation_reason="Use loginCardSheet, which also says why a user named gets no card.",
    )
    async def login_cards(
        self, info: Info, class_id: strawberry.ID | None = None, user_ids: list[strawberry.ID] | None = None
    ) -> list[LoginCard]:
        return (await _sheet(info, class_id, user_ids)).cards


async def _sheet(
    info: Info, class_id: strawberry.ID | None, user_ids: list[strawberry.ID] | None
) -> LoginCardSheet:
    context, caller = info.context, info.context.person()
    refused: list[RefusedLoginCard] = []
    try:
        if (class_id is None) == (user_ids is None):
            raise client_error("Give either a classId or userIds.", "BAD_REQUEST")
        chosen_class = parse_id(class_id, field="classId") if class_id is not None else None
        chosen_users = None
        if user_ids is not None:
            chosen_users, refused = await _sorted_ids(info, caller, user_ids)
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
                printed=False,
            )
    except DomainError as error:
        raise client_error(error.problems[0].message, "BAD_REQUEST") from None
    except qr_signin.CardsForbidden as error:
        raise client_error(str(error), "FORBIDDEN") from None
    return LoginCardSheet(
        cards=[
            LoginCard(user=User.from_row(card.user), code=card.code, expires_at=card.expires_at)
            for card in found.cards
        ],
        refused=refused,
    )


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
        return LoginPayload(token=context.token_for_body(signed_in.token), user=User.from_row(signed_in.user))

    @strawberry.mutation(
        permission_classes=[CanPrintCards],
        description="Record in the audit log that you printed these pupils' login cards (a front end "
        "that prints them itself, from loginCardSheet; the /login-cards sheet records itself). Any id "
        "that gets no card refuses the whole batch.",
    )
    async def record_login_cards_printed(
        self, info: Info, user_ids: list[strawberry.ID]
    ) -> RecordLoginCardsPrintedPayload:
        context, caller = info.context, info.context.person()
        try:
            chosen, refused = await _sorted_ids(info, caller, user_ids)
        except DomainError as error:
            return RecordLoginCardsPrintedPayload(errors=user_errors(error))
        if refused or not chosen:
            return RecordLoginCardsPrintedPayload(
                errors=[
                    UserError(
                        code=ErrorCode.NOT_FOUND
                        if r.reason == CardRefusal.NOT_FOUND
                        else ErrorCode.INVALID_INPUT,
                        message=r.message,
                        path=["userIds"],
                        field="userIds",
                        user_id=r.user_id,
                    )
                    for r in refused
                ]
                or [
                    UserError(
                        code=ErrorCode.INVALID_INPUT,
                        message="Choose at least one pupil.",
                        path=["userIds"],
                        field="userIds",
                    )
                ]
            )
        async with context.scope() as session:
            await qr_signin.record_printed(
                session, school_id=caller.school_id, actor=context.actor(), user_ids=chosen, via="graphql"
            )
            found = await users_by_id(session, school_id=caller.school_id, user_ids=chosen)
        return RecordLoginCardsPrintedPayload(users=[User.from_row(found[user_id]) for user_id in chosen])

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
