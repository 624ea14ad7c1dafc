"""Waiting for a batching-queue future without ever hanging on a worker that is gone.

A future from :class:`~conan_rag.batching.queue.BatchQueue` is resolved by the queue's worker
thread. If that worker no longer exists (the request was queued before this process was forked,
or the thread died), a plain ``future.result()`` would wait forever. :func:`wait_result` and
:func:`await_result` wait in slices of :data:`POLL_S` seconds and, between slices, ask the queue
whether the worker is lost; if it is, they cancel the future and raise
:class:`~conan_rag.errors.QueueWorkerError`.

Example:
    >>> from concurrent.futures import Future
    >>> future: Future[int] = Future()
    >>> try:
    ...     wait_result(future, lambda: "the worker thread died")
    ... except QueueWorkerError as exc:
    ...     print(exc.reason, future.cancelled())
    the worker thread died True
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TypeVar

from conan_rag.errors import QueueWorkerError

T = TypeVar("T")

POLL_S = 0.5  # how often a waiting caller checks that the worker still exists

# Returns why the worker cannot serve the future (None: it can, or the future is done).
LostCheck = Callable[[], str | None]


def _raise_if_lost(future: Future[T], lost: LostCheck) -> None:
    reason = lost()
    if reason is not None and not future.done():
        future.cancel()  # nobody will serve it: drop it, should a worker appear after all
        raise QueueWorkerError(reason)


def wait_result(future: Future[T], lost: LostCheck) -> T:
    """``future.result()``, raising instead of hanging when ``lost()`` gives a reason.

    Args:
        future: a future a queue worker resolves.
        lost: called every :data:`POLL_S` seconds while the future is pending; a string says
            the worker is gone (why), ``None`` that it still exists.

    Raises:
        QueueWorkerError: the worker is gone and the future is not done (it is cancelled).
    """
    while True:
        try:
            return future.result(timeout=POLL_S)
        except FutureTimeout:
            _raise_if_lost(future, lost)


async def await_result(future: Future[T], lost: LostCheck) -> T:
    """Like :func:`wait_result`, awaited without blocking the event loop.

    Cancelling the awaiting task cancels ``future`` (its request is dropped), as awaiting
    ``asyncio.wrap_future(future)`` does.

    Example:
        >>> from concurrent.futures import Future
        >>> future: Future[int] = Future()
        >>> future.set_result(7)
        >>> asyncio.run(await_result(future, lambda: None))
        7
    """
    wrapped = asyncio.wrap_future(future)
    try:
        while True:
            done, _ = await asyncio.wait({wrapped}, timeout=POLL_S)
            if done:
                return wrapped.result()
            _raise_if_lost(future, lost)
    finally:
        if not wrapped.done():
            wrapped.cancel()  # the caller was cancelled or the worker is lost: drop the request
