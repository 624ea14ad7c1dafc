"""What the batching queue runs batches through and serves: BatchRunner and Request.

Rows are opaque here: a row is whatever the runner's ``tokenize`` makes (token ids for the
encoder, a tokenized pair with its segment ids for the reranker). The queue and the planner
read only a row's length, its token count; the runner alone reads inside.

Example:
    >>> from concurrent.futures import Future
    >>> request = Request([[101, 102]], None, 0, 0, 8, 512, 0.0, Future())
    >>> request.rows, request.tokens
    (1, 2)
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence, Sized
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

import torch

logger = logging.getLogger(__name__)

# One row of a batch: any object whose len() is its token count.
RowT = TypeVar("RowT", bound=Sized)


class BatchRunner(Protocol[RowT]):
    """What the queue needs from a model: tokenize texts and embed one planned batch.

    :class:`~conan_rag.runtime.backend.Backend` and
    :class:`~conan_rag.reranking.runner.CrossEncoderRunner` implement it; the queue never
    reaches further.
    """

    @property
    def output_dim(self) -> int:
        """Width of the vectors :meth:`embed` returns."""
        ...

    def tokenize(self, texts: Sequence[str], max_length: int) -> list[RowT]:
        """One row per text, truncated at ``max_length`` tokens."""
        ...

    def embed(self, rows: Sequence[RowT], prompt_length: int = 0) -> torch.Tensor:
        """Vectors of one batch, rows in input order (thread-safe)."""
        ...

    def budget(self, requested: int) -> int:
        """The token budget to plan with when ``requested`` is asked for."""
        ...


@dataclass(eq=False)
class Request(Generic[RowT]):
    """One caller's rows (or texts to tokenize into rows), waiting for vectors."""

    ids: Sequence[RowT] | None
    texts: list[str] | None
    max_length: int
    prompt_length: int
    max_batch_size: int
    token_budget: int
    deadline: float
    future: Future[torch.Tensor]
    progress: Callable[[int], None] | None = None
    next_row: int = 0  # rows handed to a cycle so far
    returned: list[int] = field(default_factory=list)  # handed out, given back unrun
    done_rows: int = 0
    out: torch.Tensor | None = None
    failed: bool = False
    rows: int = field(init=False)

    def __post_init__(self) -> None:
        self.rows = len(self.ids if self.ids is not None else self.texts or [])

    @property
    def tokens(self) -> int:
        """Token count of the rows not yet handed out (texts: a rough estimate)."""
        if self.ids is not None:
            ids = self.ids
            return sum(len(x) for x in ids[self.next_row :]) + sum(
                len(ids[i]) for i in self.returned
            )
        return sum(len(t) // 4 + 2 for t in (self.texts or [])[self.next_row :])

    @property
    def unserved(self) -> bool:
        """Rows remain to be handed out (never handed, or given back)."""
        return bool(self.returned) or self.next_row < self.rows

    def take_row(self) -> int:
        """The next row to hand out: one given back first, else the next new one."""
        if self.returned:
            return self.returned.pop()
        self.next_row += 1
        return self.next_row - 1

    @property
    def dropped(self) -> bool:
        """The caller gave up (cancelled the future) or the request failed."""
        return self.failed or self.future.cancelled()

    def fail(self, exc: BaseException) -> None:
        """Deliver ``exc`` to the caller (once) and drop the request's remaining rows."""
        self.failed = True
        with contextlib.suppress(InvalidStateError):  # the caller may cancel meanwhile
            self.future.set_exception(exc)

    def store(self, rows: Sequence[int], vectors: torch.Tensor) -> None:
        """Put vectors for ``rows`` in place; resolve the future when every row is done."""
        if self.failed or self.future.done():
            return
        if self.out is None:
            self.out = torch.empty((self.rows, vectors.shape[1]), dtype=vectors.dtype)
        self.out[torch.as_tensor(rows, dtype=torch.long)] = vectors
        self.done_rows += len(rows)
        if self.progress is not None:
            try:
                self.progress(len(rows))
            except Exception:
                logger.exception("progress callback failed")
                self.progress = None
        if self.done_rows == self.rows:
            with contextlib.suppress(InvalidStateError):  # the caller may cancel meanwhile
                self.future.set_result(self.out)
