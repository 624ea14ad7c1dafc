"""Where documents come from: files, folders and in-memory documents.

Files and folders are found (``discovery``), read into documents (``documents``), with their
text encodings detected (``decoding``).

Example:
    >>> from conan_rag.rag.sources import Document
    >>> Document("paris", "Paris is the capital of France.", "facts").key
    'facts#paris'
"""

from __future__ import annotations

from conan_rag.rag.sources.decoding import DecodingError, decode_bytes, detect_encoding
from conan_rag.rag.sources.discovery import Discovery, LoadResult, discover, load_paths
from conan_rag.rag.sources.documents import (
    BLOCK_CHARS,
    SUFFIXES,
    Document,
    DocumentLike,
    TextFile,
    read_file,
)

__all__ = [
    "BLOCK_CHARS",
    "SUFFIXES",
    "DecodingError",
    "Discovery",
    "Document",
    "DocumentLike",
    "LoadResult",
    "TextFile",
    "decode_bytes",
    "detect_encoding",
    "discover",
    "load_paths",
    "read_file",
]
