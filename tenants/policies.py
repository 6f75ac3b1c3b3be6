"""Who may do what: every authorization decision, made once, for every surface (GraphQL, HTTP, SCIM).

A policy returns the caller, narrowed to the kind it lets through, or raises `Denied`. Each surface maps a
denial to its own error (a GraphQL error code, an HTTP 401 or 403, a SCIM error); the decision stays here.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

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
    """Whether a policy lets the caller through, for a surface that answers "nothing here" rather than an
    error (an object looked up by id alone, whose type the caller did not name)."""
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


def actor_of(caller: Caller, request_id: str | None) -> Actor:
    """Who is making a change, as the audit log names them: a person by their id and username, an app by
    its token."""
    match caller:
        case Person():
            return Actor(id=caller.user_id, label=caller.label, request_id=request_id)
        case App():
            return Actor(id=None, label=caller.label, request_id=request_id)
