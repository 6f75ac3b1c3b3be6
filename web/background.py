"""Work a request starts and does not wait for (an import's apply), run in this worker's event loop.

`BackgroundTasks` keeps a reference to every task until it ends (the event loop keeps only weak ones, so an
unreferenced task may be collected mid-way) and logs one that failed. The app's lifespan owns one: at shutdown
it waits up to ROLLCALL_SHUTDOWN_GRACE_SECONDS for the tasks under way to end, then cancels those still
running (each then records that it stopped: a cancelled import is marked FAILED, its transaction rolled back).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger("rollcall.background")

DEFAULT_GRACE_SECONDS = 30.0
# After cancelling, how long the cancelled tasks get to record that they stopped.
CANCELLED_GRACE_SECONDS = 5.0


class BackgroundTasks:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False

    def __len__(self) -> int:
        return len(self._tasks)

    @property
    def accepting(self) -> bool:
        """Whether new work is taken (not once the worker is shutting down)."""
        return not self._closing

    def start(self, work: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        """Run `work` in the background; refused (RuntimeError) once the worker is shutting down."""
        if self._closing:
            work.close()
            raise RuntimeError("the server is shutting down")
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._ended)
        return task

    def _ended(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("background task %s failed", task.get_name(), exc_info=error)

    async def join(self) -> None:
        """Wait for every task under way (tests, and the shutdown)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def shutdown(self, grace: float) -> None:
        """Take no more work; wait up to `grace` seconds for the tasks under way, then cancel the rest."""
        self._closing = True
        if not self._tasks:
            return
        log.info("waiting up to %ss for %d background task(s)", grace, len(self._tasks))
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
        if not pending:
            return
        log.warning("cancelling %d background task(s) still running after %ss", len(pending), grace)
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=CANCELLED_GRACE_SECONDS)
