"""Progress of long work, in phases: a callback for programs, tqdm bars for people.

An ingest goes through ``scanning`` (walking folders), ``checking`` (reading and hashing each
document to find what changed), ``embedding`` (counted in characters of text, advanced after
every batch the model runs, so the rate and the ETA are meaningful) and ``deleting``.

Example:
    >>> events = []
    >>> progress = Progress(events.append)
    >>> progress.phase("checking", total=2, unit="file")
    >>> progress.advance(1)
    >>> progress.close()
    >>> events[-1].phase, events[-1].done, events[-1].total
    ('checking', 1.0, 2.0)
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

DESCRIPTIONS = {
    "scanning": "Scanning",
    "checking": "Checking for changes",
    "embedding": "Embedding",
    "deleting": "Deleting",
    "starting ray": "Starting Ray",
    "completing": "Marking documents complete",
    "exporting": "Embedding to Parquet",
    "loading": "Loading chunks",
    "loading chunk 0": "Completing documents",
}


@dataclass(frozen=True)
class ProgressEvent:
    """Where long work stands.

    Attributes:
        phase: the phase (a key of :data:`DESCRIPTIONS`).
        done: units done in this phase.
        total: units in this phase, when known.
        unit: what is counted (``"file"``, ``"char"``, ``"chunk"``).
        chunks: chunks embedded and written so far (the whole run).
    """

    phase: str
    done: float
    total: float | None
    unit: str
    chunks: int


ProgressCallback = Callable[[ProgressEvent], None]


class Progress:
    """Reports phases and advances to a callback and/or a tqdm bar. Thread-safe.

    Args:
        callback: called with a :class:`ProgressEvent` after every change.
        show: draw a tqdm bar per phase (on stderr).
    """

    def __init__(self, callback: ProgressCallback | None = None, show: bool = False) -> None:
        self.callback = callback
        self.show = show
        self.chunks = 0
        self._lock = threading.Lock()
        self._phase = ""
        self._done = 0.0
        self._total: float | None = None
        self._unit = ""
        self._bar: Any = None

    def phase(self, name: str, total: float | None = None, unit: str = "file") -> None:
        """Start a phase (ending the previous one)."""
        with self._lock:
            self._close_bar()
            self._phase, self._done, self._unit = name, 0.0, unit
            self._total = None if total is None else float(total)
            if self.show:
                from tqdm.auto import tqdm

                self._bar = tqdm(
                    total=total,
                    desc=DESCRIPTIONS.get(name, name),
                    unit=f" {unit}s",  # "3 files", "120 files/s"
                    unit_scale=unit == "char",
                    dynamic_ncols=True,
                )
            self._emit()

    def advance(self, amount: float = 1, chunks: int = 0) -> None:
        """Count ``amount`` units of the phase done, and ``chunks`` more chunks written."""
        with self._lock:
            self._done += amount
            self.chunks += chunks
            if self._bar is not None:
                self._bar.update(amount)
                if chunks:
                    # a string: tqdm writes numbers in a postfix as "2e+04"
                    self._bar.set_postfix_str(f"chunks={self.chunks}", refresh=False)
            self._emit()

    def close(self) -> None:
        """End the current phase's bar."""
        with self._lock:
            self._close_bar()

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _emit(self) -> None:
        if self.callback is not None:
            event = ProgressEvent(self._phase, self._done, self._total, self._unit, self.chunks)
            self.callback(event)
