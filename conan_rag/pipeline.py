"""The RAG pipeline on Chroma: incremental ingest/sync, exact-cosine retrieval, cited answers.

Ingestion is incremental and crash-safe without any marker file: every chunk records its
document's content hash (which also covers the chunking settings) and chunk count, and chunk ids
derive from content. A document is *unchanged* only when exactly its expected chunks are stored
with its current hash; otherwise the missing chunks are embedded and upserted first, then the
stale ones deleted. A run killed at any point therefore leaves a state that the next run turns
into exactly the collection a clean ingest builds.

Example:
    >>> import tempfile
    >>> from conan_rag.loaders import Document
    >>> encoder = load_encoder("sentence-transformers/all-MiniLM-L6-v2")
    >>> pipe = Pipeline(encoder, db=tempfile.mkdtemp())
    >>> pipe.ingest([Document("paris", "Paris is the capital of France.", "facts")]).added
    1
    >>> hit = pipe.retrieve("What is the capital of France?", k=1)[0]
    >>> hit.metadata["doc_id"], 0.0 < hit.score <= 1.0
    ('paris', True)
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from itertools import takewhile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from conan_rag.chunking import Chunk, ChunkConfig, Chunker
from conan_rag.encoder import Encoder, load_encoder
from conan_rag.errors import ConanConfigError
from conan_rag.loaders import Document, load_paths
from conan_rag.rerank import cosine_scores, mmr, order_by_score
from conan_rag.store import (
    DEFAULT_COLLECTION,
    batch_size,
    find_collection,
    open_client,
    open_collection,
    recorded_config,
)

if TYPE_CHECKING:
    from chromadb.api import ClientAPI

logger = logging.getLogger(__name__)

MODEL_ENV = "CONAN_RAG_MODEL"
_PAGE = 5000
_SENTENCE = re.compile(r"(?<=[。！？；])|(?<=[.!?])\s+")


@dataclass(frozen=True)
class Hit:
    """One retrieved chunk.

    Attributes:
        id: the chunk id.
        text: the chunk text.
        metadata: source, doc_id, title, chunk_index, char_start, char_end, ...
        score: the TRUE cosine similarity in [-1, 1] between the query and the chunk vectors
            (with ``rerank=False``, ``1 - cosine distance`` as Chroma reports it, equal up to
            float32 rounding).
    """

    id: str
    text: str
    metadata: dict[str, Any]
    score: float


@dataclass
class IngestReport:
    """What an ingest did, counted in documents (and chunks where said)."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    empty: int = 0
    chunks_embedded: int = 0
    chunks_deleted: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (skipped as ``[{"path": ..., "reason": ...}]``)."""
        data = asdict(self)
        data["skipped"] = [{"path": p, "reason": r} for p, r in self.skipped]
        return data


@dataclass(frozen=True)
class Answer:
    """An answer with the hits it cites as ``[1]``, ``[2]``, ... and the prompt sent."""

    text: str
    hits: list[Hit]
    prompt: str


@dataclass
class _Stored:
    ids: dict[str, str] = field(default_factory=dict)  # chunk id -> document hash
    counts: set[int] = field(default_factory=set)
    source: str = ""


def _scalar_metadata(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if isinstance(v, (str, int, float, bool))}


class Pipeline:
    """Ingest documents into a Chroma collection and retrieve them by exact cosine similarity.

    Args:
        encoder: the encoder; ``None`` uses the one the collection records, else
            ``$CONAN_RAG_MODEL``, else the default model.
        db: folder of the embedded store (default ``./.conan_rag``).
        url: ``http://HOST:PORT`` of a Chroma server instead (token from
            ``CONAN_RAG_CHROMA_TOKEN``).
        collection: collection name.
        chunking: chunking settings.
        client: an existing Chroma client (overrides ``db``/``url``).
        upsert_batch: records per upsert (capped by the client's maximum batch size).
        create: create the collection when missing (else raise).

    Raises:
        CollectionMismatchError: the collection was built by another encoder.
    """

    def __init__(
        self,
        encoder: Encoder | None = None,
        *,
        db: str | Path | None = None,
        url: str | None = None,
        collection: str = DEFAULT_COLLECTION,
        chunking: ChunkConfig | None = None,
        client: ClientAPI | None = None,
        upsert_batch: int | None = None,
        create: bool = True,
    ) -> None:
        self.client = client or open_client(db, url)
        if not create and find_collection(self.client, collection) is None:
            open_collection(self.client, collection, None, create=False)  # raises: names the fix
        if encoder is None:
            recorded = recorded_config(self.client, collection)
            if recorded is not None:
                encoder = load_encoder(config=recorded)
            else:
                encoder = load_encoder(os.environ.get(MODEL_ENV) or None)
        self.encoder = encoder
        self.name = collection
        self.collection = open_collection(self.client, collection, encoder, create=create)
        self.chunker = Chunker(encoder, chunking)
        self.upsert_batch = batch_size(self.client, upsert_batch)

    # -- ingestion ------------------------------------------------------------------------------
    def _stored(self) -> dict[str, _Stored]:
        stored: dict[str, _Stored] = {}
        offset = 0
        while True:
            page = self.collection.get(include=["metadatas"], limit=_PAGE, offset=offset)
            for chunk_id, meta in zip(page["ids"], page["metadatas"] or [], strict=True):
                meta = meta or {}
                entry = stored.setdefault(str(meta.get("doc_key", "")), _Stored())
                entry.ids[chunk_id] = str(meta.get("doc_hash", ""))
                entry.counts.add(int(meta.get("n_chunks", -1)))  # type: ignore[arg-type]
                entry.source = str(meta.get("source", ""))
            if len(page["ids"]) < _PAGE:
                return stored
            offset += _PAGE

    def ingest(
        self,
        inputs: Iterable[str | Path | Document],
        *,
        prune: bool = False,
        show_progress: bool = False,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> IngestReport:
        """Add new documents, replace changed ones, skip unchanged ones; optionally prune.

        Args:
            inputs: files, folders and/or :class:`~conan_rag.loaders.Document` objects.
            prune: also delete the chunks of documents not in ``inputs`` (a sync). Documents of
                files that could not be read this time are kept.
            show_progress: tqdm progress bar over the chunks embedded.
            on_batch: called as ``on_batch(chunks_done, chunks_total)`` after each upsert.

        Returns:
            An :class:`IngestReport`.

        Example:
            >>> pipe.ingest(["docs/"], prune=True).to_dict()  # doctest: +SKIP
        """
        report = IngestReport()
        documents: list[Document] = []
        paths: list[str | Path] = []
        for item in inputs:
            (documents if isinstance(item, Document) else paths).append(item)  # type: ignore[arg-type]
        if paths:
            loaded = load_paths(paths)
            documents.extend(loaded.documents)
            report.skipped.extend(loaded.skipped)
        unique: dict[str, Document] = {}
        for doc in documents:
            if doc.key in unique:
                logger.warning("Duplicate document %s: keeping the first one", doc.key)
                continue
            unique[doc.key] = doc
        stored = self._stored()
        pending: list[tuple[Chunk, dict[str, Any]]] = []
        stale: list[str] = []
        for key, doc in unique.items():
            entry = stored.get(key)
            digest = self.chunker.document_hash(doc)
            if entry is not None and self._complete(entry, digest):
                report.unchanged += 1
                continue
            chunks = self.chunker.chunk(doc)
            have = entry.ids if entry is not None else {}
            if not chunks:
                report.empty += 1
                stale.extend(have)
                continue
            if entry is None:
                report.added += 1
            else:
                report.updated += 1
            base = {
                **_scalar_metadata(doc.metadata),
                "source": doc.source,
                "doc_id": doc.doc_id,
                "doc_key": key,
                "title": doc.title,
                "doc_hash": digest,
                "n_chunks": len(chunks),
            }
            expected = {c.id for c in chunks}
            for chunk in chunks:
                if have.get(chunk.id) != digest:
                    meta = {
                        **base,
                        "chunk_index": chunk.index,
                        "char_start": chunk.char_start,
                        "char_end": chunk.char_end,
                    }
                    pending.append((chunk, meta))
            stale.extend(i for i in have if i not in expected)
        if prune:
            skipped_sources = {str(Path(p).resolve()) for p, _ in report.skipped}
            for key, entry in stored.items():
                if key not in unique and entry.source not in skipped_sources:
                    report.deleted += 1
                    stale.extend(entry.ids)
        self._upsert(pending, show_progress, on_batch)
        report.chunks_embedded = len(pending)
        self._delete(stale)
        report.chunks_deleted = len(stale)
        return report

    def sync(self, inputs: Iterable[str | Path | Document], **kwargs: Any) -> IngestReport:
        """:meth:`ingest` with ``prune=True``: the collection ends up holding exactly ``inputs``."""
        return self.ingest(inputs, prune=True, **kwargs)

    @staticmethod
    def _complete(entry: _Stored, digest: str) -> bool:
        return (
            bool(entry.ids)
            and all(h == digest for h in entry.ids.values())
            and entry.counts == {len(entry.ids)}
        )

    def _upsert(
        self,
        pending: Sequence[tuple[Chunk, dict[str, Any]]],
        show_progress: bool,
        on_batch: Callable[[int, int], None] | None,
    ) -> None:
        bar = None
        if show_progress and pending:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(pending), desc="Embedding chunks", unit="chunk")
        done = 0
        for start in range(0, len(pending), self.upsert_batch):
            group = pending[start : start + self.upsert_batch]
            vectors = self.encoder.encode([c.embed_text for c, _ in group], kind="document")
            self.collection.upsert(
                ids=[c.id for c, _ in group],
                embeddings=vectors,
                documents=[c.text for c, _ in group],
                metadatas=[m for _, m in group],
            )
            done += len(group)
            if bar is not None:
                bar.update(len(group))
            if on_batch is not None:
                on_batch(done, len(pending))
        if bar is not None:
            bar.close()

    def _delete(self, ids: Sequence[str]) -> None:
        for start in range(0, len(ids), self.upsert_batch):
            self.collection.delete(ids=list(ids[start : start + self.upsert_batch]))

    # -- retrieval ------------------------------------------------------------------------------
    def retrieve(
        self,
        query: str,
        k: int = 5,
        fetch_k: int | None = None,
        threshold: float | None = None,
        rerank: bool = True,
        where: dict[str, Any] | None = None,
        mmr: bool = False,
        lambda_mult: float = 0.5,
    ) -> list[Hit]:
        """The ``k`` best chunks for a query, scored by true cosine similarity.

        Args:
            query: the question (embedded with the encoder's query prompt).
            k: hits to return at most.
            fetch_k: candidates fetched from the index (default ``max(4 * k, 20)``).
            threshold: drop hits whose cosine similarity is below this, in [-1, 1].
            rerank: re-score the candidates exactly from their stored vectors (no re-embedding)
                and re-order them; else use ``1 - distance`` and the index's order.
            where: a Chroma metadata filter, e.g. ``{"source": "/docs/a.md"}``.
            mmr: pick the ``k`` hits by maximal marginal relevance among candidates above the
                threshold (each hit keeps its cosine similarity to the query as its score).
            lambda_mult: MMR's relevance/diversity trade-off (1 = relevance only).

        Returns:
            Hits, best first (MMR: in pick order).

        Example:
            >>> [h.score for h in pipe.retrieve("capital of France", k=2)]  # doctest: +SKIP
            [0.71, 0.12]
        """
        return self.retrieve_many([query], k, fetch_k, threshold, rerank, where, mmr, lambda_mult)[
            0
        ]

    def retrieve_many(
        self,
        queries: Sequence[str],
        k: int = 5,
        fetch_k: int | None = None,
        threshold: float | None = None,
        rerank: bool = True,
        where: dict[str, Any] | None = None,
        mmr: bool = False,
        lambda_mult: float = 0.5,
        show_progress: bool = False,
    ) -> list[list[Hit]]:
        """:meth:`retrieve` for many queries (embedded together, queried in groups)."""
        if k < 1:
            raise ConanConfigError(f"k must be >= 1, not {k}.")
        if threshold is not None and not -1.0 <= threshold <= 1.0:
            raise ConanConfigError(f"threshold is a cosine similarity in [-1, 1], not {threshold}.")
        count = self.collection.count()
        if not queries:
            return []
        if count == 0:
            return [[] for _ in queries]
        n_results = min(count, max(k, fetch_k or max(4 * k, 20)))
        vectors = self.encoder.encode(list(queries), kind="query", show_progress=show_progress)
        include: list[Any] = ["documents", "metadatas", "distances"]
        if rerank or mmr:
            include.append("embeddings")
        results: list[list[Hit]] = []
        group = 64
        for start in range(0, len(vectors), group):
            block = vectors[start : start + group]
            raw = self.collection.query(
                query_embeddings=block, n_results=n_results, where=where, include=include
            )
            for row, query_vector in enumerate(block):
                results.append(
                    self._hits(raw, row, query_vector, k, threshold, rerank, mmr, lambda_mult)
                )
        return results

    @staticmethod
    def _hits(
        raw: Any,
        row: int,
        query: np.ndarray,
        k: int,
        threshold: float | None,
        rerank: bool,
        use_mmr: bool,
        lambda_mult: float,
    ) -> list[Hit]:
        ids = list(raw["ids"][row])
        if not ids:
            return []
        texts = raw["documents"][row]
        metas = raw["metadatas"][row]
        stored = np.asarray(raw["embeddings"][row]) if raw.get("embeddings") is not None else None
        if rerank and stored is not None:
            scores = cosine_scores(query, stored)
        else:
            scores = 1.0 - np.asarray(raw["distances"][row], dtype=np.float64)
        order = order_by_score(scores, threshold) if rerank else _index_order(scores, threshold)
        if use_mmr and stored is not None:
            picks = mmr(query, stored, k, lambda_mult=lambda_mult, candidates=order)
        else:
            picks = [int(i) for i in order[:k]]
        return [Hit(ids[i], texts[i] or "", dict(metas[i] or {}), float(scores[i])) for i in picks]

    # -- answering ------------------------------------------------------------------------------
    def answer(
        self,
        query: str,
        llm: Any = None,
        *,
        k: int = 5,
        threshold: float | None = None,
        **retrieve_kwargs: Any,
    ) -> Answer:
        """Answer a question from retrieved passages, citing them as ``[n]``.

        Args:
            query: the question.
            llm: a ``str -> str`` callable or a LangChain runnable (``.invoke``; its output may
                be a string or a message with ``.content``). ``None`` gives an extractive answer:
                the sentence of each top passage closest to the question, cited.
            k: passages to retrieve.
            threshold: minimum cosine similarity of a passage.
            **retrieve_kwargs: passed on to :meth:`retrieve`.

        Returns:
            An :class:`Answer`.

        Example:
            >>> pipe.answer("capital?", llm=lambda prompt: "Paris [1]").text  # doctest: +SKIP
            'Paris [1]'
        """
        hits = self.retrieve(query, k=k, threshold=threshold, **retrieve_kwargs)
        prompt = build_prompt(query, hits)
        if llm is None:
            return Answer(self._extractive(query, hits), hits, prompt)
        return Answer(call_llm(llm, prompt), hits, prompt)

    def _extractive(self, query: str, hits: Sequence[Hit], top: int = 3) -> str:
        if not hits:
            return "No stored passage is similar enough to the question to answer it."
        picked: list[tuple[float, int, str]] = []
        q = self.encoder.encode([query], kind="query")[0]
        best_score = hits[0].score
        # A prefix of the hits (so [n] matches the prompt's numbering), dropping weak tails.
        chosen = [hits[0], *takewhile(lambda h: h.score >= 0.5 * best_score > 0, hits[1:top])]
        for number, hit in enumerate(chosen, 1):
            sentences = split_sentences(hit.text) or [hit.text]
            scores = self.encoder.encode(sentences, kind="document") @ q
            best = int(np.argmax(scores))
            picked.append((float(scores[best]), number, sentences[best]))
        lines = [f"{sentence} [{number}]" for _, number, sentence in picked]
        return "\n".join(lines) + "\n\n" + format_sources(chosen)

    # -- info -----------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """Collection name, model, dimension, fingerprint and counts of chunks/documents/sources."""
        stored = self._stored()
        return {
            "collection": self.name,
            "model_id": self.encoder.model_id,
            "dim": self.encoder.dim,
            "fingerprint": self.encoder.fingerprint,
            "max_seq_length": self.encoder.max_seq_length,
            "chunks": self.collection.count(),
            "documents": len(stored),
            "sources": len({e.source for e in stored.values()}),
        }


def _index_order(scores: np.ndarray, threshold: float | None) -> np.ndarray:
    order = np.arange(len(scores))
    return order if threshold is None else order[scores >= threshold]


def split_sentences(text: str) -> list[str]:
    """Sentences of a text (Chinese ``。！？；`` and English ``.!?`` + space end a sentence).

    Example:
        >>> split_sentences("Hi there. 你好。再见！")
        ['Hi there.', '你好。', '再见！']
    """
    sentences: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text):
        if paragraph.lstrip().startswith("#"):  # a markdown heading is not an answer
            continue
        sentences.extend(" ".join(s.split()) for s in _SENTENCE.split(paragraph) if s.strip())
    return sentences


def _label(hit: Hit) -> str:
    title = str(hit.metadata.get("title") or "")
    source = str(hit.metadata.get("source") or "")
    name = Path(source).name if source else str(hit.metadata.get("doc_id", hit.id))
    return f"{title} ({name})" if title else name


def format_sources(hits: Sequence[Hit]) -> str:
    """``Sources:`` lines, one per cited hit, with its cosine score."""
    lines = [f"[{n}] {_label(h)} (cosine {h.score:.3f})" for n, h in enumerate(hits, 1)]
    return "Sources:\n" + "\n".join(lines)


def build_prompt(query: str, hits: Sequence[Hit]) -> str:
    """A grounded prompt listing the passages as ``[1]``, ``[2]``, ... to cite.

    Example:
        >>> print(build_prompt("Why?", []).splitlines()[0])
        Answer the question using only the numbered passages below. Cite passages as [n].
    """
    passages = "\n\n".join(f"[{n}] {_label(h)}\n{h.text}" for n, h in enumerate(hits, 1))
    return (
        "Answer the question using only the numbered passages below. Cite passages as [n].\n"
        "If they do not contain the answer, say so.\n\n"
        f"Passages:\n{passages or '(none)'}\n\nQuestion: {query}\nAnswer:"
    )


def call_llm(llm: Any, prompt: str) -> str:
    """Call a ``str -> str`` callable or a LangChain runnable and return its text.

    Raises:
        TypeError: ``llm`` is neither, or returns something without text.
    """
    if hasattr(llm, "invoke"):
        output = llm.invoke(prompt)
    elif callable(llm):
        output = llm(prompt)
    else:
        raise TypeError(
            f"llm must be a str -> str callable or a LangChain runnable (with .invoke), not "
            f"{type(llm).__name__}."
        )
    if isinstance(output, str):
        return output
    content = getattr(output, "content", None)
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # multi-part message content
        return "".join(p if isinstance(p, str) else str(p.get("text", "")) for p in content)
    raise TypeError(
        f"The llm returned {type(output).__name__}; expected a str or a message with .content."
    )
