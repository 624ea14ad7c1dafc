"""What an ingest plans, shared by every engine: stored state, jobs, and cutting one document.

The single-process ingest (:mod:`~conan_rag.rag.ingest`) and the Ray ingest
(:mod:`~conan_rag.rag.distributed`) make the same plan with the same code, so they store the same
chunk ids, texts and metadata:

* :class:`StoredDocument` is what a collection holds of one document, and says whether it is
  complete (chunk 0 carries the chunk count, and exactly that many chunks carry the hash).
* :class:`Job` is a document to (re)embed: its hash, and which chunks are already stored.
* :func:`cut_document` cuts a document and yields the chunks still to write, with their metadata;
  its :class:`Cut` then holds chunk 0 (written last, with the count) and the stale chunk ids.

Example:
    >>> from conan_rag import load_encoder
    >>> from conan_rag.rag.chunking import Chunker
    >>> from conan_rag.rag.documents import Document
    >>> chunker = Chunker(load_encoder("sentence-transformers/all-MiniLM-L6-v2"))
    >>> doc = Document("paris", "Paris is the capital of France.", "facts")
    >>> job = Job(chunker.document_hash(doc), 31, "facts", {}, True)
    >>> cut = Cut()
    >>> list(cut_document(doc, job, chunker, cut))  # one chunk: chunk 0, kept for last
    [(None, 31)]
    >>> cut.first[1]["n_chunks"], cut.first[0].text, cut.changed
    (1, 'Paris is the capital of France.', False)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conan_rag.rag.chunking import Chunk, Chunker, text_bytes
from conan_rag.rag.documents import BLOCK_CHARS, DocumentLike

Unit = Path | DocumentLike  # a file to read, or one in-memory document
Record = tuple[Chunk, dict[str, Any]]  # a chunk and the metadata stored with it


@dataclass
class StoredDocument:
    """What the collection holds for one document.

    Attributes:
        ids: chunk id → the document hash that chunk was written with. A chunk 0 written
            without the chunk count (a run stopped before it completed the document) maps to
            ``""``, so it is written again, with the count.
        n_chunks: the count chunk 0 records once the document is complete.
        source: the file (or group of in-memory documents) it came from.
    """

    ids: dict[str, str] = field(default_factory=dict)
    n_chunks: int | None = None
    source: str = ""

    def add(self, chunk_id: str, meta: dict[str, Any]) -> None:
        """Record one stored chunk from its metadata."""
        self.source = str(meta.get("source", ""))
        digest = str(meta.get("doc_hash", ""))
        if meta.get("chunk_index") == 0:
            count = meta.get("n_chunks")
            if isinstance(count, int) and not isinstance(count, bool):
                self.n_chunks = count
            else:
                digest = ""  # not completed: chunk 0 is written again, with the count
        self.ids[chunk_id] = digest

    def complete(self, digest: str) -> bool:
        """All chunks of the document with hash ``digest`` are stored, and nothing else."""
        return (
            self.n_chunks == len(self.ids)
            and bool(self.ids)
            and all(h == digest for h in self.ids.values())
        )


@dataclass
class Job:
    """A document to embed: its hash, length and source, and what is stored of it."""

    digest: str
    chars: int
    source: str
    have: dict[str, str]
    added: bool


@dataclass
class Cut:
    """What cutting one document found, besides the chunks it yielded.

    Attributes:
        first: chunk 0 and its metadata (with ``n_chunks``), when it must be (re)written.
        stale: stored chunk ids of the document that its current text no longer has.
        changed: the text changed since it was checked (nothing of it may be completed).
        chunks: how many chunks the document has.
        tail: characters after the last chunk (for progress).
    """

    first: Record | None = None
    stale: list[str] = field(default_factory=list)
    changed: bool = False
    chunks: int = 0
    tail: int = 0


def scalar_metadata(values: dict[str, Any]) -> dict[str, Any]:
    """The entries Chroma can store (strings, numbers and booleans)."""
    return {k: v for k, v in values.items() if isinstance(v, (str, int, float, bool))}


def source_of(unit: Unit) -> str:
    """The source a unit's documents carry (a file's path, or a document's source)."""
    return str(unit) if isinstance(unit, Path) else unit.source


class Hashing:
    """A document whose blocks also feed a hash (to see it did not change between reads)."""

    def __init__(self, document: DocumentLike, chunker: Chunker) -> None:
        self.document = document
        self.hasher = chunker.start_digest(document)
        self.doc_id, self.source, self.key = document.doc_id, document.source, document.key
        self.title, self.metadata = document.title, document.metadata

    def blocks(self, size: int = BLOCK_CHARS) -> Iterator[str]:
        """The document's blocks, each fed to the hash as it passes."""
        for block in self.document.blocks(size):
            self.hasher.update(text_bytes(block))
            yield block


def base_metadata(doc: DocumentLike, digest: str) -> dict[str, Any]:
    """The metadata every chunk of a document carries."""
    return {
        **scalar_metadata(doc.metadata),
        "source": doc.source,
        "doc_id": doc.doc_id,
        "doc_key": doc.key,
        "title": doc.title,
        "doc_hash": digest,
    }


def cut_document(
    doc: DocumentLike, job: Job, chunker: Chunker, cut: Cut
) -> Iterator[tuple[Record | None, int]]:
    """Cut a document, yielding ``(record, chars)`` per chunk; ``record`` is ``None`` if stored.

    Chunk 0 is never yielded as a record: when it must be written, it is left in ``cut.first``
    with the chunk count, to be written after all the others. ``chars`` is how far the chunk
    advances through the text (for progress; ``cut.tail`` has the rest). Once the generator is
    exhausted, ``cut`` holds what else was found.
    """
    base = base_metadata(doc, job.digest)
    hashing = Hashing(doc, chunker)
    expected: set[str] = set()
    done_chars = 0
    first: Record | None = None
    for chunk in chunker.iter_chunks(hashing):
        expected.add(chunk.id)
        meta = {
            **base,
            "chunk_index": chunk.index,
            "char_start": chunk.char_start,
            "char_end": chunk.char_end,
        }
        advance = max(0, chunk.char_end - done_chars)
        done_chars = max(done_chars, chunk.char_end)
        if chunk.index == 0:
            first = (chunk, meta)  # written last, once the others are stored
            yield None, advance
        elif job.have.get(chunk.id) != job.digest:
            yield (chunk, meta), advance
        else:
            yield None, advance
    cut.chunks = len(expected)
    cut.tail = max(0, job.chars - done_chars)
    cut.changed = hashing.hasher.hexdigest()[:32] != job.digest
    if cut.changed:
        return
    if first is not None and job.have.get(first[0].id) != job.digest:
        first[1]["n_chunks"] = len(expected)
        cut.first = first
    cut.stale = [i for i in job.have if i not in expected]
