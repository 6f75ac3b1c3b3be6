"""Who may do what: every authorization decision, made once, for every surface (GraphQL, HTTP, SCIM).

A policy returns the caller, narrowed to the kind it lets through, or raises `Denied`. Each surface maps a
denial to its own error (a GraphQL error code, an HTTP 401 or 403, a SCIM error); the decision stays here.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from db.api_tokens import ApiScope
from db.audit import Actor
from db.models import Provider, School, UserType
from db.oauth import ROSTER_SCOPES
from tenants.callers import App, Caller, Person


class Refusal(enum.StrEnum):
    """Why a caller is turned away, as GraphQL names it in `extensions.code`."""

    UNAUTHENTICATED = "UNAUTHENTICATED"  # nobody, or a secret nobody has: HTTP 401
    FORBIDDEN = "FORBIDDEN"  # someone who may not: HTTP 403
    PASSWORD_CHANGE_REQUIRED = "PASSWORD_CHANGE_REQUIRED"  # a person who must first change their password


class Denied(Exception):
    """A policy's refusal: why, and what to tell the caller."""

    def __init__(self, refusal: Refusal, message: str) -> None:
        super().__init__(message)
        self.refusal, self.message = refusal, message

    @property
    def status(self) -> int:
        """The HTTP status of this refusal."""
        return 401 if self.refusal == Refusal.UNAUTHENTICATED else 403


SIGN_IN_FIRST = "Sign in first."
CHANGE_PASSWORD_FIRST = "Change your password before doing anything else."


def _signed_in(caller: Caller | None) -> Caller:
    if caller is None:
        raise Denied(Refusal.UNAUTHENTICATED, SIGN_IN_FIRST)
    return caller


def require_person(caller: Caller | None, *, password_change_allowed: bool = False) -> Person:
    """Any signed-in person (pupil, teacher or admin), who has changed their password when they had to."""
    match _signed_in(caller):
        case App():
            raise Denied(Refusal.FORBIDDEN, "An API token cannot do this.")
        case Person() as person:
            if person.must_change_password and not password_change_allowed:
                raise Denied(Refusal.PASSWORD_CHANGE_REQUIRED, CHANGE_PASSWORD_FIRST)
            return person


def require_caller(caller: Caller | None) -> Caller:
    """Anyone signed in: a person (who has changed their password when they had to), or an app."""
    match _signed_in(caller):
        case App() as app:
            return app
        case Person():
            return require_person(caller)


def allows(policy: Callable[[Caller | None], object], caller: Caller | None) -> bool:
    """Whether a policy lets the caller through: its predicate form, for a surface that answers "nothing here"
    rather than an error (an object looked up by id alone) and for what the UI may offer."""
    try:
        policy(caller)
    except Denied:
        return False
    return True


def is_staff(person: Person) -> bool:
    """Teachers, and so admins (who are teachers too)."""
    return person.user_type == UserType.TEACHER


def require_staff(caller: Caller | None) -> Person:
    """A teacher (admins are teachers too)."""
    person = require_person(caller)
    if not is_staff(person):
        raise Denied(Refusal.FORBIDDEN, "Only teachers can do this.")
    return person


def require_admin(caller: Caller | None) -> Person:
    """A teacher with the admin flag: every user-management operation."""
    person = require_person(caller)
    if not person.is_admin:
        raise Denied(Refusal.FORBIDDEN, "Only a school admin can do this.")
    return person


def require_roster_reader(caller: Caller | None) -> Caller:
    """A teacher, or an app whose API token has the ROSTER_READ scope."""
    match _signed_in(caller):
        case App() as app:
            if ApiScope.ROSTER_READ not in app.scopes:
                raise Denied(Refusal.FORBIDDEN, "This API token may not read the roster.")
            return app
        case Person():
            if not is_staff(person := require_person(caller)):
                raise Denied(Refusal.FORBIDDEN, "Only teachers can read the roster.")
            return person


def require_feed_reader(caller: Caller | None) -> Caller:
    """Who may follow the change feed: a school admin, or an app whose API token has the ROSTER_READ scope."""
    match _signed_in(caller):
        case App() as app:
            if ApiScope.ROSTER_READ not in app.scopes:
                raise Denied(Refusal.FORBIDDEN, "This API token may not read the roster.")
            return app
        case Person():
            return require_admin(caller)


def require_oneroster_reader(caller: Caller | None) -> App:
    """Who may read OneRoster: an app with an OAuth access token (from /oauth/token) granted a roster scope.
    Its client, an API token with ROSTER_READ, was checked when the token was issued and is checked again on
    every request (rollcall_caller); people sign in to Rollcall itself, not to OneRoster."""
    match _signed_in(caller):
        case App(access_token=True) as app:
            if not app.scopes & set(ROSTER_SCOPES):
                raise Denied(Refusal.FORBIDDEN, "This access token was granted no roster scope.")
            return app
        case App():
            raise Denied(
                Refusal.FORBIDDEN,
                "OneRoster takes an OAuth access token: exchange the API token's client id and secret for one "
                "at POST /oauth/token.",
            )
        case _:
            raise Denied(Refusal.FORBIDDEN, "OneRoster is for apps, with an OAuth access token.")


def require_oauth_client(caller: Caller | None, client_id: str) -> App:
    """Who may be issued a OneRoster access token: the read-only API token whose id is `client_id`, found by
    its own secret (never an access token, a session or a provisioning token)."""
    match caller:
        case App(access_token=False, provisions=False) as app if (
            str(app.token_id) == client_id and ApiScope.ROSTER_READ in app.scopes
        ):
            return app
        case _:
            raise Denied(Refusal.UNAUTHENTICATED, "The client id and secret are not a roster API token's.")


def require_roster_exporter(caller: Caller | None) -> Person:
    """Who may download the school's users as a CSV file: a school admin, and nobody else."""
    match _signed_in(caller):
        case Person(is_admin=True, must_change_password=False) as person:
            return person
        case _:
            raise Denied(Refusal.FORBIDDEN, "Only a school admin can download the roster.")


def require_card_printer(caller: Caller | None) -> Person:
    """Who may print login cards: teachers; never an app (the cards' codes are secrets)."""
    match _signed_in(caller):
        case App():
            raise Denied(Refusal.FORBIDDEN, "An API token cannot print login cards: their codes are secrets.")
        case Person() as person:
            if person.must_change_password:
                raise Denied(Refusal.FORBIDDEN, CHANGE_PASSWORD_FIRST)
            if not is_staff(person):
                raise Denied(Refusal.FORBIDDEN, "Only teachers can print login cards.")
            return person


def sees_every_pupil(person: Person) -> bool:
    """Whether this person reaches every pupil's login card and password (a school admin), rather than only
    those of the pupils in the classes they are in (a teacher; the domain checks the classes)."""
    return person.is_admin


def require_provider(caller: Caller | None) -> App:
    """The school's provider: a provisioning token (scope PROVISION), the only caller SCIM lets in."""
    match caller:
        case None:
            raise Denied(Refusal.UNAUTHENTICATED, "This token is unknown, expired or revoked.")
        case App(provisions=True) as app:
            return app
        case _:
            raise Denied(Refusal.FORBIDDEN, "Only a provisioning token (scope PROVISION) may use SCIM.")


def require_provisioned(school: School | None) -> School:
    """A school whose users come from a provider; a school whose users are managed by hand refuses SCIM."""
    if school is None or school.provider == Provider.MANUAL:
        raise Denied(
            Refusal.FORBIDDEN, "This school's users are managed by hand in Rollcall; provisioning is off."
        )
    return school


def require_not_provider(caller: Caller | None) -> Caller | None:
    """Anyone but the school's provider: a provisioning token works on SCIM and nowhere else."""
    if isinstance(caller, App) and caller.provisions:
        raise Denied(Refusal.FORBIDDEN, "A provisioning token works only on SCIM, at /scim/v2.")
    return caller


# What the UI may offer on a row. Each predicate is the rule its mutation enforces, given what the domain
# knows of the school and of the user concerned; tests/test_capabilities.py holds each one to the mutation.


@dataclass(frozen=True, slots=True)
class SchoolFacts:
    """What the user-management rules need to know of the caller's school."""

    managed_here: bool  # its users are managed in Rollcall, not by a provider
    teachers_can_reset_pupil_passwords: bool

    @classmethod
    def of(cls, school: School) -> SchoolFacts:
        return cls(
            managed_here=school.provider == Provider.MANUAL,
            teachers_can_reset_pupil_passwords=school.teachers_can_reset_pupil_passwords,
        )


@dataclass(frozen=True, slots=True)
class UserFacts:
    """What the rules need to know of the user acted on."""

    id: uuid.UUID
    type: UserType
    deleted: bool
    shares_a_class_with_caller: bool  # is in a class the caller is in (registration or teaching)


def may_edit_user(caller: Caller | None, school: SchoolFacts, user: UserFacts) -> bool:
    """updateUserField: an admin, in a school whose users are managed here, on a user not deleted."""
    return allows(require_admin, caller) and school.managed_here and not user.deleted


def may_delete_user(caller: Caller | None, school: SchoolFacts, user: UserFacts) -> bool:
    """deleteUsers: an admin, in a school whose users are managed here, on another user (deleting a deleted
    user again succeeds and changes nothing)."""
    return (
        allows(require_admin, caller)
        and school.managed_here
        and isinstance(caller, Person)
        and caller.user_id != user.id
    )


def may_reset_password_of(caller: Person, school: SchoolFacts, user: UserFacts) -> bool:
    """Whether this person may reset this user's password, whoever they are (resetPasswords refuses the whole
    batch with FORBIDDEN otherwise): an admin anyone's; a teacher, when the school allows it, a pupil's of a
    class they are in."""
    if sees_every_pupil(caller):
        return True
    return (
        is_staff(caller)
        and school.teachers_can_reset_pupil_passwords
        and user.type == UserType.PUPIL
        and user.shares_a_class_with_caller
    )


def may_reset_password(caller: Caller | None, school: SchoolFacts, user: UserFacts) -> bool:
    """resetPasswords succeeds: a staff member allowed this user's, in a school whose users are managed here,
    on a user not deleted."""
    return (
        allows(require_staff, caller)
        and isinstance(caller, Person)
        and may_reset_password_of(caller, school, user)
        and school.managed_here
        and not user.deleted
    )


class CardRefusal(enum.StrEnum):
    """Why a user named gets no login card."""

    NOT_FOUND = "NOT_FOUND"  # no such user in the school (or not an id at all)
    DELETED = "DELETED"
    NOT_A_PUPIL = "NOT_A_PUPIL"  # teachers have no cards
    NOT_IN_YOUR_CLASSES = "NOT_IN_YOUR_CLASSES"  # a teacher gets the cards of their classes' pupils only


def card_refusal(caller: Person, user: UserFacts | None) -> CardRefusal | None:
    """Why a card printer (require_card_printer let them through) gets no card for this user; None: they do."""
    if user is None:
        return CardRefusal.NOT_FOUND
    if user.deleted:
        return CardRefusal.DELETED
    if user.type != UserType.PUPIL:
        return CardRefusal.NOT_A_PUPIL
    if not sees_every_pupil(caller) and not user.shares_a_class_with_caller:
        return CardRefusal.NOT_IN_YOUR_CLASSES
    return None


def may_print_login_card(caller: Caller | None, user: UserFacts) -> bool:
    """loginCards gives this user's card."""
    if not allows(require_card_printer, caller):
        return False
    assert isinstance(caller, Person)
    return card_refusal(caller, user) is None


def may_edit_class(caller: Caller | None, school: SchoolFacts) -> bool:
    """renameClass, deleteClass, assignClass, removeFromClass: an admin, in a school managed here."""
    return allows(require_admin, caller) and school.managed_here


def may_list_deleted_users(caller: Caller | None) -> bool:
    """Deleted users are listed (users with status DELETED or ALL) for admins and roster-reading apps; a
    teacher sees the users who are in school."""
    match caller:
        case Person() as person:
            return person.is_admin
        case _:
            return allows(require_roster_reader, caller)


def actor_of(caller: Caller, request_id: str | None) -> Actor:
    """Who is making a change, as the audit log names them: a person by their id and username, an app by
    its token."""
    match caller:
        case Person():
            return Actor(id=caller.user_id, label=caller.label, request_id=request_id)
        case App():
            return Actor(id=None, label=caller.label, request_id=request_id)
