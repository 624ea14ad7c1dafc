"""The single-process engine: the plan's row stream embedded and written in this process.

The caller's thread reads and cuts documents into row batches of about one token budget (one
model batch); a writer thread embeds each batch, hands it to the sink and completes the
documents it finishes, while the next batch is cut. At most :data:`QUEUED` batches wait, so
memory stays bounded whatever the size of a file or of the input.

Example:
    >>> LocalEngine().name
    'local'
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from conan_rag.rag.ingest.rows import EMBEDDED, Batch, Limits, Rows, cut_item, embed_rows
from conan_rag.rag.ingest.sink import Completer, Sink
from conan_rag.runtime.memory import release_free_memory

if TYPE_CHECKING:
    from conan_rag.protocols import EncoderLike
    from conan_rag.rag.ingest.planning import Input
    from conan_rag.rag.ingest.progress import Progress
    from conan_rag.rag.ingest.task import IngestTask

logger = logging.getLogger(__name__)
QUEUED = 2  # batches cut ahead of the one being embedded
EXIT_WAIT_S = 60.0  # at interpreter exit, the longest to wait for a batch in flight
__all__ = ["LocalEngine", "Writer"]


@dataclass(frozen=True)
class LocalEngine:
    """Run the ingest in this process (the default engine).

    Attributes:
        name: ``"local"``.
    """

    name: str = "local"

    def run(self, task: IngestTask, inputs: Sequence[Input], prune: bool) -> None:
        """Plan, then cut, embed and write every document to embed."""
        plan = task.plan(inputs, prune=prune)
        encoder = task.encoder
        completer = Completer(task.sink, task.report)
        limits = Limits(min(task.write_batch, encoder.config.max_batch_size), encoder.token_budget)
        task.progress.phase("embedding", total=plan.chars, unit="char")
        writer = Writer(encoder, task.out, completer, task.progress)
        try:
            rows = Rows()
            for item in plan.items():
                for batch in cut_item(item, task.chunker, limits, rows):
                    writer.put(batch)
            if len(rows):
                writer.put(rows.batch())
            writer.close()
        except BaseException:
            writer.close(drop_pending=True)  # the batch in flight is written and completed
            raise
        completer.delete(plan.deletions)  # emptied and pruned documents, once all else is done


class Writer:
    """Embeds, writes and completes row batches on a daemon thread, in order.

    Args:
        encoder: embeds the rows (documents' prompt).
        sink: where the rows go.
        completer: completes documents once their rows are written.
        progress: advanced after every model batch.
    """

    def __init__(
        self, encoder: EncoderLike, sink: Sink, completer: Completer, progress: Progress
    ) -> None:
        self.encoder = encoder
        self.sink = sink
        self.completer = completer
        self.progress = progress
        self._queue: queue.Queue[Batch | None] = queue.Queue(maxsize=QUEUED)
        self._drop = threading.Event()
        self._error: BaseException | None = None
        self._closed = False
        # Set when the thread ends. Waited on instead of Thread.join: on Python 3.11 a join
        # interrupted by Ctrl-C marks a still-running thread as stopped, so a second join would
        # return at once and the interpreter could exit under a thread inside torch or Chroma.
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="conan-rag-writer", daemon=True)
        self._thread.start()
        _WRITERS.add(self)

    def put(self, batch: Batch) -> None:
        """Queue a batch (blocks while :data:`QUEUED` batches wait).

        Raises:
            BaseException: what the writer thread failed with, if it failed.
        """
        while True:
            self._raise_error()
            try:
                self._queue.put(batch, timeout=0.2)
                return
            except queue.Full:
                continue

    def close(self, drop_pending: bool = False) -> None:
        """Write what is queued (or, with ``drop_pending``, only the batch in flight), then stop.

        May be called again with ``drop_pending`` while a first close waits (Ctrl-C during the
        final flush): the queued batches are then dropped, and the call still waits for the
        batch in flight, so no thread is left running native code when the interpreter exits.

        Raises:
            BaseException: what the writer thread failed with, if it failed.
        """
        if drop_pending:
            self._drop.set()
            while True:  # the queued batches (and maybe an earlier stop signal) go
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break
            self._queue.put(None)  # room: the queue was just emptied and only we put
        elif not self._closed:
            self._queue.put(None)
        self._closed = True
        self._done.wait()
        if not drop_pending:
            self._raise_error()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            self._serve()
        finally:
            self._done.set()

    def _serve(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is None:
                return
            if self._drop.is_set() or self._error is not None:
                continue
            try:
                self._write(batch)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                self._error = exc
            release_free_memory()  # keeps a long ingest's memory flat (see runtime.memory)

    def _write(self, batch: Batch) -> None:
        chars = float(batch["chars"].sum())
        embedded = int(sum(kind in EMBEDDED for kind in batch["kind"]))

        def batch_done(count: int) -> None:  # per model batch: its share of the characters
            self.progress.advance(chars * count / embedded)

        batch = embed_rows(self.encoder, batch, batch_done)
        if not embedded:
            self.progress.advance(chars)
        written = self.completer.tally(self.sink.write(batch))
        self.completer.flush()  # documents this batch finished are complete from now on
        self.progress.advance(0, chunks=written)


_WRITERS: weakref.WeakSet[Writer] = weakref.WeakSet()


@atexit.register
def _finish_in_flight() -> None:
    """At exit, let a writer finish its batch: a daemon thread killed inside torch aborts."""
    for writer in list(_WRITERS):
        writer._drop.set()
        writer._done.wait(EXIT_WAIT_S)
