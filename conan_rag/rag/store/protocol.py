"""The vector store as the RAG application sees it: one small interface, one Chroma implementation.

Everything in :mod:`conan_rag.rag` that reads or writes chunks goes through :class:`VectorStore`;
:mod:`~conan_rag.rag.store.chroma` is the only module that imports ``chromadb``. Another store
(a Chroma fork, a server of another kind) is one more class with these methods.

Vectors are L2-normalised float32 and the store measures cosine distance, so ``1 - distance`` is
a true cosine.

Example:
    >>> records = Records(ids=["a"], texts=["hello"])
    >>> len(records), records.metadatas
    (1, None)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

Field = Literal["texts", "metadatas", "vectors"]
__all__ = ["Field", "Records", "VectorStore"]


@dataclass
class Records:
    """Stored chunks, column by column; a column not asked for is ``None``.

    Attributes:
        ids: chunk ids.
        texts: chunk texts.
        metadatas: chunk metadata (scalars only).
        vectors: ``(len(ids), dim)`` float32.
        distances: cosine distances to the query (only from :meth:`VectorStore.query`).
    """

    ids: list[str]
    texts: list[str] | None = None
    metadatas: list[dict[str, Any]] | None = None
    vectors: np.ndarray | None = None
    distances: list[float] | None = None

    def __len__(self) -> int:
        return len(self.ids)


@runtime_checkable
class VectorStore(Protocol):
    """One collection of chunks: what the pipeline, the ingest and the search need of a store.

    Attributes:
        name: the collection's name.
        max_batch: the most records one write may carry.
    """

    name: str
    max_batch: int

    def count(self) -> int:
        """How many chunks the collection holds."""
        ...

    def scan(self, fields: Sequence[Field] = ("metadatas",), page: int = 5000) -> Iterator[Records]:
        """Every chunk, ``page`` at a time, with the ``fields`` asked for."""
        ...

    def get(
        self,
        ids: Sequence[str],
        fields: Sequence[Field],
        where: Mapping[str, Any] | None = None,
    ) -> Records:
        """The chunks with these ids that exist and match ``where`` (in no particular order)."""
        ...

    def find(self, where: Mapping[str, Any], fields: Sequence[Field] = ("metadatas",)) -> Records:
        """Every chunk whose metadata matches ``where`` (``{"doc_key": {"$in": [...]}}``).

        Costs what the matching chunks cost, not the collection (the store indexes metadata).
        """
        ...

    def query(
        self,
        vectors: np.ndarray,
        n: int,
        where: Mapping[str, Any] | None = None,
        fields: Sequence[Field] = ("texts", "metadatas"),
    ) -> list[Records]:
        """The ``n`` nearest chunks of each query vector (approximate), with ``distances``."""
        ...

    def upsert(
        self,
        ids: Sequence[str],
        vectors: np.ndarray,
        texts: Sequence[str],
        metadatas: Sequence[Mapping[str, Any]],
    ) -> None:
        """Insert or replace chunks (at most :attr:`max_batch`; an idempotent call)."""
        ...

    def update_metadata(self, ids: Sequence[str], metadatas: Sequence[Mapping[str, Any]]) -> None:
        """Merge these keys into the stored chunks' metadata (at most :attr:`max_batch`)."""
        ...

    def delete(self, ids: Sequence[str]) -> None:
        """Delete chunks by id (at most :attr:`max_batch`; missing ids are ignored)."""
        ...

    def mark_changed(self) -> None:
        """Record that the content is about to change (derived indexes are stale from now on)."""
        ...

    def version(self) -> str:
        """A cheap token that differs whenever the content changed, as far as the store can tell.

        It changes after :meth:`mark_changed`, and also after writes by other programs where the
        store can see them (see the implementation's docstring for what it can and cannot).
        """
        ...

    def derived_path(self, kind: str) -> Path:
        """Where data derived from this collection (``kind``: e.g. ``"lexical"``) is kept."""
        ...

    def note(self, name: str) -> str | None:
        """A short text kept with the collection under ``name`` (``None``: none kept)."""
        ...

    def write_note(self, name: str, text: str) -> None:
        """Keep a short text with the collection (e.g. the last evaluation's threshold sweep)."""
        ...

    def spec(self) -> dict[str, Any]:
        """What another process needs to open the same collection (no secrets)."""
        ...
