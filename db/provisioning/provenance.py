"""Provenance: a provider manages only the users and classes it provisioned (`provisioned_at`)."""

from __future__ import annotations

from sqlalchemy import ColumnElement, and_

from db.models import SchoolClass, User


def provider_may_manage() -> ColumnElement[bool]:
    """Whom a provider sees and may change: the users it provisioned, until it deletes them, and never an
    admin. Everyone else (the admin made with the command line, users made in Rollcall itself) does not exist
    for it: not found by id, absent from lists and filters, no member of any class it reads or writes."""
    return and_(User.provisioned_at.is_not(None), User.deprovisioned_at.is_(None), User.is_admin.is_(False))


def provider_may_manage_class() -> ColumnElement[bool]:
    """Which classes a provider sees and may change: the ones it created (`provisioned_at`). Classes made in
    Rollcall itself do not exist for it, exactly as users made there do not: not found by id, absent from
    lists, filters and its users' classes.

    Within its own classes, it adds and removes only the users it may manage (provider_may_manage): the other
    members are hidden from it and stay, whatever a change of the members says. It may not delete a class
    while one of them uses it (kept_from_provider)."""
    return SchoolClass.provisioned_at.is_not(None)


def kept_from_provider() -> ColumnElement[bool]:
    """A member of a provider's class whose membership no change of the provider ends, not even deleting the
    class: a user it does not manage who is not deleted (a teacher the school made an admin, say). Deleting
    the class is refused instead (MANAGED_IN_ROLLCALL). A deleted member's membership ends with the class, as
    with every class deleted in Rollcall, and the `class.deleted` audit event names them; otherwise every pupil
    the provider deprovisioned would keep their old class from ever being deleted."""
    return and_(~provider_may_manage(), User.deleted_at.is_(None))
