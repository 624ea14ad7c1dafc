"""Where chunks are stored: the :class:`VectorStore` protocol and its Chroma implementation.

Example:
    >>> from conan_rag.rag.store import DEFAULT_DB
    >>> DEFAULT_DB
    '.conan_rag'
"""

from __future__ import annotations

from conan_rag.rag.store.chroma import (
    CONFIG_KEY,
    DEFAULT_COLLECTION,
    DEFAULT_DB,
    DIM_KEY,
    FINGERPRINT_KEY,
    GENERATION_KEY,
    MODEL_KEY,
    SQLITE_FILE,
    TOKEN_ENV,
    ChromaStore,
    auth_headers,
    batch_size,
    check_encoder,
    check_location,
    check_recorded,
    collection_metadata,
    config_in,
    find_collection,
    iter_metadatas,
    open_client,
    open_collection,
    open_export_target,
    recorded_config,
)
from conan_rag.rag.store.protocol import Field, Records, VectorStore

__all__ = [
    "CONFIG_KEY",
    "DEFAULT_COLLECTION",
    "DEFAULT_DB",
    "DIM_KEY",
    "FINGERPRINT_KEY",
    "GENERATION_KEY",
    "MODEL_KEY",
    "SQLITE_FILE",
    "TOKEN_ENV",
    "ChromaStore",
    "Field",
    "Records",
    "VectorStore",
    "auth_headers",
    "batch_size",
    "check_encoder",
    "check_location",
    "check_recorded",
    "collection_metadata",
    "config_in",
    "find_collection",
    "iter_metadatas",
    "open_client",
    "open_collection",
    "open_export_target",
    "recorded_config",
]
