"""Fork safety: objects holding threads or locks start afresh in a forked child process.

A process forked from another (``os.fork``, multiprocessing's ``"fork"`` start method, gunicorn
``--preload``, Celery prefork) has one thread, the one that forked; every other thread of the
parent is gone, and a lock one of them held stays locked forever. A :class:`ForkAware` object
is told so once in each child (:meth:`ForkAware._after_fork`), from an ``os.register_at_fork``
hook, or, should a fork made outside Python skip the hook, on its next
:meth:`ForkAware._check_process`. Module-level state uses :func:`after_fork_in_child`.

Example:
    >>> import os, threading
    >>> class Counter(ForkAware):
    ...     def __init__(self) -> None:
    ...         super().__init__()
    ...         self.lock = threading.Lock()
    ...     def _after_fork(self) -> None:
    ...         self.lock = threading.Lock()
    >>> counter = Counter()
    >>> counter._check_process()  # same process: nothing to do
    >>> counter._pid == os.getpid()
    True
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable

_live: weakref.WeakSet[ForkAware] = weakref.WeakSet()
_reset_lock = threading.Lock()  # one reset per object when several threads notice a fork


class ForkAware:
    """Base of objects whose threads or locks do not survive a fork.

    Subclasses call ``super().__init__()`` and override :meth:`_after_fork`, which runs once in
    every forked child before the object is used there; :meth:`_check_process` at entry points
    covers forks that bypass Python's at-fork hooks.
    """

    def __init__(self) -> None:
        self._pid = os.getpid()  # the process this object's threads and locks belong to
        _live.add(self)

    def _after_fork(self) -> None:
        """Replace what the parent's threads held (locks, thread handles, queued work)."""

    def _check_process(self) -> None:
        """Reset now if this is a forked child whose at-fork hook did not run."""
        if self._pid != os.getpid():
            with _reset_lock:
                if self._pid != os.getpid():
                    self._reset()

    def _reset(self) -> None:
        self._after_fork()
        self._pid = os.getpid()


def after_fork_in_child(hook: Callable[[], None]) -> None:
    """Run ``hook`` in every child forked from this process (no-op without ``os.fork``).

    The hook runs in the child's only thread, before any other code there: it must neither
    wait for a lock nor start a thread.
    """
    if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
        os.register_at_fork(after_in_child=hook)


def _reset_all() -> None:
    global _reset_lock
    _reset_lock = threading.Lock()
    for obj in list(_live):
        try:
            obj._reset()
        except Exception:  # noqa: BLE001 - keep resetting the others; its next use retries
            continue


after_fork_in_child(_reset_all)
