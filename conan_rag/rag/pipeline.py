"""The RAG pipeline on Chroma: incremental ingest, exact-cosine retrieval, cited answers.

:class:`Pipeline` ties the pieces together: a store (:mod:`~conan_rag.rag.store`) guarded by the
encoder's fingerprint, the ingest (:mod:`~conan_rag.rag.ingest`), retrieval
(:mod:`~conan_rag.rag.search`) and answers (:mod:`~conan_rag.rag.answer`). Querying builds no
ingest machinery: the chunker is made on the first ingest.

Example:
    >>> import tempfile
    >>> from conan_rag import load_encoder
    >>> from conan_rag.rag.sources.documents import Document
    >>> encoder = load_encoder("sentence-transformers/all-MiniLM-L6-v2")
    >>> pipe = Pipeline(encoder, db=tempfile.mkdtemp())
    >>> pipe.ingest([Document("paris", "Paris is the capital of France.", "facts")]).added
    1
    >>> hit = pipe.retrieve("What is the capital of France?", RetrievalOptions(k=1))[0]
    >>> hit.metadata["doc_id"], 0.0 < hit.score <= 1.0
    ('paris', True)
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conan_rag.errors import ConanRagError
from conan_rag.protocols import EncoderLike
from conan_rag.rag.answer import Answer, build_prompt, call_llm, extractive_answer
from conan_rag.rag.chunking import ChunkConfig, Chunker
from conan_rag.rag.ingest import (
    Engine,
    IngestReport,
    IngestTask,
    ParquetExport,
    Progress,
    ProgressCallback,
    RayEngine,
    run_ingest,
)
from conan_rag.rag.search.lexical_index import LexicalIndex
from conan_rag.rag.search.retrieval import Hit, RetrievalOptions, retrieve_many
from conan_rag.rag.sources import DocumentLike
from conan_rag.rag.store import (
    DEFAULT_COLLECTION,
    DEFAULT_DB,
    DIM_KEY,
    FINGERPRINT_KEY,
    MODEL_KEY,
    ChromaStore,
    batch_size,
    config_in,
    find_collection,
    open_client,
    open_collection,
    recorded_config,
)
from conan_rag.registry import load_encoder

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from conan_rag.config import EncoderConfig
    from conan_rag.rag.store.chroma import ClientAPI

MODEL_ENV = "CONAN_RAG_MODEL"


class Pipeline:
    """Ingest documents into a Chroma collection and retrieve them by exact cosine similarity.

    Args:
        encoder: the encoder; ``None`` uses the one the collection records, else
            ``$CONAN_RAG_MODEL``, else the default model.
        db: folder of the embedded store (default ``./.conan_rag``).
        url: ``http://HOST:PORT`` of a Chroma server instead (token from
            ``CONAN_RAG_CHROMA_TOKEN``).
        collection: collection name.
        chunking: chunking settings (checked against the encoder on the first ingest).
        client: an existing Chroma client (overrides ``db``/``url``).
        upsert_batch: records per Chroma write (capped by the client's maximum batch size).
        create: create the collection when missing (else raise).

    Raises:
        CollectionMismatchError: the collection was built by another encoder.
        CollectionNotFoundError: ``create`` is false and the collection does not exist.
        StoreError: the store cannot be opened.
    """

    def __init__(
        self,
        encoder: EncoderLike | None = None,
        *,
        db: str | Path | None = None,
        url: str | None = None,
        collection: str = DEFAULT_COLLECTION,
        chunking: ChunkConfig | None = None,
        client: ClientAPI | None = None,
        upsert_batch: int | None = None,
        create: bool = True,
    ) -> None:
        if (
            encoder is None
            and client is None
            and url is None
            and not Path(db or DEFAULT_DB).expanduser().exists()
        ):
            # A new store: load the model before creating anything, so a failure leaves nothing.
            encoder = load_encoder(os.environ.get(MODEL_ENV) or None)
        self.client = client or open_client(db, url, write=create)
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
        self.url = url if client is None else None  # where Ray writers can reach the store
        self.collection = open_collection(self.client, collection, encoder, create=create)
        self.chunking = chunking or ChunkConfig()
        self._chunker: Chunker | None = None
        self.upsert_batch = batch_size(self.client, upsert_batch)
        embedded = url is None and (client is None or db is not None)
        folder = Path(db or DEFAULT_DB).expanduser().resolve() if embedded else None
        self.store = ChromaStore(self.client, self.collection, db=folder, url=url)
        self.lexical_path = self.store.derived_path("lexical")
        self._lexical: LexicalIndex | None = None

    @property
    def lexical(self) -> LexicalIndex:
        """The collection's BM25 index (opened on first use; synced when the collection changed).

        It lives beside an embedded store, or in the user's cache for a server or a client
        passed in (:meth:`~conan_rag.rag.store.protocol.VectorStore.derived_path`).
        """
        if self._lexical is None:
            self._lexical = LexicalIndex(self.lexical_path)
        return self._lexical

    def catalog(self) -> LexicalIndex:
        """The lexical index's chunk table, brought in step: what ``info`` and a prune read.

        It keeps each chunk's document key and source beside its tokens, so counts and "what is
        stored under these paths" are index lookups. Catching up costs the changes since the
        last sync (by delta after a conan-rag write), or one full read when it is missing or a
        foreign writer changed the collection.
        """
        self.lexical.ensure(self.store, matrices=False)
        return self.lexical

    @property
    def chunker(self) -> Chunker:
        """The chunker (made on first use: querying never needs it)."""
        if self._chunker is None:
            self._chunker = Chunker(self.encoder, self.chunking)
        return self._chunker

    # -- ingestion ------------------------------------------------------------------------------
    def ingest(
        self,
        inputs: Iterable[str | Path | DocumentLike],
        *,
        prune: bool = False,
        show_progress: bool = False,
        on_progress: ProgressCallback | None = None,
        engine: Engine | None = None,
        to_parquet: str | Path | None = None,
    ) -> IngestReport:
        """Add new documents, replace changed ones, skip unchanged ones; optionally prune.

        Args:
            inputs: files, folders and/or documents
                (:class:`~conan_rag.rag.sources.documents.Document`).
            prune: also delete stored documents that are gone from the inputs: files under the
                given folders that no longer exist, and documents no longer in a file (or group
                of in-memory documents with the same source) that was read completely. Nothing
                else is deleted.
            show_progress: tqdm bars per phase (scanning, checking, embedding).
            on_progress: called with a :class:`~conan_rag.rag.ingest.progress.ProgressEvent` after
                every step (every model batch while embedding).
            engine: where the plan runs (:class:`~conan_rag.rag.ingest.Engine`):
                :class:`~conan_rag.rag.ingest.RayEngine` runs on Ray Data (the same plan and
                the same stored chunks, cut and embedded by Ray workers; needs
                ``conan-rag[ray]``); ``None``: this process
                (:class:`~conan_rag.rag.ingest.LocalEngine`), or Ray for an export.
            to_parquet: write the vectors to Parquet files in this new folder instead of the
                collection; load them with ``conan-rag load``
                (:mod:`~conan_rag.rag.ingest.export`).

        Returns:
            An :class:`~conan_rag.rag.ingest.report.IngestReport`.

        Raises:
            InputPathError: a named path does not exist; nothing was read, written or deleted.
            IngestInterrupted: Ctrl-C; ``.report`` says what was committed (re-run to resume).

        Example:
            >>> import tempfile
            >>> from conan_rag.demo import CORPUS
            >>> MINILM = "sentence-transformers/all-MiniLM-L6-v2"
            >>> pipe = Pipeline(load_encoder(MINILM), db=tempfile.mkdtemp())
            >>> report = pipe.ingest([CORPUS], prune=True)
            >>> report.added, report.unsupported, pipe.ingest([CORPUS]).unchanged
            (6, {'(no suffix)': 1}, 6)
        """
        sink = None
        runner: Engine | None = engine
        if to_parquet is not None:  # an export is another sink (on Ray unless told otherwise)
            sink = ParquetExport(to_parquet, self.encoder, self.name)
            runner = engine or RayEngine()
        task = IngestTask(
            self.store,
            self.encoder,
            self.chunker,
            sink=sink,
            progress=Progress(on_progress, show_progress),
            write_batch=self.upsert_batch,
            catalog=self.catalog() if prune and sink is None else None,
        )
        report = run_ingest(task, inputs, prune=prune, engine=runner)
        if sink is None and self.lexical_path.exists():  # keep an index in use in step:
            self._catch_up()  # by delta; matrices at next search
        return report

    def _catch_up(self) -> None:
        """Bring the lexical index in step after a write; its failure never fails the ingest.

        The chunks are stored by then: an index that cannot follow is derived data, rebuilt at
        its next use.
        """
        try:
            self.lexical.ensure(self.store, matrices=False)
        except (sqlite3.Error, OSError) as exc:
            logger.warning(
                "The lexical index %s could not follow this ingest (%s); the chunks are stored "
                "and the index is rebuilt at the next lexical search.",
                self.lexical_path,
                exc,
            )

    def sync(
        self,
        inputs: Iterable[str | Path | DocumentLike],
        *,
        show_progress: bool = False,
        on_progress: ProgressCallback | None = None,
    ) -> IngestReport:
        """:meth:`ingest` with ``prune=True``."""
        return self.ingest(inputs, prune=True, show_progress=show_progress, on_progress=on_progress)

    # -- retrieval ------------------------------------------------------------------------------
    def retrieve(self, query: str, options: RetrievalOptions | None = None) -> list[Hit]:
        """The best chunks for a query, scored by true cosine similarity.

        Args:
            query: the question (embedded with the encoder's query prompt).
            options: k, fetch_k, threshold, rescore, MMR and filter
                (:class:`~conan_rag.rag.search.retrieval.RetrievalOptions`; default: its defaults).

        Returns:
            Hits, best first (MMR: in pick order).

        Raises:
            ConanInputError: the query is empty or only whitespace.
        """
        return self.retrieve_many([query], options)[0]

    def retrieve_many(
        self,
        queries: Sequence[str],
        options: RetrievalOptions | None = None,
        show_progress: bool = False,
    ) -> list[list[Hit]]:
        """:meth:`retrieve` for many queries (embedded together, searched in groups)."""
        options = options or RetrievalOptions()
        lexical = None
        if options.retrieval != "dense":
            lexical = self.lexical  # synced first when store.version() moved (any writer)
        return retrieve_many(
            self.store, self.encoder, queries, options, show_progress, lexical=lexical
        )

    # -- answering ------------------------------------------------------------------------------
    def answer(
        self, query: str, llm: Any = None, options: RetrievalOptions | None = None
    ) -> Answer:
        """Answer a question from retrieved passages, citing them as ``[n]``.

        Args:
            query: the question.
            llm: a ``str -> str`` callable or a LangChain runnable (``.invoke``; its output may
                be a string or a message with ``.content``). ``None`` gives an extractive answer:
                the sentence of each top passage closest to the question, cited.
            options: how to retrieve the passages (default: 5 best, no threshold).

        Returns:
            An :class:`~conan_rag.rag.answer.Answer`.

        Example:
            >>> import tempfile
            >>> from conan_rag.rag.sources.documents import Document
            >>> MINILM = "sentence-transformers/all-MiniLM-L6-v2"
            >>> pipe = Pipeline(load_encoder(MINILM), db=tempfile.mkdtemp())
            >>> _ = pipe.ingest([Document("paris", "Paris is the capital of France.", "facts")])
            >>> answer = pipe.answer("Which city is the capital?", llm=lambda prompt: "Paris [1]")
            >>> answer.text, answer.hits[0].metadata["doc_id"], "[1] facts" in answer.prompt
            ('Paris [1]', 'paris', True)
        """
        hits = self.retrieve(query, options)  # refuses an empty query
        prompt = build_prompt(query, hits)
        if llm is None:
            return Answer(extractive_answer(self.encoder, query, hits), hits, prompt)
        return Answer(call_llm(llm, prompt), hits, prompt)

    # -- info -----------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """Collection name, model, dimension, fingerprint and counts of chunks/documents/sources.

        The counts come from :meth:`catalog` (index counts; the first call on a collection
        without a lexical index builds it once). :func:`collection_info` gives the same
        without a loaded model.
        """
        encoder = self.encoder
        model = {
            "model_id": encoder.model_id,
            "dim": encoder.dim,
            "fingerprint": encoder.fingerprint,
            "max_seq_length": encoder.max_seq_length,
        }
        return _describe(self.store, self.catalog(), model)


def collection_info(
    *,
    db: str | Path | None = None,
    url: str | None = None,
    collection: str = DEFAULT_COLLECTION,
) -> dict[str, Any]:
    """:meth:`Pipeline.info` from the store alone: the model facts the collection records.

    No model is loaded, so it works where the recorded model folder has moved or the model
    is not on this machine (``max_seq_length`` is then ``None`` unless the collection
    recorded one).

    Raises:
        CollectionNotFoundError: no such collection (the message lists those there are).
    """
    client = open_client(db, url, write=False)
    found = open_collection(client, collection, None, create=False)
    folder = Path(db or DEFAULT_DB).expanduser().resolve() if url is None else None
    store = ChromaStore(client, found, db=folder, url=url)
    lexical = LexicalIndex(store.derived_path("lexical"))
    lexical.ensure(store, matrices=False)
    meta = found.metadata or {}
    model = {
        "model_id": meta.get(MODEL_KEY),
        "dim": meta.get(DIM_KEY),
        "fingerprint": meta.get(FINGERPRINT_KEY),
        "max_seq_length": _recorded_max_seq_length(config_in(meta)),
    }
    return _describe(store, lexical, model)


def _recorded_max_seq_length(config: EncoderConfig | None) -> int | None:
    """The recorded config's limit, else the recorded model's own (its JSON files only)."""
    from conan_rag.model.files import resolve_model
    from conan_rag.model.spec import read_model_spec

    if config is None or config.max_seq_length is not None:
        return None if config is None else config.max_seq_length
    try:
        return read_model_spec(resolve_model(config.model, config.revision)).max_seq_length
    except (ConanRagError, OSError, ValueError):
        return None


def _describe(store: ChromaStore, lexical: LexicalIndex, model: dict[str, Any]) -> dict[str, Any]:
    counts = lexical.counts()
    return {
        "collection": store.name,
        **model,
        "chunks": store.count(),
        "documents": counts["documents"],
        "sources": counts["sources"],
    }
