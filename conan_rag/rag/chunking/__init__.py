"""Chunking: documents cut into token windows that end on sentence boundaries.

What chunking is configured by and produces (``config``), the chunker (``chunker``) and the
sentence rules it cuts on (``sentences``).

Example:
    >>> from conan_rag.rag.chunking import ChunkConfig
    >>> ChunkConfig(max_tokens=64).max_tokens
    64
"""

from __future__ import annotations

from conan_rag.rag.chunking.chunker import CHUNKER_VERSION, WINDOW_CHARS, Chunker
from conan_rag.rag.chunking.config import (
    CHUNK_MODES,
    DEFAULT_OVERLAP,
    Chunk,
    ChunkConfig,
    ChunkMode,
    Digest,
    chunk_id,
    text_bytes,
)
from conan_rag.rag.chunking.sentences import split_sentences

__all__ = [
    "CHUNKER_VERSION",
    "CHUNK_MODES",
    "DEFAULT_OVERLAP",
    "WINDOW_CHARS",
    "Chunk",
    "ChunkConfig",
    "ChunkMode",
    "Chunker",
    "Digest",
    "chunk_id",
    "split_sentences",
    "text_bytes",
]
