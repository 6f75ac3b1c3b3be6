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
from db.scope import SchoolTransactions, school_scope


@dataclass
class Loaders:
    db: Database
    school_id: uuid.UUID | None
    # The request's transactions in this school, so a batch can run in the one the caller was found in.
    transactions: SchoolTransactions | None = None
    user_classes: DataLoader[uuid.UUID, list[models.SchoolClass]] = field(init=False)
    class_member_counts: DataLoader[uuid.UUID, int] = field(init=False)

    def __post_init__(self) -> None:
        self.user_classes = DataLoader(self._load_user_classes)
        self.class_member_counts = DataLoader(self._load_class_member_counts)

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
