"""Documents → chunks that fit the encoder: token-aware, cut at paragraph, then sentence ends.

A chunk never exceeds the encoder's ``max_seq_length`` tokens, counting special tokens, the
document prompt and the title prefix. Cuts fall, in order of preference, on a blank line, after a
sentence end (Chinese ``。！？；`` or English ``.!?`` followed by a space), on a word boundary,
and only as a last resort between two sub-word tokens — never inside a character. Positions come
from the fast tokenizer's offset mapping of the whole document, so ``char_start``/``char_end``
point at the chunk's exact text.

Example:
    >>> from conan_rag import load_encoder
    >>> from conan_rag.loaders import Document
    >>> chunker = Chunker(load_encoder("sentence-transformers/all-MiniLM-L6-v2"))
    >>> doc = Document("d1", "Cats purr. Dogs bark.", "notes.txt")
    >>> [c.text for c in chunker.chunk(doc)]
    ['Cats purr. Dogs bark.']
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import threading
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from conan_rag.errors import ConanConfigError

if TYPE_CHECKING:
    from conan_rag.encoder import Encoder
    from conan_rag.loaders import Document

ChunkMode = Literal["tokens", "whole"]
CHUNK_MODES: tuple[str, ...] = ("tokens", "whole")

_CJK_END = "。！？；"
_EN_END = ".!?"
_CLOSERS = "\"'”’)]）】」』》"
# Bump when the cutting algorithm changes: it is part of every document hash, so stored chunks
# cut by an older algorithm are re-chunked (not silently kept as "unchanged") on the next ingest.
CHUNKER_VERSION = 2
_PARAGRAPH = re.compile(r"\n[ \t\r\f\v]*\n")


def _is_cjk(char: str) -> bool:
    code = ord(char)
    return 0x3000 <= code <= 0x9FFF or 0xF900 <= code <= 0xFAFF or 0x20000 <= code <= 0x2FA1F


@dataclass(frozen=True)
class ChunkConfig:
    """How documents are cut.

    Attributes:
        mode: ``"tokens"`` (token-aware chunks) or ``"whole"`` (one chunk per document, as
            MTEB embeds it; the encoder truncates it at ``max_seq_length``).
        max_tokens: tokens per chunk including special tokens, prompt and title; ``None`` uses
            the encoder's ``max_seq_length`` (a larger value is an error).
        overlap_tokens: tokens shared by consecutive chunks (snapped to a word boundary).
        title_prefix: embed each chunk as the title, a newline, then the chunk (when titled).
    """

    mode: ChunkMode = "tokens"
    max_tokens: int | None = None
    overlap_tokens: int = 32
    title_prefix: bool = True

    def __post_init__(self) -> None:
        if self.mode not in CHUNK_MODES:
            raise ConanConfigError(
                f"Unknown chunk mode {self.mode!r}; choose one of {CHUNK_MODES}."
            )
        if self.max_tokens is not None and (
            not isinstance(self.max_tokens, int) or self.max_tokens < 8
        ):
            raise ConanConfigError(
                f"max_tokens must be an integer >= 8 or None, not {self.max_tokens!r}."
            )
        if not isinstance(self.overlap_tokens, int) or self.overlap_tokens < 0:
            raise ConanConfigError(f"overlap_tokens must be >= 0, not {self.overlap_tokens!r}.")

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
    """

    id: str
    text: str
    embed_text: str
    index: int
    char_start: int
    char_end: int


def chunk_id(key: str, index: int, text: str) -> str:
    """Stable content-derived id of a chunk.

    Example:
        >>> chunk_id("a.txt", 0, "hi") == chunk_id("a.txt", 0, "hi")
        True
    """
    digest = hashlib.sha256(f"{key}\x00{index}\x00{text}".encode())
    return digest.hexdigest()[:40]


class Chunker:
    """Cuts documents for one encoder (its tokenizer, prompt and token limit).

    Args:
        encoder: the encoder the chunks are for.
        config: chunking settings.
    """

    def __init__(self, encoder: Encoder, config: ChunkConfig | None = None) -> None:
        self.config = config or ChunkConfig()
        self.limit = self.config.max_tokens or encoder.max_seq_length
        if self.limit > encoder.max_seq_length:
            raise ConanConfigError(
                f"max_tokens {self.limit} exceeds the encoder's max_seq_length "
                f"{encoder.max_seq_length}; pass a value <= {encoder.max_seq_length} or None."
            )
        # A private copy: fast tokenizers are not re-entrant and the encoder's may be busy.
        self._tokenizer: Any = copy.deepcopy(encoder.backend.tokenizer)
        self._lock = threading.Lock()
        self._prompt = encoder.prompts.get("document", "")
        self._lower = bool(encoder.spec.do_lower_case)
        self.signature = hashlib.sha256(
            json.dumps(
                {
                    "chunk": self.config.to_dict(),
                    "version": CHUNKER_VERSION,
                    "limit": self.limit,
                    "encoder": encoder.fingerprint,
                },
                sort_keys=True,
            ).encode()
        ).hexdigest()[:16]

    # -- token counting ---------------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        """Tokens the encoder feeds for ``text`` (prompt and special tokens included)."""
        full = self._prompt + text
        if self._lower:
            full = full.lower()
        with self._lock:
            ids = self._tokenizer(full, add_special_tokens=True, truncation=False)["input_ids"]
        return len(ids)

    def _offsets(self, text: str) -> list[tuple[int, int]]:
        with self._lock:
            encoded = self._tokenizer(
                text.lower() if self._lower else text,
                add_special_tokens=False,
                truncation=False,
                return_offsets_mapping=True,
            )
        return [(int(a), int(b)) for a, b in encoded["offset_mapping"] if b > a]

    # -- chunking ---------------------------------------------------------------------------
    def document_hash(self, document: Document) -> str:
        """Hash of a document's content and of every setting that shapes its chunks."""
        payload = json.dumps([self.signature, document.title, document.text, document.metadata],
                             sort_keys=True, default=str)  # fmt: skip
        return hashlib.sha256(payload.encode()).hexdigest()[:32]

    def chunk(self, document: Document) -> list[Chunk]:
        """Cut one document; an empty document has no chunks."""
        if self.config.mode == "whole":
            text = (document.title + " " + document.text).strip()
            if not text:
                return []
            return [Chunk(chunk_id(document.key, 0, text), text, text, 0, 0, len(document.text))]
        text = document.text
        if not text.strip():
            return []
        prefix = ""
        if self.config.title_prefix and document.title.strip():
            prefix = document.title.strip() + "\n"
        overhead = self.count_tokens(prefix)
        if overhead > self.limit // 2:  # a huge title would crowd out the text: drop it
            prefix, overhead = "", self.count_tokens("")
        budget = self.limit - overhead
        spans = self._spans(text, budget, prefix)
        chunks: list[Chunk] = []
        for index, (start, end) in enumerate(spans):
            piece = text[start:end]
            chunks.append(
                Chunk(
                    chunk_id(document.key, index, piece), piece, prefix + piece, index, start, end
                )
            )
        return chunks

    def _spans(self, text: str, budget: int, prefix: str) -> list[tuple[int, int]]:
        offsets = self._offsets(text)
        n = len(offsets)
        if n == 0:
            return [(0, len(text))] if text.strip() else []
        priority = [self._priority(text, offsets, i) for i in range(n)]
        spans: list[tuple[int, int]] = []
        start = 0
        while start < n:
            end = self._cut(priority, start, min(n, start + budget), n)
            # Verify with the real tokenizer (a substring may tokenize differently); shrink.
            while end > start + 1 and self._too_long(prefix, text, offsets, start, end):
                end = self._cut(priority, start, end - 1, n)
            spans.append((offsets[start][0], offsets[end - 1][1]))
            if end >= n:
                break
            start = self._next_start(priority, start, end)
        return spans

    def _too_long(
        self, prefix: str, text: str, offsets: list[tuple[int, int]], start: int, end: int
    ) -> bool:
        piece = text[offsets[start][0] : offsets[end - 1][1]]
        return self.count_tokens(prefix + piece) > self.limit

    @staticmethod
    def _priority(text: str, offsets: list[tuple[int, int]], i: int) -> int:
        """How good a cut *before* token ``i`` is: 3 paragraph, 2 sentence, 1 word, 0 sub-word."""
        if i == 0:
            return 3
        prev_end, start = offsets[i - 1][1], offsets[i][0]
        if start < prev_end:
            return -1  # tokens share a character (byte-level BPE): never cut there
        gap = text[prev_end:start]
        if _PARAGRAPH.search(gap):
            return 3
        tail = text[offsets[i - 1][0] : prev_end].rstrip(_CLOSERS)
        if tail and tail[-1] in _CJK_END:
            return 2
        if tail and tail[-1] in _EN_END and gap and gap[0].isspace():
            return 2
        if gap or _is_cjk(text[start]) or _is_cjk(text[prev_end - 1]):
            return 1
        return 0

    @staticmethod
    def _cut(priority: list[int], start: int, hard_end: int, n: int) -> int:
        """Best cut in ``(start + quarter, hard_end]``: highest priority, then latest.

        Looking back three quarters of the window lets a paragraph or sentence end win over a
        cut between words (which would strand the end of a sentence in a tiny next chunk).
        """
        if hard_end >= n:
            return n
        low = start + max(1, (hard_end - start) // 4)
        best, best_priority = hard_end, -2
        for i in range(hard_end, low - 1, -1):
            if priority[i] > best_priority:
                best, best_priority = i, priority[i]
                if best_priority == 3:
                    break
        if best_priority < 0:  # nowhere legal in the window: take any legal cut
            best = next((i for i in range(hard_end, start, -1) if priority[i] >= 0), hard_end)
        return best

    def _next_start(self, priority: list[int], start: int, end: int) -> int:
        overlap = self.config.overlap_tokens
        if overlap <= 0:
            return end
        low = max(start + 1, end - overlap)
        if low >= end:
            return end
        top = max(priority[low:end])
        if top < 1:
            return end  # no word boundary inside the overlap window: no overlap
        return next(i for i in range(low, end) if priority[i] == top)
