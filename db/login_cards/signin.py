"""QR login cards: signing a pupil in with the code on their card, rotating codes, and the cards to print.

Codes are signed, not stored (see db/login_cards/codes.py). Only pupils get cards and only pupils sign in with
them; a teacher's account is never opened by a code.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

from sqlalchemy import ColumnElement, Exists, Select, exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from db import audit, throttle
from db.audit import Actor, AuditAction
from db.classes import shares_a_class
from db.engine import Database
from db.errors import DomainError, ErrorCode, Problem, require_batch_size
from db.login_cards.codes import LoginCode, decode_login_code, default_expiry, encode_login_code
from db.login_cards.sheet import CardView
from db.models import ClassKind, ClassMembership, School, SchoolClass, SignInMethod, User, UserType
from db.scope import bind_school, unbound_scope
from db.sessions import SessionPolicy, revoke_sessions
from db.signin import INVALID, RATE_LIMITED, SignedIn, open_session
from db.users import locked_users, no_such_user


def _throttle_account(code: LoginCode | None, client: str) -> str:
    """Whose attempt this is: the pupil's, for their current card; else the client's, for garbage codes and
    for genuine cards that no longer open the account (rotated, say), so that an old card in the wrong hands
    cannot use up the pupil's attempts and keep their new card out.

    No ":" in these, so no school and username typed at `login` (throttled as "school:username") can name,
    and so lock, one of them.
    """
    if code is None:
        return f"qr-invalid {client.encode().hex()}"
    return f"qr {code.school_id.hex} {code.user_id.hex}"


def _card_holder(code: LoginCode) -> Select[User]:
    """The pupil a card opens: active, QR sign-in on at their school, and the card their current one."""
    return (
        select(User)
        .join(School, School.id == User.school_id)
        .where(
            User.school_id == code.school_id,
            User.id == code.user_id,
            User.deleted_at.is_(None),
            User.type == UserType.PUPIL,
            User.login_code_version == code.version,
            School.qr_sign_in_enabled,
        )
    )


async def sign_in_with_code(
    db: Database, *, code: str, secret: bytes, client: str, policy: SessionPolicy, now: datetime | None = None
) -> SignedIn:
    """Start a session for the pupil whose card this is; refuse every kind of wrong code with one answer."""
    found = decode_login_code(code, secret=secret, now=now or datetime.now(UTC))
    if found is not None:
        async with unbound_scope(db) as session:
            await bind_school(session, found.school_id)
            if (await session.execute(_card_holder(found))).scalar_one_or_none() is None:
                found = None
    attempt = await throttle.count_attempt(
        db, account=_throttle_account(found, client), client=client, known=found is not None
    )
    if attempt.refused:
        raise DomainError(RATE_LIMITED)
    await throttle.slow_down(attempt)
    if found is None:
        raise DomainError(INVALID)
    async with unbound_scope(db) as session:
        await bind_school(session, found.school_id)
        user = (await session.execute(_card_holder(found))).scalar_one_or_none()
        # Rotated, deleted, a teacher, or QR sign-in switched off (also since the check above): the same
        # answer as a wrong password.
        if user is None:
            raise DomainError(INVALID)
        signed_in = await open_session(session, user, policy=policy, how=SignInMethod.QR)
    await throttle.succeeded(db, attempt)
    return signed_in


async def rotate_login_codes(
    session: AsyncSession,
    *,
    school_id: uuid.UUID,
    user_ids: Sequence[uuid.UUID],
    actor: Actor,
) -> list[User]:
    """Make every card printed so far for these pupils useless; new cards print with new codes."""
    if not user_ids:
        raise DomainError(Problem(ErrorCode.INVALID_INPUT, "Choose at least one pupil.", "userIds"))
    ids, found = await locked_users(session, school_id, user_ids)
    problems = [
        no_such_user(user_id)
        if user is None
        else Problem(
            ErrorCode.INVALID_INPUT,
            f"{user.username} is a teacher; only pupils have login cards.",
            "userIds",
            user_id,
        )
        for user_id, user in ((user_id, found.get(user_id)) for user_id in ids)
        if user is None or user.type != UserType.PUPIL
    ]
    if problems:
        raise DomainError(*problems)
    return await _rotate(
        session,
        school_id=school_id,
        user_ids=ids,
        actor=actor,
        summary={},
    )


async def rotate_class_login_codes(
    session: AsyncSession,
    *,
    school_id: uuid.UUID,
    class_id: uuid.UUID,
    actor: Actor,
) -> list[User]:
    """Rotate the codes of every pupil in the class, deleted ones too (their old cards must not come back)."""
    school_class = await _get_class(session, school_id, class_id)
    ids = list(
        (
            await session.execute(
                select(User.id)
                .where(
                    User.school_id == school_id, User.type == UserType.PUPIL, _in_class(school_id, class_id)
                )
                .order_by(User.id)
                .with_for_update()
            )
        ).scalars()
    )
    return await _rotate(
        session,
        school_id=school_id,
        user_ids=ids,
        actor=actor,
        summary={"class_id": str(class_id), "class_name": school_class.name},
    )


async def _rotate(
    session: AsyncSession,
    *,
    school_id: uuid.UUID,
    user_ids: list[uuid.UUID],
    actor: Actor,
    summary: dict[str, str],
) -> list[User]:
    if not user_ids:
        return []
    # Only the login-code version moves: `version` guards the edit form, and a new card is not an edit.
    users = list(
        (
            await session.execute(
                update(User)
                .where(User.school_id == school_id, User.id.in_(user_ids))
                .values(login_code_version=User.login_code_version + 1)
                .returning(User),
                execution_options={"populate_existing": True},
            )
        ).scalars()
    )
    # A card that no longer works must not leave open what it opened; their password sessions stay.
    await revoke_sessions(session, school_id=school_id, user_ids=user_ids, method=SignInMethod.QR)
    await audit.record_by(
        session,
        actor,
        school_id=school_id,
        action=AuditAction.LOGIN_CODE_ROTATED,
        targets=user_ids,
        summary=summary,
    )
    return sorted(users, key=lambda user: user.id)


class CardsForbidden(Exception):
    """The viewer may not have these cards: a teacher asking for a class they are not in."""


@dataclass(frozen=True, slots=True)
class LoginCard:
    user: User
    class_name: str | None
    code: str
    expires_at: datetime

    def view(self) -> CardView:
        return CardView(
            first_name=self.user.first_name,
            surname=self.user.surname,
            username=self.user.username,
            class_name=self.class_name,
            code=self.code,
            expires_at=self.expires_at,
        )


@dataclass(frozen=True, slots=True)
class LoginCards:
    school_name: str
    title: str
    cards: list[LoginCard]


async def login_cards(
    session: AsyncSession,
    *,
    school_id: uuid.UUID,
    secret: bytes,
    actor: Actor,
    sees_every_pupil: bool,
    class_id: uuid.UUID | None = None,
    user_ids: Sequence[uuid.UUID] | None = None,
    today: date | None = None,
    via: str,
    printed: bool = True,
) -> LoginCards:
    """The cards of a class's pupils, or of the pupils among `user_ids`. When they are `printed` (the sheet),
    an audit event says who got them; a front end that prints them itself says so with record_printed.

    A viewer who `sees_every_pupil` (an admin) may have any cards; a teacher only a class they are in
    (registration or teaching) or pupils of such classes. Teachers, deleted users and unknown ids get no
    card.
    """
    if (class_id is None) == (user_ids is None):
        raise DomainError(Problem(ErrorCode.INVALID_INPUT, "Give either a classId or userIds.", "classId"))
    # Whose classes bound the cards: nobody's for a viewer who sees every pupil, else the teacher's own.
    teacher = None if sees_every_pupil else actor.id
    if teacher is None and not sees_every_pupil:
        raise CardsForbidden("Only a signed-in teacher can print login cards.")
    title = "Login cards"
    chosen: ColumnElement[bool]
    if class_id is not None:
        school_class = await _get_class(session, school_id, class_id)
        if teacher is not None and not await _is_member(session, school_id, class_id, teacher):
            raise CardsForbidden("You can print login cards only for the classes you are in.")
        chosen = _in_class(school_id, class_id)
        title = f"Login cards: {school_class.name}"
    else:
        assert user_ids is not None
        ids = set(user_ids)
        require_batch_size(len(ids))
        chosen = User.id.in_(ids)
        if teacher is not None:
            outside = (
                await session.execute(
                    select(User.id)
                    .where(*_active_pupils(school_id), chosen, ~shares_a_class(school_id, teacher))
                    .limit(1)
                )
            ).first()
            if outside is not None:
                raise CardsForbidden("You can print login cards only for pupils in the classes you are in.")
    school = (await session.execute(select(School).where(School.id == school_id))).scalar_one()
    expires_at = default_expiry(
        today or datetime.now(UTC).date(),
        school_year_ends=(school.school_year_end_month, school.school_year_end_day),
    )
    cards = [
        LoginCard(
            user=user,
            class_name=class_name,
            expires_at=expires_at,
            code=encode_login_code(
                LoginCode(
                    school_id=school_id,
                    user_id=user.id,
                    version=user.login_code_version,
                    expires_at=expires_at,
                ),
                secret=secret,
            ),
        )
        for user, class_name in await session.execute(_pupils(school_id).where(chosen))
    ]
    if cards and printed:
        await record_printed(
            session,
            school_id=school_id,
            actor=actor,
            user_ids=[card.user.id for card in cards],
            via=via,
            class_id=class_id,
        )
    return LoginCards(school_name=school.name, title=title, cards=cards)


async def record_printed(
    session: AsyncSession,
    *,
    school_id: uuid.UUID,
    actor: Actor,
    user_ids: Sequence[uuid.UUID],
    via: str,
    class_id: uuid.UUID | None = None,
) -> None:
    """The audit event for printed cards: who printed whose, and how."""
    await audit.record_by(
        session,
        actor,
        school_id=school_id,
        action=AuditAction.LOGIN_CARD_PRINTED,
        targets=list(user_ids),
        summary={"via": via, **({"class_id": str(class_id)} if class_id else {})},
    )


def _pupils(school_id: uuid.UUID) -> Select[User, str]:
    """Active pupils with their registration class's name, in the order cards are handed out."""
    registration = aliased(ClassMembership)
    registration_class = aliased(SchoolClass)
    return (
        select(User, registration_class.name)
        .outerjoin(
            registration,
            (registration.school_id == User.school_id)
            & (registration.user_id == User.id)
            & (registration.kind == ClassKind.REGISTRATION),
        )
        .outerjoin(
            registration_class,
            (registration_class.school_id == registration.school_id)
            & (registration_class.id == registration.class_id),
        )
        .where(*_active_pupils(school_id))
        .order_by(
            func.lower(registration_class.name).nulls_last(),
            func.lower(User.surname),
            func.lower(User.first_name),
            func.lower(User.username),
            User.id,
        )
    )


def _active_pupils(school_id: uuid.UUID) -> tuple[ColumnElement[bool], ...]:
    return User.school_id == school_id, User.type == UserType.PUPIL, User.deleted_at.is_(None)


def _in_class(school_id: uuid.UUID, class_id: uuid.UUID) -> Exists:
    return exists().where(
        ClassMembership.school_id == school_id,
        ClassMembership.class_id == class_id,
        ClassMembership.user_id == User.id,
    )


async def _get_class(session: AsyncSession, school_id: uuid.UUID, class_id: uuid.UUID) -> SchoolClass:
    found = (
        await session.execute(
            select(SchoolClass).where(SchoolClass.school_id == school_id, SchoolClass.id == class_id)
        )
    ).scalar_one_or_none()
    if found is None:
        raise DomainError(Problem(ErrorCode.NOT_FOUND, f"No class has the id {class_id}.", "classId"))
    return found


async def _is_member(
    session: AsyncSession, school_id: uuid.UUID, class_id: uuid.UUID, user_id: uuid.UUID
) -> bool:
    return (
        await session.execute(
            select(
                exists().where(
                    ClassMembership.school_id == school_id,
                    ClassMembership.class_id == class_id,
                    ClassMembership.user_id == user_id,
                )
            )
        )
    ).scalar_one()
