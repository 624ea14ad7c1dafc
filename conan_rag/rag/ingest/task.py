"""What one ingest run works with (:class:`IngestTask`), and what runs it (:class:`Engine`).

Example:
    >>> from conan_rag.rag.ingest import Engine, LocalEngine
    >>> isinstance(LocalEngine(), Engine)
    True
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from conan_rag.rag.ingest.planning import Input, Plan, Planner, StoredKeys
from conan_rag.rag.ingest.progress import Progress
from conan_rag.rag.ingest.report import IngestReport
from conan_rag.rag.ingest.sink import Sink, StoreSink

if TYPE_CHECKING:
    from conan_rag.protocols import EncoderLike
    from conan_rag.rag.chunking import Chunker
    from conan_rag.rag.store import VectorStore

__all__ = ["Engine", "IngestTask"]


@dataclass
class IngestTask:
    """What one run works with, whatever the engine.

    Attributes:
        store: the collection the plan is made against.
        encoder: the encoder the collection records.
        chunker: cuts documents for ``encoder``.
        sink: where the rows go (default: the store, through :class:`StoreSink`).
        progress: reports phases and advances (default: silent).
        write_batch: most records per store write.
        report: what the run did (filled in as it goes).
        catalog: what the store holds, in step with it (lets a prune skip reading every chunk).
    """

    store: VectorStore
    encoder: EncoderLike
    chunker: Chunker
    sink: Sink | None = None
    progress: Progress = field(default_factory=Progress)
    write_batch: int = 1000
    report: IngestReport = field(default_factory=IngestReport)
    catalog: StoredKeys | None = None

    def __post_init__(self) -> None:
        self.write_batch = max(1, min(self.write_batch, self.store.max_batch))
        if self.sink is None:
            self.sink = StoreSink(self.store, self.write_batch)

    @property
    def out(self) -> Sink:
        """The sink (set by ``__post_init__``)."""
        assert self.sink is not None
        return self.sink

    def plan(self, inputs: Iterable[Input], *, prune: bool = False) -> Plan:
        """Scan the inputs and diff them against the store (counted in :attr:`report`).

        Raises:
            InputPathError: a named path does not exist (nothing is read, written or deleted).
        """
        planner = Planner(self.store, self.chunker, self.report, self.progress, self.catalog)
        return planner.plan(inputs, prune=prune)


@runtime_checkable
class Engine(Protocol):
    """Runs a task's plan: cuts, embeds and hands the rows to the task's sink."""

    @property
    def name(self) -> str:
        """What the engine is called (``"local"``, ``"ray"``)."""
        ...

    def run(self, task: IngestTask, inputs: Sequence[Input], prune: bool) -> None:
        """Plan with :meth:`IngestTask.plan`, then embed and write what the plan says."""
        ...
