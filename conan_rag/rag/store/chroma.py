"""Chroma behind the store protocol: the only module of the RAG app that imports ``chromadb``.

:class:`ChromaStore` implements :class:`~conan_rag.rag.store.protocol.VectorStore` over one
collection. Its clients and collections remember, and enforce, the encoder that filled them.

An embedded ``chromadb.PersistentClient`` by default (folder ``./.conan_rag``); a
``chromadb.HttpClient`` for a ``http://HOST:PORT`` URL, authenticated with a token read only from
the ``CONAN_RAG_CHROMA_TOKEN`` environment variable (never from arguments, never logged).
Collections use cosine space and record the encoder's model id, dimension, fingerprint and config,
and the conan-rag Chroma embedding function (so plain ``chromadb`` can query them by text after
``import conan_rag.chroma``); opening one with another encoder raises
:class:`~conan_rag.errors.CollectionMismatchError` before anything is written.

Example:
    >>> import tempfile
    >>> from conan_rag import load_encoder
    >>> client = open_client(db=tempfile.mkdtemp())
    >>> enc = load_encoder("sentence-transformers/all-MiniLM-L6-v2")
    >>> store = ChromaStore.open(client, "notes", enc)
    >>> store.collection.metadata[MODEL_KEY], store.count()
    ('sentence-transformers/all-MiniLM-L6-v2', 0)
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import numpy as np

from conan_rag.config import EncoderConfig
from conan_rag.errors import (
    CollectionMismatchError,
    CollectionNotFoundError,
    ConanConfigError,
    StoreError,
)
from conan_rag.rag.store.protocol import Field, Records

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection

    from conan_rag.protocols import EncoderLike

logger = logging.getLogger(__name__)

DEFAULT_DB = ".conan_rag"
DEFAULT_COLLECTION = "conan_rag"
SQLITE_FILE = "chroma.sqlite3"
TOKEN_ENV = "CONAN_RAG_CHROMA_TOKEN"
MODEL_KEY = "conan_rag:model_id"
DIM_KEY = "conan_rag:dim"
FINGERPRINT_KEY = "conan_rag:fingerprint"
CONFIG_KEY = "conan_rag:encoder_config"
GENERATION_KEY = "conan_rag:lexical_generation"
NOTE_PREFIX = "conan_rag:note:"  # short texts kept with the collection (write_note)
HNSW = {"space": "cosine", "ef_construction": 200, "ef_search": 200}
_INCLUDE = {"texts": "documents", "metadatas": "metadatas", "vectors": "embeddings"}


def auth_headers() -> dict[str, str]:
    """Token auth headers from ``CONAN_RAG_CHROMA_TOKEN`` (empty when it is unset).

    Chroma's token auth accepts ``Authorization: Bearer <token>``.

    Example:
        >>> os.environ.pop(TOKEN_ENV, None) and None
        >>> auth_headers()
        {}
    """
    token = os.environ.get(TOKEN_ENV, "").strip()
    return {"Authorization": f"Bearer {token}"} if token else {}


def _store_error(path: Path, problem: str, fix: str) -> StoreError:
    return StoreError(
        f"Cannot use {path} as the vector store folder: {problem}; {fix}.",
        location=str(path),
        problem=problem,
    )


def _probe_write(folder: Path) -> str | None:
    """Why ``folder`` cannot be written (a real write, so read-only mounts are caught too)."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    sqlite = folder / SQLITE_FILE
    if sqlite.exists():
        try:
            with sqlite.open("r+b"):
                pass
        except OSError as exc:
            return f"{SQLITE_FILE} is not writable ({exc.strerror or exc})"
    return None


def check_location(db: str | Path | None = None, *, write: bool = True) -> Path:
    """Check an embedded store folder can be used, without creating anything.

    Args:
        db: the folder (default ``./.conan_rag``); it may not exist yet when ``write`` is set.
        write: the caller will write (ingest); else it only reads (query, info).

    Returns:
        The folder, absolute.

    Raises:
        StoreError: the path is a file, does not exist (for reading), or cannot be written;
            ``problem`` says which.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp()) / "new_db"
        >>> check_location(folder) == folder.resolve() and not folder.exists()
        True
    """
    path = Path(db or DEFAULT_DB).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise _store_error(path, "it is a file, not a folder", "pass a folder")
    if not path.exists():
        if not write:
            raise _store_error(path, "no such folder", "ingest documents into it first")
        parent = path.parent
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir():
            raise _store_error(path, f"{parent} is a file", "pass a path inside a folder")
        reason = _probe_write(parent)
        if reason is not None:
            raise _store_error(
                path, f"its folder {parent} is not writable ({reason})", "pick a writable place"
            )
        return path
    if not write and not (path / SQLITE_FILE).exists():  # reading must not create a store
        raise _store_error(
            path,
            f"it holds no Chroma store (no {SQLITE_FILE})",
            "pass the folder an ingest wrote, or ingest documents into it first",
        )
    if write:
        reason = _probe_write(path)
        if reason is not None:
            raise _store_error(
                path, f"it is read-only ({reason})", "fix its permissions or pick another folder"
            )
    return path


def open_client(
    db: str | Path | None = None, url: str | None = None, *, write: bool = True
) -> ClientAPI:
    """An embedded client on ``db`` (default ``./.conan_rag``), or an HTTP client for ``url``.

    Args:
        db: folder of the embedded store; ignored when ``url`` is given. Created when missing
            and ``write`` is set.
        url: ``http://HOST:PORT`` or ``https://HOST:PORT`` of a ``chroma run`` server.
        write: the caller will write; a missing folder is then created, and a read-only one
            refused up front.

    Raises:
        StoreError: the folder is a file, read-only, missing (for reading), unusable by Chroma,
            or no server answers at ``url``.
        ConanConfigError: the URL is not ``http(s)://HOST:PORT`` or carries credentials.
    """
    try:
        import chromadb
        from chromadb.config import Settings
    except ImportError as exc:
        raise ImportError(
            f"The vector store needs chromadb ({exc}); install it with "
            "`pip install 'conan-rag[rag]'`."
        ) from exc

    settings = Settings(anonymized_telemetry=False)
    if url is None:
        path = check_location(db, write=write)
        try:
            path.mkdir(parents=True, exist_ok=True)
            return chromadb.PersistentClient(path=str(path), settings=settings)
        except Exception as exc:  # noqa: BLE001 - chromadb/sqlite raise many kinds
            problem = f"Chroma cannot open it ({type(exc).__name__}: {str(exc)[:200]})"
            fix = "check that it is a Chroma folder and that no other program holds it"
            raise _store_error(path, problem, fix) from None
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConanConfigError(
            f"Chroma URL {url!r} is not of the form http://HOST:PORT or https://HOST:PORT; "
            f"put a token in the {TOKEN_ENV} environment variable, not in the URL.",
            setting="url",
            value=url,
        )
    if parsed.username or parsed.password:
        raise ConanConfigError(
            f"Do not put credentials in the Chroma URL; set {TOKEN_ENV} instead.", setting="url"
        )
    ssl = parsed.scheme == "https"
    port = parsed.port or (443 if ssl else 8000)
    location = f"{parsed.scheme}://{parsed.hostname}:{port}"
    try:
        return chromadb.HttpClient(
            host=parsed.hostname, port=port, ssl=ssl, headers=auth_headers(), settings=settings
        )
    except Exception as exc:  # noqa: BLE001 - chromadb raises ValueError, httpx its own errors
        raise StoreError(
            f"Cannot reach a Chroma server at {location} ({type(exc).__name__}); start one with "
            f"`chroma run --path DIR --port {port}` or fix the URL.",
            location=location,
            problem="no server answers",
        ) from None


def collection_metadata(encoder: EncoderLike) -> dict[str, Any]:
    """What a collection records of the encoder that fills it (model, dim, fingerprint, config)."""
    config = encoder.config.replace(device="auto", dtype="auto").to_dict()
    config["model"] = encoder.model_id
    return {
        MODEL_KEY: encoder.model_id,
        DIM_KEY: encoder.dim,
        FINGERPRINT_KEY: encoder.fingerprint,
        CONFIG_KEY: json.dumps(config, sort_keys=True),
    }


def check_encoder(metadata: dict[str, Any] | None, encoder: EncoderLike, name: str) -> None:
    """Raise if a collection's recorded encoder differs from ``encoder``.

    Raises:
        CollectionMismatchError: names the recorded and the offered model.
    """
    fix = "Open it with the encoder it records (see recorded_config), or use another collection."
    check_recorded(metadata, name, encoder.model_id, encoder.dim, encoder.fingerprint, fix=fix)


def check_recorded(
    metadata: dict[str, Any] | None, name: str, model_id: str, dim: int, fingerprint: str, fix: str
) -> None:
    """Raise if a collection does not record the model ``model_id``/``dim``/``fingerprint``.

    Raises:
        CollectionMismatchError: names the recorded and the offered model, then ``fix``.
    """
    metadata = metadata or {}
    recorded = metadata.get(FINGERPRINT_KEY)
    if recorded is None:
        raise CollectionMismatchError(
            f"Collection {name!r} was not created by conan-rag (it records no encoder); "
            "use another collection name or delete it first.",
            collection=name,
            recorded_model=None,
            offered_model=model_id,
        )
    if recorded != fingerprint or metadata.get(DIM_KEY) != dim:
        model = metadata.get(MODEL_KEY)
        raise CollectionMismatchError(
            f"Collection {name!r} was built with model {model!r} (dim {metadata.get(DIM_KEY)}, "
            f"fingerprint {str(recorded)[:12]}), but the encoder offered is "
            f"{model_id!r} (dim {dim}, fingerprint {fingerprint[:12]}). {fix}",
            collection=name,
            recorded_model=None if model is None else str(model),
            offered_model=model_id,
        )


def find_collection(client: ClientAPI, name: str) -> Collection | None:
    """The collection called ``name``, or ``None`` when it does not exist."""
    from chromadb.errors import NotFoundError

    try:
        return client.get_collection(name, embedding_function=None)
    except (NotFoundError, ValueError):
        return None


def recorded_config(client: ClientAPI, name: str) -> EncoderConfig | None:
    """The encoder config a collection records (``None`` for a missing collection)."""
    collection = find_collection(client, name)
    return None if collection is None else config_in(collection.metadata)


def config_in(metadata: Mapping[str, Any] | None) -> EncoderConfig | None:
    """The encoder config in a collection's metadata (``None`` when it records none).

    Example:
        >>> config_in({}) is None
        True
    """
    if not metadata or CONFIG_KEY not in metadata:
        return None
    return EncoderConfig.from_dict(json.loads(str(metadata[CONFIG_KEY])))


def open_collection(
    client: ClientAPI, name: str, encoder: EncoderLike | None, *, create: bool = True
) -> Collection:
    """Open (or create) a cosine-space collection bound to ``encoder``.

    With ``encoder=None`` an existing collection opens unchecked and a missing one raises.

    Raises:
        CollectionMismatchError: the collection was built by another encoder (nothing written).
        CollectionNotFoundError: ``create`` is false and the collection does not exist.
    """
    if encoder is not None:
        # Registers "conan-rag" with Chroma before it reads the collection's schema (on every
        # write), so it rebuilds the recorded function (the shared encoder) instead of warning
        # "Could not reconstruct embedding function conan-rag ... Setting to None". Without an
        # encoder (info) nothing loads a model.
        from conan_rag.chroma import ConanEmbeddingFunction
    collection = find_collection(client, name)
    if collection is not None:
        if encoder is not None:
            check_encoder(collection.metadata, encoder, name)
        return collection
    if not create or encoder is None:
        raise CollectionNotFoundError(name, [c.name for c in client.list_collections()])

    # Recording the embedding function lets plain chromadb query by text after
    # `import conan_rag.chroma`; the pipeline itself always passes vectors.
    return client.get_or_create_collection(
        name,
        configuration={"hnsw": HNSW},  # type: ignore[arg-type]
        metadata=collection_metadata(encoder),
        # Chroma types the argument as EmbeddingFunction[Embeddable]; its own text functions,
        # like this one, are EmbeddingFunction[Documents].
        embedding_function=ConanEmbeddingFunction.from_encoder(encoder),  # type: ignore[arg-type]
    )


def iter_metadatas(
    collection: Collection, page: int = 5000
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every record's id and metadata, read a page at a time."""
    offset = 0
    while True:
        got = collection.get(include=["metadatas"], limit=page, offset=offset)
        for record_id, meta in zip(got["ids"], got["metadatas"] or [], strict=True):
            yield record_id, dict(meta or {})
        if len(got["ids"]) < page:
            return
        offset += page


def batch_size(client: ClientAPI, wanted: int | None = None) -> int:
    """Records per upsert: ``wanted`` capped by the client's ``get_max_batch_size()``."""
    limit = int(client.get_max_batch_size())
    return max(1, min(limit, wanted)) if wanted else limit


class ChromaStore:
    """One Chroma collection behind the :class:`~conan_rag.rag.store.protocol.VectorStore` protocol.

    :meth:`version` is the collection's generation (set by :meth:`mark_changed`, which every
    conan-rag write path calls first) joined with a sign of any write. For an embedded store
    that sign is the sequence number of Chroma's own write log for the collection, so every
    add, upsert, update or delete by any program (plain ``chromadb``, LangChain's
    ``Chroma.add_texts``) changes it. A Chroma server does not expose that log: there the sign is
    the chunk count, which sees foreign adds and deletes but not an update in place, nor an add
    and a delete of as many chunks between two searches.

    Args:
        client: the Chroma client.
        collection: the collection (opened without an embedding function: we pass vectors).
        db: the embedded store's folder, when it is one.
        url: the server's URL, when it is one.
    """

    def __init__(
        self,
        client: ClientAPI,
        collection: Collection,
        *,
        db: Path | None = None,
        url: str | None = None,
    ) -> None:
        self.client = client
        self.collection = collection
        self.name = collection.name
        self.db = db
        self.url = url
        self.max_batch = int(client.get_max_batch_size())

    @classmethod
    def open(
        cls,
        client: ClientAPI,
        name: str,
        encoder: EncoderLike | None,
        *,
        create: bool = True,
        db: str | Path | None = None,
        url: str | None = None,
    ) -> ChromaStore:
        """Open (or create) ``name``, checked against ``encoder`` (see :func:`open_collection`)."""
        collection = open_collection(client, name, encoder, create=create)
        folder = None if db is None else Path(db).expanduser().resolve()
        return cls(client, collection, db=folder, url=url)

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> ChromaStore:
        """Open the collection another process described with :meth:`spec` (no encoder check)."""
        url, db = spec.get("url"), spec.get("db")
        client = open_client(db=db, url=url, write=True)
        found = find_collection(client, str(spec["collection"]))
        if found is None:
            raise CollectionNotFoundError(str(spec["collection"]), [])
        return cls(client, found, db=None if db is None else Path(db), url=url)

    def spec(self) -> dict[str, Any]:
        """``{"collection", "url"}`` or ``{"collection", "db"}`` (the token stays in the env)."""
        where: dict[str, Any] = {"url": self.url} if self.url else {"db": str(self.db)}
        return {"collection": self.name, **where}

    # -- reading --------------------------------------------------------------------------------
    def count(self) -> int:
        """How many chunks the collection holds."""
        return int(self.collection.count())

    def scan(self, fields: Sequence[Field] = ("metadatas",), page: int = 5000) -> Iterator[Records]:
        """Every chunk, ``page`` at a time (offset paging)."""
        offset = 0
        while True:
            got = self.collection.get(include=_include(fields), limit=page, offset=offset)
            records = _records(got, fields)
            if records.ids:
                yield records
            if len(records.ids) < page:
                return
            offset += page

    def get(
        self,
        ids: Sequence[str],
        fields: Sequence[Field],
        where: Mapping[str, Any] | None = None,
    ) -> Records:
        """The chunks with these ids that exist (and match the metadata filter ``where``)."""
        if not ids:
            return _records({"ids": []}, fields)
        got = self.collection.get(
            ids=list(ids), where=dict(where) if where else None, include=_include(fields)
        )
        return _records(got, fields)

    def find(self, where: Mapping[str, Any], fields: Sequence[Field] = ("metadatas",)) -> Records:
        """Every chunk whose metadata matches ``where`` (Chroma's metadata index answers it)."""
        got = self.collection.get(where=dict(where), include=_include(fields))  # type: ignore[arg-type]
        return _records(got, fields)

    def query(
        self,
        vectors: np.ndarray,
        n: int,
        where: Mapping[str, Any] | None = None,
        fields: Sequence[Field] = ("texts", "metadatas"),
    ) -> list[Records]:
        """The ``n`` nearest chunks of each query vector, with cosine distances."""
        raw: Any = self.collection.query(
            query_embeddings=np.asarray(vectors, dtype=np.float32),
            n_results=n,
            where=dict(where) if where else None,
            include=[*_include(fields), "distances"],  # type: ignore[list-item]
        )
        out = []
        for row in range(len(raw["ids"])):
            one = {
                key: (value[row] if value is not None else None)
                for key, value in raw.items()
                if key in ("ids", "documents", "metadatas", "embeddings", "distances")
            }
            records = _records(one, fields)
            records.distances = [float(d) for d in one.get("distances") or []]
            out.append(records)
        return out

    # -- writing --------------------------------------------------------------------------------
    def upsert(
        self,
        ids: Sequence[str],
        vectors: np.ndarray,
        texts: Sequence[str],
        metadatas: Sequence[Mapping[str, Any]],
    ) -> None:
        """Insert or replace chunks."""
        self.collection.upsert(
            ids=[str(i) for i in ids],
            embeddings=np.asarray(vectors, dtype=np.float32),
            documents=[str(t) for t in texts],
            metadatas=[dict(m) for m in metadatas],  # type: ignore[misc]
        )

    def update_metadata(self, ids: Sequence[str], metadatas: Sequence[Mapping[str, Any]]) -> None:
        """Merge keys into stored chunks' metadata."""
        self.collection.update(ids=list(ids), metadatas=[dict(m) for m in metadatas])  # type: ignore[misc]

    def delete(self, ids: Sequence[str]) -> None:
        """Delete chunks by id."""
        if ids:
            self.collection.delete(ids=list(ids))

    # -- what derived indexes need ----------------------------------------------------------------
    def mark_changed(self) -> None:
        """Write a new generation into the collection's metadata."""
        self._set_metadata(GENERATION_KEY, uuid.uuid4().hex)

    def note(self, name: str) -> str | None:
        """The text :meth:`write_note` kept under ``name`` in the collection's metadata."""
        value = (self._fresh().metadata or {}).get(NOTE_PREFIX + name)
        return None if value is None else str(value)

    def write_note(self, name: str, text: str) -> None:
        """Keep ``text`` in the collection's metadata (a Chroma server keeps it too)."""
        self._set_metadata(NOTE_PREFIX + name, text)

    def _set_metadata(self, key: str, value: str) -> None:
        """Set one key of the collection's metadata, keeping the others as they are now."""
        metadata = dict(self._fresh().metadata or {})
        metadata[key] = value
        self.collection.modify(metadata=metadata)

    def version(self) -> str:
        """The generation and a sign of any write (see the class docstring)."""
        collection = self._fresh()
        generation = (collection.metadata or {}).get(GENERATION_KEY) or ""
        sequence = self._log_sequence()
        sign = f"seq{sequence}" if sequence is not None else f"n{collection.count()}"
        return f"{generation}:{sign}"

    def derived_path(self, kind: str) -> Path:
        """A file for derived data: beside an embedded store, else in the user cache.

        ``<db>/conan_rag_<kind>/<collection>.sqlite``, or
        ``$XDG_CACHE_HOME/conan_rag/<kind>/<host>_<port>/<collection>.sqlite`` for a server.
        """
        if self.db is not None:
            return self.db / f"conan_rag_{kind}" / f"{self.name}.sqlite"
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        if self.url is None:  # a client we did not open: key by the collection's id
            return cache / "conan_rag" / kind / "clients" / f"{self.collection.id}.sqlite"
        parsed = urlparse(self.url)
        server = f"{parsed.hostname}_{parsed.port}" if parsed.port else str(parsed.hostname)
        return cache / "conan_rag" / kind / server / f"{self.name}.sqlite"

    def _fresh(self) -> Collection:
        """The collection re-read (its metadata may have been changed by another process)."""
        self.collection = self.client.get_collection(self.name, embedding_function=None)
        return self.collection

    def _log_sequence(self) -> int | None:
        """The last write-log sequence number of an embedded collection (``None`` elsewhere)."""
        if self.db is None:
            return None
        query = (
            "SELECT m.seq_id FROM max_seq_id m JOIN segments s ON s.id = m.segment_id "
            "WHERE s.collection = ? AND s.scope = 'METADATA'"
        )
        try:
            uri = f"file:{self.db / SQLITE_FILE}?mode=ro"
            with sqlite3.connect(uri, uri=True, timeout=30) as db:
                row = db.execute(query, (str(self.collection.id),)).fetchone()
        except sqlite3.Error:  # another Chroma schema: fall back to the count
            return None
        return None if row is None else int(row[0])


def open_export_target(client: ClientAPI, name: str, manifest: Mapping[str, Any]) -> ChromaStore:
    """The collection an export loads into: checked against it, or created from its config.

    Raises:
        CollectionMismatchError: the collection records another model, or the model files
            here differ from the export's.
    """
    existing = find_collection(client, name)
    if existing is not None:
        check_recorded(
            existing.metadata,
            name,
            str(manifest["model_id"]),
            int(manifest["dim"]),
            str(manifest["fingerprint"]),
            fix="The export was embedded with that "
            "model: load it into another collection (--collection NAME).",
        )
        return ChromaStore(client, existing)
    from conan_rag.registry import load_encoder

    config = EncoderConfig.from_dict(manifest["encoder_config"]).replace(device="cpu")
    encoder = load_encoder(config=config)  # the collection records its embedding function
    if encoder.fingerprint != manifest["fingerprint"]:
        raise CollectionMismatchError(
            f"The model files here ({encoder.model_id!r}, fingerprint {encoder.fingerprint[:12]})"
            f" differ from the export's (fingerprint {manifest['fingerprint'][:12]}); install "
            "the same model revision to create the collection.",
            collection=name,
            recorded_model=str(manifest["model_id"]),
            offered_model=encoder.model_id,
        )
    return ChromaStore(client, open_collection(client, name, encoder))


def _include(fields: Sequence[Field]) -> list[Any]:
    return [_INCLUDE[f] for f in fields]


def _records(got: Mapping[str, Any], fields: Sequence[Field]) -> Records:
    """Chroma's column dict as :class:`Records` (vectors as a float32 matrix)."""
    ids = [str(i) for i in got.get("ids") or []]
    vectors = None
    if "vectors" in fields:
        raw = got.get("embeddings")
        vectors = np.asarray(
            raw if raw is not None and len(raw) else np.zeros((0, 0)), dtype=np.float32
        )
    return Records(
        ids=ids,
        texts=[t or "" for t in got.get("documents") or []] if "texts" in fields else None,
        metadatas=[dict(m or {}) for m in got.get("metadatas") or []]
        if "metadatas" in fields
        else None,
        vectors=vectors,
    )
