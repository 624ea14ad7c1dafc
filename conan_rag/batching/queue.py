"""The batching queue: one worker thread per loaded model, serving every caller.

Callers (threads or asyncio tasks) submit requests (a list of rows, e.g. token-id lists, or
short texts the worker tokenizes) and get a :class:`concurrent.futures.Future`. The worker
waits a few milliseconds for more requests, pools their rows, sorts them by length, cuts
token-budget batches (:func:`~conan_rag.batching.planning.plan_batches`), runs them through a
:class:`BatchRunner` and routes each row's vector back to its request. Many single-query
callers therefore share one forward pass instead of queueing behind a lock one by one.

* Requests with different ``prompt_length`` never share a batch (pooling may skip the prompt).
* Each request brings its own token budget and batch size cap; a batch honours the smallest of
  those of the requests it serves.
* A batch that fails is retried request by request, so only the request that caused the error
  receives it; its batch-mates succeed.
* Large requests are served in slices of a few batches and rotate with newer requests, so a
  big ``encode`` does not starve short queries. A short request (at most one token budget)
  that arrives while a cycle runs ends that cycle after the batch in flight (the rows not yet
  run are given back to their requests), and a cycle runs its short requests' rows first: a
  query waits for about one batch of a large request, not for a whole cycle of it.
* The worker is a daemon thread started on the first request. It exits after a while idle (so
  a forgotten backend can be freed) and is stopped at interpreter exit; requests still pending
  then fail with :class:`~conan_rag.errors.QueueShutdownError`.

Forked processes (``os.fork``, multiprocessing's ``"fork"``, gunicorn ``--preload``, Celery
prefork): a child's first request starts its own worker; a request queued before the fork fails
with :class:`~conan_rag.errors.QueueWorkerError` instead of hanging (:meth:`BatchQueue.result`).
torch's CPU thread pool (GNU OpenMP in torch's Linux wheels) does not survive a fork: a thread
that ran multi-threaded torch ops in the parent hangs on its next one in the child. So a CPU
backend puts a forked child's torch on one thread (as PyTorch's DataLoader workers do); for
more threads per process, start children with ``multiprocessing.get_context("spawn")`` or load
the encoder in the child. A model on CUDA never works in a forked child
(:class:`~conan_rag.errors.ForkedProcessError`): load it in the child, or use spawn.

Example:
    >>> from conan_rag import load_encoder
    >>> enc = load_encoder("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    >>> ids = enc.tokenize(["a cat", "a dog"])
    >>> enc.queue.submit(ids).result().shape
    torch.Size([2, 384])
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, Generic

import torch

from conan_rag.batching.planning import plan_batches
from conan_rag.batching.requests import BatchRunner, Request, RowT
from conan_rag.batching.waiting import await_result, wait_result
from conan_rag.config import DEFAULT_BATCH_WAIT_MS, DEFAULT_MAX_BATCH_SIZE, DEFAULT_TOKEN_BUDGETS
from conan_rag.errors import ConanConfigError, QueueShutdownError
from conan_rag.forking import ForkAware

logger = logging.getLogger(__name__)

IDLE_EXIT_S = 30.0  # an idle worker exits (and restarts on the next request)
# At interpreter exit, the longest to wait for a batch in flight: a daemon thread killed inside
# a torch op aborts the process ("terminate called without an active exception").
EXIT_WAIT_S = 60.0
CYCLE_BUDGETS = 4  # one cycle runs at most this many token budgets of rows
_SHUTDOWN = "The encoder's batching queue has shut down (process exit)."


# (request, row) pairs of one cycle with the same prompt length
_Rows = list[tuple[Request[Any], int]]


class BatchQueue(ForkAware, Generic[RowT]):
    """Coalesce concurrent requests for one model into batches.

    Rows are opaque (see :mod:`~conan_rag.batching.requests`): the queue reads their lengths
    and hands the runner the very row objects it was given.

    Args:
        runner: what runs a batch (the shared backend, or anything with the same methods).
        token_budget: the budget of requests that do not bring their own.

    Example:
        >>> from conan_rag import load_encoder
        >>> queue = load_encoder("sentence-transformers/all-MiniLM-L6-v2", device="cpu").queue
        >>> future = queue.submit([[101, 7592, 102]], wait_ms=1.0)
        >>> future.result().shape
        torch.Size([1, 384])
    """

    def __init__(
        self, runner: BatchRunner[RowT], token_budget: int = DEFAULT_TOKEN_BUDGETS["cpu"]
    ) -> None:
        super().__init__()
        self.runner = runner
        self.token_budget = token_budget
        self._cond = threading.Condition()
        self._pending: deque[Request] = deque()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.batches_run = 0  # for tests and diagnostics
        # Called by the worker with (rows, padded tokens) of every forward pass (metrics).
        self.batch_observers: list[Callable[[int, int], None]] = []
        _QUEUES.add(self)

    # -- callers ------------------------------------------------------------------------------
    def submit(
        self,
        ids: Sequence[RowT],
        prompt_length: int = 0,
        *,
        wait_ms: float = DEFAULT_BATCH_WAIT_MS,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        token_budget: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Future[torch.Tensor]:
        """Queue rows; the future gives the runner's float32 vectors, one per row.

        Args:
            ids: the rows, as the runner's ``tokenize`` makes them (for the encoder: token ids
                per text, special tokens and prompt included).
            prompt_length: prompt tokens at the start of every row (rows with different values
                never share a batch).
            wait_ms: the longest this request waits for others to join its batch.
            max_batch_size: the most rows in a batch this request joins.
            token_budget: the most padded tokens in a batch this request joins (default: the
                queue's).
            progress: called from the worker with the number of rows finished, after each batch.

        Returns:
            A future resolving to a ``(len(ids), dim)`` float32 CPU tensor, or raising the error
            this request caused. Cancelling it drops the rows not yet embedded.
        """
        return self._put(
            ids, None, 0, prompt_length, wait_ms, max_batch_size, token_budget, progress
        )

    def submit_texts(
        self,
        texts: list[str],
        max_length: int,
        prompt_length: int = 0,
        *,
        wait_ms: float = DEFAULT_BATCH_WAIT_MS,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        token_budget: int | None = None,
    ) -> Future[torch.Tensor]:
        """Like :meth:`submit`, but the worker tokenizes ``texts`` (prompt already prepended).

        The worker tokenizes every text request of a cycle in one tokenizer call, so callers on
        an event loop never wait for the tokenizer lock.
        """
        return self._put(
            None, texts, max_length, prompt_length, wait_ms, max_batch_size, token_budget, None
        )

    def _put(
        self,
        ids: Sequence[RowT] | None,
        texts: list[str] | None,
        max_length: int,
        prompt_length: int,
        wait_ms: float,
        max_batch_size: int,
        token_budget: int | None,
        progress: Callable[[int], None] | None,
    ) -> Future[torch.Tensor]:
        if wait_ms < 0:
            raise ConanConfigError(
                f"wait_ms must be >= 0, not {wait_ms!r}.", setting="wait_ms", value=wait_ms
            )
        future: Future[torch.Tensor] = Future()
        request = Request(
            ids=ids,
            texts=texts,
            max_length=max_length,
            prompt_length=prompt_length,
            max_batch_size=max(1, max_batch_size),
            token_budget=max(1, token_budget or self.token_budget),
            deadline=time.monotonic() + wait_ms / 1000.0,
            future=future,
            progress=progress,
        )
        if request.rows == 0:
            future.set_result(torch.empty((0, self.runner.output_dim)))
            return future
        self._check_process()
        with self._cond:
            if self._stopping:
                raise QueueShutdownError(_SHUTDOWN)
            self._pending.append(request)
            if self._thread is None or not self._thread.is_alive():  # none yet, idle or died
                self._thread = threading.Thread(
                    target=self._run, name="conan-rag-batcher", daemon=True
                )
                self._thread.start()
            self._cond.notify()
        return future

    def result(self, future: Future[torch.Tensor]) -> torch.Tensor:
        """Wait for a future of this queue: ``future.result()``, but never a hang.

        Raises:
            QueueWorkerError: no worker will serve it (queued before this process was forked,
                or the worker thread died); the future is cancelled.
        """
        return wait_result(future, self._worker_lost)

    async def aresult(self, future: Future[torch.Tensor]) -> torch.Tensor:
        """Like :meth:`result`, awaited; cancelling the awaiting task cancels the request."""
        return await await_result(future, self._worker_lost)

    def _worker_lost(self) -> str | None:
        """Why no worker will serve a request still pending (None: one will, or it is done)."""
        # No lock: one inherited through a fork may be held by a thread that is not here. The
        # worker lets go of _thread only with nothing pending, after resolving its last cycle.
        if self._pid != os.getpid():
            return "it was queued in the process this one was forked from"
        thread = self._thread
        if thread is None:
            return "it was queued before this process was forked; no worker runs for it here"
        return None if thread.is_alive() else "the worker thread died"

    def _after_fork(self) -> None:
        """In a forked child: forget the parent's worker, lock and requests (none live here)."""
        self._cond = threading.Condition()
        self._pending = deque()
        self._thread = None
        self._stopping = False

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the worker: fail pending requests, let a running batch finish, join."""
        self._check_process()
        with self._cond:
            self._stopping = True
            pending, self._pending = list(self._pending), deque()
            thread = self._thread
            self._cond.notify_all()
        for request in pending:
            request.fail(QueueShutdownError(_SHUTDOWN))
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def running(self) -> bool:
        """Whether the worker thread is alive."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    # -- worker -------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            cycle = self._next_cycle()
            if cycle is None:
                return
            if not cycle:  # every waiting request was dropped (its caller gave up)
                continue
            try:
                self._serve(cycle)
            except BaseException as exc:
                logger.exception("batching worker failed")
                for request in cycle:
                    request.fail(exc)

    def _next_cycle(self) -> list[Request] | None:
        """Wait for requests (bounded wait for company), then take one cycle's worth."""
        with self._cond:
            idle_since = time.monotonic()
            while not self._pending:
                if self._stopping:
                    self._thread = None
                    return None
                if time.monotonic() - idle_since > IDLE_EXIT_S:
                    self._thread = None  # restarted by the next submit
                    return None
                self._cond.wait(IDLE_EXIT_S)
            while not self._stopping:
                remaining = min(r.deadline for r in self._pending) - time.monotonic()
                budget = self.runner.budget(min(r.token_budget for r in self._pending))
                if remaining <= 0 or sum(r.tokens for r in self._pending) >= budget:
                    break
                self._cond.wait(remaining)
            if self._stopping and not self._pending:
                self._thread = None
                return None
            cycle: list[Request] = []
            tokens = 0
            budget = self.runner.budget(self._pending[0].token_budget)
            while self._pending and tokens < CYCLE_BUDGETS * budget:
                request = self._pending.popleft()
                if request.dropped:
                    continue
                cycle.append(request)
                tokens += request.tokens
            return cycle

    def _serve(self, cycle: list[Request]) -> None:
        self._tokenize_texts([r for r in cycle if r.ids is None and not r.dropped])
        limit = CYCLE_BUDGETS * self.runner.budget(max(r.token_budget for r in cycle))
        # (large, prompt length) -> rows: short requests' rows are planned and run first
        groups: dict[tuple[bool, int], _Rows] = {}
        taken = 0
        for request in cycle:
            if request.dropped or request.ids is None:
                continue
            large = request.tokens > self.runner.budget(request.token_budget)
            rows = groups.setdefault((large, request.prompt_length), [])
            # Hand out rows while the cycle has room (the first row always fits); the rest of
            # a large request waits behind newer requests.
            while request.unserved and taken < limit:
                row = request.take_row()
                rows.append((request, row))
                taken += len(request.ids[row])
        cut = False
        for (_, prompt_length), rows in sorted(groups.items(), key=lambda item: item[0]):
            if cut:  # a short request is waiting: these rows go back to their requests
                _give_back(rows)
            elif rows:
                cut = self._run_rows(rows, prompt_length)
        unfinished = [r for r in cycle if not r.dropped and r.unserved]
        if unfinished:
            with self._cond:
                if not self._stopping:
                    self._pending.extend(unfinished)  # rotate behind newer requests
                    return
            for request in unfinished:
                request.fail(QueueShutdownError(_SHUTDOWN))

    def _tokenize_texts(self, requests: list[Request]) -> None:
        by_length: dict[int, list[Request]] = {}
        for request in requests:
            by_length.setdefault(request.max_length, []).append(request)
        for max_length, group in by_length.items():
            texts = [t for r in group for t in r.texts or []]
            try:
                ids = self.runner.tokenize(texts, max_length)
            except Exception:  # noqa: BLE001 - retry one by one to find the culprit
                for request in group:
                    try:
                        request.ids = self.runner.tokenize(request.texts or [], max_length)
                    except Exception as exc:  # noqa: BLE001
                        request.fail(exc)
                continue
            start = 0
            for request in group:
                request.ids = ids[start : start + request.rows]
                start += request.rows

    def _run_rows(self, rows: _Rows, prompt_length: int) -> bool:
        """Run ``rows`` batch by batch; ``True`` if a short newcomer cut them short."""
        ids: list[Any] = [r.ids[i] for r, i in rows]  # type: ignore[index]
        max_batch = min(r.max_batch_size for r, _ in rows)
        budget = self.runner.budget(min(r.token_budget for r, _ in rows))
        batches = plan_batches([len(x) for x in ids], budget, max_batch)
        for done, batch in enumerate(batches):
            if done and self._short_newcomer():
                _give_back([rows[k] for later in batches[done:] for k in later])
                return True
            live = [k for k in batch if not rows[k][0].dropped]
            if not live:
                continue
            try:
                vectors = self._forward([ids[k] for k in live], prompt_length)
            except Exception:  # noqa: BLE001 - find the request that caused it
                self._retry_by_request(rows, live, ids, prompt_length)
                continue
            self._scatter(rows, live, vectors)
        return False

    def _short_newcomer(self) -> bool:
        """Whether a request of at most one token budget, never served, is waiting."""
        with self._cond:
            return any(
                r.next_row == 0 and not r.dropped and r.tokens <= self.runner.budget(r.token_budget)
                for r in self._pending
            )

    def _forward(self, ids: list[Any], prompt_length: int) -> torch.Tensor:
        self.batches_run += 1
        for observe in list(self.batch_observers):
            observe(len(ids), len(ids) * max(len(x) for x in ids))
        return self.runner.embed(ids, prompt_length)

    def _retry_by_request(
        self, rows: _Rows, live: list[int], ids: list[Any], prompt_length: int
    ) -> None:
        by_request: dict[int, list[int]] = {}
        for k in live:
            by_request.setdefault(id(rows[k][0]), []).append(k)
        for ks in by_request.values():
            request = rows[ks[0]][0]
            try:
                vectors = self._forward([ids[k] for k in ks], prompt_length)
            except Exception as exc:  # noqa: BLE001 - this request's own error
                request.fail(exc)
                continue
            self._scatter(rows, ks, vectors)

    @staticmethod
    def _scatter(rows: _Rows, positions: list[int], vectors: torch.Tensor) -> None:
        by_request: dict[int, tuple[Request, list[int], list[int]]] = {}
        for j, k in enumerate(positions):
            request, row = rows[k]
            entry = by_request.setdefault(id(request), (request, [], []))
            entry[1].append(row)
            entry[2].append(j)
        for request, request_rows, picks in by_request.values():
            request.store(request_rows, vectors[torch.as_tensor(picks, dtype=torch.long)])


def _give_back(rows: _Rows) -> None:
    """Return rows handed to a cycle but not run to their requests (run in a later cycle)."""
    for request, row in rows:
        request.returned.append(row)


_QUEUES: weakref.WeakSet[BatchQueue] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for queue in list(_QUEUES):
        queue.stop(timeout=EXIT_WAIT_S)
