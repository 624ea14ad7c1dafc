"""Chroma clients and collections that remember, and enforce, the encoder that filled them.

An embedded ``chromadb.PersistentClient`` by default (folder ``./.conan_rag``); a
``chromadb.HttpClient`` for a ``http://HOST:PORT`` URL, authenticated with a token read only from
the ``CONAN_RAG_CHROMA_TOKEN`` environment variable (never from arguments, never logged).
Collections use cosine space and record the encoder's model id, dimension, fingerprint and config;
opening one with another encoder raises :class:`~conan_rag.errors.CollectionMismatchError` before
anything is written.

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
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from conan_rag.config import EncoderConfig
from conan_rag.errors import CollectionMismatchError, ConanConfigError

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection

    from conan_rag.encoder import Encoder

logger = logging.getLogger(__name__)

DEFAULT_DB = ".conan_rag"
DEFAULT_COLLECTION = "conan_rag"
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


def open_client(db: str | Path | None = None, url: str | None = None) -> ClientAPI:
    """An embedded client on ``db`` (default ``./.conan_rag``), or an HTTP client for ``url``.

    Args:
        db: folder of the embedded store; ignored when ``url`` is given.
        url: ``http://HOST:PORT`` or ``https://HOST:PORT`` of a ``chroma run`` server.

    Raises:
        ConanConfigError: the URL is not ``http(s)://HOST:PORT``, or no server answers there.
    """
    import chromadb
    from chromadb.config import Settings

    settings = Settings(anonymized_telemetry=False)
    if url is None:
        path = Path(db or DEFAULT_DB)
        path.mkdir(parents=True, exist_ok=True)
        return chromadb.PersistentClient(path=str(path), settings=settings)
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConanConfigError(
            f"Chroma URL {url!r} is not of the form http://HOST:PORT or https://HOST:PORT; "
            "put a token in the CONAN_RAG_CHROMA_TOKEN environment variable, not in the URL."
        )
    if parsed.username or parsed.password:
        raise ConanConfigError(
            "Do not put credentials in the Chroma URL; set CONAN_RAG_CHROMA_TOKEN instead."
        )
    ssl = parsed.scheme == "https"
    port = parsed.port or (443 if ssl else 8000)
    try:
        return chromadb.HttpClient(
            host=parsed.hostname, port=port, ssl=ssl, headers=auth_headers(), settings=settings
        )
    except Exception as exc:  # noqa: BLE001 - chromadb raises ValueError, httpx its own errors
        raise ConanConfigError(
            f"Cannot reach a Chroma server at {parsed.scheme}://{parsed.hostname}:{port} "
            f"({type(exc).__name__}); start one with `chroma run --path DIR --port {port}` or "
            "fix --chroma-url."
        ) from None


def _collection_metadata(encoder: Encoder) -> dict[str, Any]:
    config = encoder.config.replace(device="auto", dtype="auto").to_dict()
    config["model"] = encoder.model_id
    return {
        MODEL_KEY: encoder.model_id,
        DIM_KEY: encoder.dim,
        FINGERPRINT_KEY: encoder.fingerprint,
        CONFIG_KEY: json.dumps(config, sort_keys=True),
    }


def check_encoder(metadata: dict[str, Any] | None, encoder: Encoder, name: str) -> None:
    """Raise if a collection's recorded encoder differs from ``encoder``.

    Raises:
        CollectionMismatchError: names the recorded and the offered model and the fix.
    """
    metadata = metadata or {}
    recorded = metadata.get(FINGERPRINT_KEY)
    if recorded is None:
        raise CollectionMismatchError(
            f"Collection {name!r} was not created by conan-rag (it records no encoder); "
            "use another collection name or delete it first."
        )
    if recorded != encoder.fingerprint or metadata.get(DIM_KEY) != encoder.dim:
        raise CollectionMismatchError(
            f"Collection {name!r} was built with model {metadata.get(MODEL_KEY)!r} "
            f"(dim {metadata.get(DIM_KEY)}, fingerprint {str(recorded)[:12]}), but the encoder "
            f"offered is {encoder.model_id!r} (dim {encoder.dim}, fingerprint "
            f"{encoder.fingerprint[:12]}). Open it with the recorded model (omit --model), or "
            "ingest into another collection (--collection NAME)."
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
    client: ClientAPI, name: str, encoder: Encoder | None, *, create: bool = True
) -> Collection:
    """Open (or create) a cosine-space collection bound to ``encoder``.

    With ``encoder=None`` an existing collection opens unchecked and a missing one raises.

    Raises:
        CollectionMismatchError: the collection was built by another encoder (nothing written).
        ConanConfigError: ``create`` is false and the collection does not exist.
    """
    collection = find_collection(client, name)
    if collection is not None:
        if encoder is not None:
            check_encoder(collection.metadata, encoder, name)
        return collection
    if not create or encoder is None:
        raise ConanConfigError(
            f"No collection {name!r}; ingest documents first (conan-rag ingest PATH) or pass "
            f"another --collection. Existing: {sorted(c.name for c in client.list_collections())}."
        )
    return client.get_or_create_collection(
        name,
        configuration={"hnsw": HNSW},  # type: ignore[arg-type]
        metadata=_collection_metadata(encoder),
        embedding_function=None,
    )


def batch_size(client: ClientAPI, wanted: int | None = None) -> int:
    """Records per upsert: ``wanted`` capped by the client's ``get_max_batch_size()``."""
    limit = int(client.get_max_batch_size())
    return max(1, min(limit, wanted)) if wanted else limit
