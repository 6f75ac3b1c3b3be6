"""Per-request DataLoaders: created with each request's context, so no cache crosses a request or a school."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from strawberry.dataloader import DataLoader

from db import models
from db.classes import classes_of_users
from db.engine import Database
from tenants.scope import school_scope


@dataclass
class Loaders:
    db: Database
    school_id: uuid.UUID | None
    user_classes: DataLoader[uuid.UUID, list[models.SchoolClass]] = field(init=False)

    def __post_init__(self) -> None:
        self.user_classes = DataLoader(self._load_user_classes)

    async def _load_user_classes(self, user_ids: Sequence[uuid.UUID]) -> list[list[models.SchoolClass]]:
        assert self.school_id is not None, "only a caller with a school loads its classes"
        async with school_scope(self.db, self.school_id) as session:
            found = await classes_of_users(session, school_id=self.school_id, user_ids=user_ids)
        return [found.get(user_id, []) for user_id in user_ids]
