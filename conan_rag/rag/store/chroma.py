"""Chroma clients and collections that remember, and enforce, the encoder that filled them.

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
    >>> collection = open_collection(client, "notes", enc)
    >>> collection.metadata[MODEL_KEY]
    'sentence-transformers/all-MiniLM-L6-v2'
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from conan_rag.config import EncoderConfig
from conan_rag.errors import (
    CollectionMismatchError,
    CollectionNotFoundError,
    ConanConfigError,
    StoreError,
)

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
HNSW = {"space": "cosine", "ef_construction": 200, "ef_search": 200}


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
            raise _store_error(
                path, f"Chroma cannot open it ({type(exc).__name__}: {str(exc)[:200]})",
                "check that it is a Chroma folder and that no other program holds it",
            ) from None  # fmt: skip
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
    check_recorded(metadata, name, encoder.model_id, encoder.dim, encoder.fingerprint,
                   fix="Open it with the encoder it records (see recorded_config), or use "
                   "another collection.")  # fmt: skip


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
    if collection is None or not collection.metadata or CONFIG_KEY not in collection.metadata:
        return None
    return EncoderConfig.from_dict(json.loads(str(collection.metadata[CONFIG_KEY])))


def open_collection(
    client: ClientAPI, name: str, encoder: EncoderLike | None, *, create: bool = True
) -> Collection:
    """Open (or create) a cosine-space collection bound to ``encoder``.

    With ``encoder=None`` an existing collection opens unchecked and a missing one raises.

    Raises:
        CollectionMismatchError: the collection was built by another encoder (nothing written).
        CollectionNotFoundError: ``create`` is false and the collection does not exist.
    """
    collection = find_collection(client, name)
    if collection is not None:
        if encoder is not None:
            check_encoder(collection.metadata, encoder, name)
        return collection
    if not create or encoder is None:
        raise CollectionNotFoundError(name, [c.name for c in client.list_collections()])
    from conan_rag.chroma import ConanEmbeddingFunction

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
