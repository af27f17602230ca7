"""A process's work of its own, beside requests: loops that run until stopped, and periodic jobs."""
from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, Sequence

log = logging.getLogger(__name__)

Job = Callable[[], Awaitable[object]]


class Background:
    """Work of its own: loops that run until stopped, and jobs run one after another once an
    `interval` (finishing what failures left behind). One job failing does not stop the others."""

    def __init__(self, loops: Sequence[Job], jobs: Sequence[Job], *, interval: float = 60.0):
        self.loops = tuple(loops)
        self.jobs = tuple(jobs)
        self.interval = interval
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        """Start every loop and the periodic jobs (once; a second call does nothing)."""
        if self._tasks:
            return
        loop = asyncio.get_running_loop()
        for work in (self._periodic, *self.loops):
            task = loop.create_task(work(), name=_name(work))
            task.add_done_callback(_report_end)
            self._tasks.append(task)

    @property
    def tasks(self) -> tuple[asyncio.Task, ...]:
        """The running tasks: the periodic jobs' first, then one per loop."""
        return tuple(self._tasks)

    async def run_jobs(self) -> None:
        """Run each periodic job once; one that fails is logged by name and the next one runs."""
        for job in self.jobs:
            try:
                await job()
            except Exception:  # one failed round must not end the loop
                log.exception("background job %s failed", _name(job))

    async def _periodic(self) -> None:
        while True:
            await self.run_jobs()
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        """Cancel every task and wait until each has ended."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _name(work: Job) -> str:
    return getattr(work, "__qualname__", repr(work))


def _report_end(task: asyncio.Task) -> None:
    # Loops end only when cancelled: say so when one died of an error, or it would stop unnoticed.
    if not task.cancelled() and task.exception() is not None:
        log.error("background task %s ended", task.get_name(), exc_info=task.exception())
