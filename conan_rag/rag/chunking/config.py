"""What chunking is configured by and produces: ChunkConfig, Chunk and Digest.

Example:
    >>> ChunkConfig(max_tokens=64, overlap_tokens=8).to_dict()["overlap_tokens"]
    8
    >>> chunk_id("a.txt", 0, "hi") == chunk_id("a.txt", 0, "hi")
    True
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any, Literal

from conan_rag.errors import ConanConfigError

ChunkMode = Literal["tokens", "whole"]
CHUNK_MODES: tuple[str, ...] = ("tokens", "whole")
DEFAULT_OVERLAP = 32
CHARS_PER_TOKEN = 8  # the default character bound: this many characters per token of the limit


def text_bytes(block: str) -> bytes:
    """How text is fed to a document hash (lone surrogates kept, never an error)."""
    return block.encode("utf-8", "surrogatepass")


@dataclass(frozen=True)
class Digest:
    """What hashing a document found.

    Attributes:
        hash: 32 hex digits over the text, title, metadata and chunking settings.
        chars: the text's length in characters.
        blank: the document gives no chunk (no text besides whitespace).
    """

    hash: str
    chars: int
    blank: bool


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class ChunkConfig:
    """How documents are cut.

    Attributes:
        mode: ``"tokens"`` (token-aware chunks) or ``"whole"`` (one chunk per document, as
            MTEB embeds it; the encoder truncates it at ``max_seq_length``).
        max_tokens: tokens per chunk including special tokens, prompt and title; ``None`` uses
            the encoder's ``max_seq_length`` (a larger value is an error).
        overlap_tokens: tokens shared by consecutive chunks (snapped to a word boundary); less
            than the chunk size.
        title_prefix: embed each chunk as the title, a newline, then the chunk (when titled).
        max_chars: characters per chunk at most, whatever the tokens (a 5 MB line without a
            space is one ``[UNK]`` token); ``None`` is :data:`CHARS_PER_TOKEN` characters per
            token of the limit, which prose never reaches. Tokens mode only.
    """

    mode: ChunkMode = "tokens"
    max_tokens: int | None = None
    overlap_tokens: int = DEFAULT_OVERLAP
    title_prefix: bool = True
    max_chars: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in CHUNK_MODES:
            raise ConanConfigError(
                f"Unknown chunk mode {self.mode!r}; choose one of {CHUNK_MODES}.",
                setting="mode",
                value=self.mode,
                choices=CHUNK_MODES,
            )
        if self.max_tokens is not None and (not _is_int(self.max_tokens) or self.max_tokens < 8):
            raise ConanConfigError(
                f"max_tokens must be an integer >= 8 or None, not {self.max_tokens!r}.",
                setting="max_tokens",
                value=self.max_tokens,
            )
        if self.max_chars is not None and (not _is_int(self.max_chars) or self.max_chars < 16):
            raise ConanConfigError(
                f"max_chars must be an integer >= 16 or None, not {self.max_chars!r}.",
                setting="max_chars",
                value=self.max_chars,
            )
        if not _is_int(self.overlap_tokens) or self.overlap_tokens < 0:
            raise ConanConfigError(
                f"overlap_tokens must be an integer >= 0, not {self.overlap_tokens!r}.",
                setting="overlap_tokens",
                value=self.overlap_tokens,
            )
        if self.max_tokens is not None and self.overlap_tokens >= self.max_tokens:
            raise ConanConfigError(
                f"overlap_tokens ({self.overlap_tokens}) must be smaller than max_tokens "
                f"({self.max_tokens}): each chunk must move past the previous one.",
                setting="overlap_tokens",
                value=self.overlap_tokens,
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class Chunk:
    """A piece of a document, ready to embed.

    Attributes:
        id: stable id: sha256 of the document key, chunk index and text.
        text: the chunk's text, ``document.text[char_start:char_end]`` (whole mode: the
            embedded text).
        embed_text: what is embedded (title prefix + text).
        index: position of the chunk in its document.
        char_start: offset of the first character in the document text.
        char_end: offset after the last character.
        tokens: about how many tokens the encoder will see (at most the chunker's limit).
    """

    id: str
    text: str
    embed_text: str
    index: int
    char_start: int
    char_end: int
    tokens: int = 0


def chunk_id(key: str, index: int, text: str) -> str:
    """Stable content-derived id of a chunk.

    Example:
        >>> chunk_id("a.txt", 0, "hi") == chunk_id("a.txt", 0, "hi")
        True
    """
    digest = hashlib.sha256(f"{key}\x00{index}\x00{text}".encode())
    return digest.hexdigest()[:40]
