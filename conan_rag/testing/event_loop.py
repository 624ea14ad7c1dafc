"""A probe that an event loop keeps running while model batches run, synchronised on state.

After each model batch, the thread that ran it waits until the loop has ticked once more: a
loop left free ticks at once; a loop the work blocks never ticks, and the wait gives up (the
batch is then marked as not interleaved). No clock window is involved, so a busy machine only
makes the test slower, never wrong.

Work done on the loop itself outside the batches (tokenizing, converting vectors) is measured
as the loop thread's own CPU time between two ticks (:meth:`LoopProbe.longest_block`): a
loop that waits for the GIL or for a core on a busy machine ticks late but spends no CPU, so
only work that really runs on the loop counts.

Example:
    >>> import asyncio
    >>> probe = LoopProbe()
    >>> work = probe.wrap(lambda x: x * 2)
    >>> async def main() -> int:
    ...     async with probe:
    ...         return await asyncio.to_thread(work, 21)
    >>> asyncio.run(main()), probe.interleaved
    (42, [True])
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

F = TypeVar("F", bound=Callable[..., Any])
TICK_S = 0.002
PATIENCE_S = 60.0
__all__ = ["LoopProbe"]


class LoopProbe:
    """Wraps the model's batch function and runs a ticker on the loop while in ``async with``.

    Attributes:
        interleaved: per model batch, whether the loop ticked after it.
        threads: idents of the threads that ran model batches.
        stamps: ``time.perf_counter()`` of every tick.
        cpu: the loop thread's ``time.thread_time()`` at every tick.
    """

    def __init__(self) -> None:
        self.interleaved: list[bool] = []
        self.threads: set[int] = set()
        self.stamps: list[float] = []
        self.cpu: list[float] = []
        self._ticks = 0
        self._changed = threading.Condition()
        self._task: asyncio.Task[None] | None = None
        self._loop_thread = 0

    def wrap(self, batch: F) -> F:
        """``batch`` that, once done, waits for the loop to tick (at most :data:`PATIENCE_S`)."""

        def run(*args: Any, **kwargs: Any) -> Any:
            self.threads.add(threading.get_ident())
            out = batch(*args, **kwargs)
            with self._changed:
                before = self._ticks
                patience = PATIENCE_S if all(self.interleaved) else 0.0  # one miss: stop waiting
                ok = self._changed.wait_for(lambda: self._ticks > before, timeout=patience)
                self.interleaved.append(ok)
            return out

        return run  # type: ignore[return-value]

    async def _tick(self, started: asyncio.Event) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            with self._changed:
                self._ticks += 1
                self._changed.notify_all()
            self.stamps.append(time.perf_counter())
            self.cpu.append(time.thread_time())
            started.set()

    async def __aenter__(self) -> LoopProbe:
        self._loop_thread = threading.get_ident()
        started = asyncio.Event()
        self._task = asyncio.create_task(self._tick(started))
        await started.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()

    def failures(self, min_batches: int) -> list[str]:
        """What went wrong (empty when the loop stayed free through at least ``min_batches``)."""
        problems = []
        if self._loop_thread in self.threads:
            problems.append("the model ran on the event loop")
        if len(self.interleaved) < min_batches:
            problems.append(f"only {len(self.interleaved)} model batches: too short a job")
        if not all(self.interleaved):
            problems.append(
                f"the event loop did not tick after model batch "
                f"{self.interleaved.index(False) + 1} of {len(self.interleaved)}: it was blocked"
            )
        return problems

    @staticmethod
    def mark() -> tuple[float, float]:
        """``(perf_counter, thread_time)`` now; call it on the loop around the awaited work."""
        return time.perf_counter(), time.thread_time()

    def longest_block(self, start: tuple[float, float], end: tuple[float, float]) -> float:
        """The most loop-thread CPU seconds between two ticks within ``[start, end]``.

        Args:
            start: :meth:`mark` on the loop before the work.
            end: :meth:`mark` on the loop after it.
        """
        during = [c for s, c in zip(self.stamps, self.cpu, strict=True) if start[0] < s < end[0]]
        return float(np.diff([start[1], *during, end[1]]).max())
