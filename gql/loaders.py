"""Per-request DataLoaders: created with each request's context, so no cache crosses a request or a school."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.dataloader import DataLoader

from db import models
from db.classes import classes_of_users, member_counts
from db.engine import Database
from db.schools import get_school
from db.scope import SchoolTransactions, school_scope
from db.users import sharing_a_class, users_by_id
from tenants.policies import SchoolFacts


@dataclass
class Loaders:
    db: Database
    school_id: uuid.UUID | None
    # The request's transactions in this school, so a batch can run in the one the caller was found in.
    transactions: SchoolTransactions | None = None
    # Whose classes `shares_a_class` is about: the signed-in person, if any.
    viewer_id: uuid.UUID | None = None
    user_classes: DataLoader[uuid.UUID, list[models.SchoolClass]] = field(init=False)
    class_member_counts: DataLoader[uuid.UUID, int] = field(init=False)
    users: DataLoader[uuid.UUID, models.User | None] = field(init=False)
    shares_a_class: DataLoader[uuid.UUID, bool] = field(init=False)
    _school: SchoolFacts | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.user_classes = DataLoader(self._load_user_classes)
        self.class_member_counts = DataLoader(self._load_class_member_counts)
        self.users = DataLoader(self._load_users)
        self.shares_a_class = DataLoader(self._load_shares_a_class)

    def clear(self) -> None:
        """Forget everything loaded: what follows a change must see it."""
        for loader in (self.user_classes, self.class_member_counts, self.users, self.shares_a_class):
            loader.clear_all()
        self._school = None

    async def school(self) -> SchoolFacts:
        """What the policies need to know of the school, read once per request."""
        if self._school is None:
            assert self.school_id is not None, "only a caller with a school asks about it"
            async with self._scope(self.school_id) as session:
                row = await get_school(session, self.school_id)
            assert row is not None, "a signed-in caller's school exists"
            self._school = SchoolFacts.of(row)
        return self._school

    def _scope(self, school_id: uuid.UUID) -> AbstractAsyncContextManager[AsyncSession]:
        if self.transactions is not None and self.transactions.school_id == school_id:
            return self.transactions.scope()
        return school_scope(self.db, school_id)

    async def _load_user_classes(self, user_ids: Sequence[uuid.UUID]) -> list[list[models.SchoolClass]]:
        assert self.school_id is not None, "only a caller with a school loads its classes"
        async with self._scope(self.school_id) as session:
            found = await classes_of_users(session, school_id=self.school_id, user_ids=user_ids)
        return [found.get(user_id, []) for user_id in user_ids]

    async def _load_class_member_counts(self, class_ids: Sequence[uuid.UUID]) -> list[int]:
        assert self.school_id is not None, "only a caller with a school counts its classes' members"
        async with self._scope(self.school_id) as session:
            found = await member_counts(session, school_id=self.school_id, class_ids=class_ids)
        return [found.get(class_id, 0) for class_id in class_ids]

    async def _load_users(self, user_ids: Sequence[uuid.UUID]) -> list[models.User | None]:
        assert self.school_id is not None, "only a caller with a school loads its users"
        async with self._scope(self.school_id) as session:
            found = await users_by_id(session, school_id=self.school_id, user_ids=user_ids)
        return [found.get(user_id) for user_id in user_ids]

    async def _load_shares_a_class(self, user_ids: Sequence[uuid.UUID]) -> list[bool]:
        if self.school_id is None or self.viewer_id is None:
            return [False for _ in user_ids]
        async with self._scope(self.school_id) as session:
            found = await sharing_a_class(
                session, school_id=self.school_id, viewer_id=self.viewer_id, user_ids=user_ids
            )
        return [user_id in found for user_id in user_ids]
