"""Admission: how many tokens wait for the model, and refusing (429) what would overflow it.

A request's tokens are held from admission until its answer is ready. A request that would lift
the total above the limit is refused with 429 and a ``Retry-After`` estimated from the tokens
served over the last seconds; a request arriving at an empty queue is always admitted, so one
large request is never refused forever. A request over :attr:`Admission.slice_tokens` is served
in slices (:mod:`conan_rag.server.app`): only its first slice can be refused, the next ones are
admitted as ``continuing``, and only the slices in flight are held, so other requests are
admitted between them. Used from the event loop only: no lock.

Example:
    >>> gate = Admission(100)
    >>> with gate.hold(80):
    ...     gate.tokens, gate.requests
    (80, 1)
    >>> with gate.hold(80), gate.hold(30):
    ...     pass
    Traceback (most recent call last):
    ...
    conan_rag.server.errors.ApiError: The server has 80 tokens queued; ...would exceed ...
    >>> gate.tokens
    0
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from conan_rag.server.errors import ApiError

RATE_WINDOW_S = 10.0  # tokens served over this long estimate the throughput
MAX_RETRY_AFTER_S = 60
SLICES = 4  # a request holds at most max_tokens / SLICES at a time (one queue cycle by default)


class Admission:
    """Queued-token accounting for one server.

    Args:
        max_tokens: the most tokens admitted and not yet answered.
        clock: seconds, monotonic (for tests).
    """

    def __init__(self, max_tokens: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_tokens = max_tokens
        self.tokens = 0  # admitted, not yet answered
        self.requests = 0
        self._clock = clock
        self._served: deque[tuple[float, int]] = deque()  # (when, tokens) of answered requests

    @property
    def slice_tokens(self) -> int:
        """The most tokens one request holds at a time; a larger one is served in slices.

        Example:
            >>> Admission(131072).slice_tokens
            32768
        """
        return max(1, self.max_tokens // SLICES)

    @contextmanager
    def hold(self, tokens: int) -> Iterator[None]:
        """Admit ``tokens`` for the duration of the block (refusing with 429 if they overflow).

        Raises:
            ApiError: 429, with ``Retry-After`` in seconds.
        """
        self.admit(tokens)
        answered = False
        try:
            yield
            answered = True
        finally:
            self.release(tokens, answered=answered)

    def admit(self, tokens: int, *, continuing: bool = False) -> None:
        """Count ``tokens`` as queued, or raise the 429 :class:`ApiError` refusing them.

        ``continuing``: the next slice of a request already admitted (never refused).
        """
        if not continuing and self.requests and self.tokens + tokens > self.max_tokens:
            wait = self.retry_after(self.tokens + tokens - self.max_tokens)
            raise ApiError(
                429,
                f"The server has {self.tokens} tokens queued; this request's {tokens} would "
                f"exceed its limit of {self.max_tokens}. Retry after {wait} s, or send smaller "
                "requests.",
                code="queue_full",
                headers={"Retry-After": str(wait)},
            )
        self.tokens += tokens
        self.requests += 1

    def release(self, tokens: int, *, answered: bool = True) -> None:
        """Forget ``tokens`` admitted by :meth:`admit`; answered ones feed the rate estimate."""
        self.tokens -= tokens
        self.requests -= 1
        if answered:
            self._served.append((self._clock(), tokens))

    def rate(self) -> float | None:
        """Tokens answered per second over the last :data:`RATE_WINDOW_S` (None: none yet)."""
        now = self._clock()
        while self._served and self._served[0][0] < now - RATE_WINDOW_S:
            self._served.popleft()
        if not self._served:
            return None
        span = max(now - self._served[0][0], 1.0)
        return sum(t for _, t in self._served) / span

    def retry_after(self, excess: int) -> int:
        """Whole seconds until ``excess`` tokens have drained at the recent rate (1 to 60).

        Example:
            >>> Admission(10).retry_after(500)  # no rate measured yet
            1
        """
        rate = self.rate()
        if not rate:
            return 1
        return max(1, min(MAX_RETRY_AFTER_S, math.ceil(excess / rate)))
