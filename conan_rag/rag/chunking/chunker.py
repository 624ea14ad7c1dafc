"""Documents → chunks that fit the encoder: token-aware, cut at paragraph, then sentence ends.

A chunk never exceeds the encoder's ``max_seq_length`` tokens, counting special tokens, the
document prompt and the title prefix. Cuts fall, in order of preference, on a blank line, after
a sentence end (:mod:`conan_rag.rag.chunking.sentences`), on a word boundary, and only as a
last resort between two sub-word tokens — never inside a character. Positions come from the fast
tokenizer's offset mapping, so ``char_start``/``char_end`` point at the chunk's exact text.

A chunk also holds at most ``max_chars`` characters (:class:`ChunkConfig`): a token longer than
an eighth of that (a line of base64, a 5 MB run without a space, which a WordPiece tokenizer
makes one ``[UNK]``) is cut into pieces of that length first, and a chunk ends before the bound.
On prose the bound never binds.

Text is tokenized in windows of :data:`WINDOW_CHARS` characters, so memory stays bounded however
long a document is: chunks are emitted while the window is still far from its end, and the next
window starts where the first unfinished chunk starts. A document shorter than a window is cut
exactly as if it were tokenized whole.

Example:
    >>> from conan_rag import load_encoder
    >>> from conan_rag.rag.sources.documents import Document
    >>> chunker = Chunker(load_encoder("sentence-transformers/all-MiniLM-L6-v2"))
    >>> doc = Document("d1", "Cats purr. Dogs bark.", "notes.txt")
    >>> [c.text for c in chunker.chunk(doc)]
    ['Cats purr. Dogs bark.']
"""

from __future__ import annotations

import bisect
import copy
import hashlib
import json
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from conan_rag.errors import ConanConfigError
from conan_rag.rag.chunking.config import (
    CHARS_PER_TOKEN,
    Chunk,
    ChunkConfig,
    Digest,
    chunk_id,
    text_bytes,
)
from conan_rag.rag.chunking.sentences import PARAGRAPH, ends_sentence, is_cjk

if TYPE_CHECKING:
    from conan_rag.protocols import EncoderLike
    from conan_rag.rag.sources.documents import DocumentLike

# Bump when the cutting algorithm or the hash changes: it is part of every document hash, so
# stored chunks cut by an older algorithm are re-chunked (not kept as "unchanged").
CHUNKER_VERSION = 4  # 4: the character bound (the chunks of prose are those of version 3)
WINDOW_CHARS = 1 << 18  # characters tokenized at once
_MARGIN_CHARS = 2048  # tokens this close to a window's end may tokenize differently: never used
_Span = tuple[int, int, int]  # char start, char end, tokens
__all__ = ["CHUNKER_VERSION", "WINDOW_CHARS", "Chunker"]


class Chunker:
    """Cuts documents for one encoder (its tokenizer, prompt and token limit).

    Args:
        encoder: the encoder the chunks are for.
        config: chunking settings.

    Raises:
        ConanConfigError: ``max_tokens`` exceeds the encoder's limit, or the overlap does not
            leave room for text.
    """

    def __init__(self, encoder: EncoderLike, config: ChunkConfig | None = None) -> None:
        self.config = config or ChunkConfig()
        self.limit = self.config.max_tokens or encoder.max_seq_length
        self.max_chars = self.config.max_chars or CHARS_PER_TOKEN * self.limit
        self._piece = max(1, self.max_chars // 8)  # longer tokens are cut into such pieces
        if self.limit > encoder.max_seq_length:
            raise ConanConfigError(
                f"max_tokens {self.limit} exceeds the encoder's max_seq_length "
                f"{encoder.max_seq_length}; pass a value <= {encoder.max_seq_length} or None.",
                setting="max_tokens",
                value=self.limit,
            )
        # A private copy: fast tokenizers are not re-entrant and the encoder's may be busy.
        self._tokenizer: Any = copy.deepcopy(encoder.tokenizer)
        self._lock = threading.Lock()
        self._prompt = encoder.prompts.get("document", "")
        self._lower = encoder.do_lower_case
        room = self.limit - self.count_tokens("")
        if self.config.mode == "tokens" and self.config.overlap_tokens >= room:
            raise ConanConfigError(
                f"overlap_tokens ({self.config.overlap_tokens}) must be smaller than the "
                f"{room} tokens a chunk holds after the prompt and special tokens.",
                setting="overlap_tokens",
                value=self.config.overlap_tokens,
            )
        self.signature = hashlib.sha256(
            json.dumps(
                {
                    "chunk": self.config.to_dict(),
                    "version": CHUNKER_VERSION,
                    "limit": self.limit,
                    "window": WINDOW_CHARS,
                    "encoder": encoder.fingerprint,
                },
                sort_keys=True,
            ).encode()
        ).hexdigest()[:16]

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without its lock (a Ray task gets a copy: same tokenizer, same hashes)."""
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

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
        piece = self._piece
        return [
            (cut, min(cut + piece, int(b)))
            for a, b in encoded["offset_mapping"]
            if b > a
            for cut in range(int(a), int(b), piece)
        ]

    # -- hashing ----------------------------------------------------------------------------
    def digest(self, document: DocumentLike) -> Digest:
        """Hash a document's text (read in blocks) with every setting that shapes its chunks.

        Raises:
            LoaderError: a file-backed document can no longer be read.
        """
        hasher = self.start_digest(document)
        chars, body_blank = 0, True
        for block in document.blocks():
            hasher.update(text_bytes(block))
            chars += len(block)
            body_blank = body_blank and not block.strip()
        blank = body_blank and (self.config.mode == "tokens" or not document.title.strip())
        return Digest(hasher.hexdigest()[:32], chars, blank)

    def start_digest(self, document: DocumentLike) -> Any:
        """A sha256 fed with everything but the text.

        Feeding it the text (through :func:`text_bytes`) and taking ``hexdigest()[:32]`` gives
        :meth:`digest`'s hash.
        """
        header = json.dumps(
            [self.signature, document.title, document.metadata], sort_keys=True, default=str
        )
        return hashlib.sha256(header.encode("utf-8") + b"\x00")

    def document_hash(self, document: DocumentLike) -> str:
        """The hash of :meth:`digest`."""
        return self.digest(document).hash

    # -- chunking ---------------------------------------------------------------------------
    def chunk(self, document: DocumentLike) -> list[Chunk]:
        """Cut one document; an empty document has no chunks."""
        return list(self.iter_chunks(document))

    def iter_chunks(self, document: DocumentLike) -> Iterator[Chunk]:
        """Cut one document lazily, reading its text window by window."""
        if self.config.mode == "whole":
            body = "".join(document.blocks())
            text = (document.title + " " + body).strip()
            if text:
                yield Chunk(chunk_id(document.key, 0, text), text, text, 0, 0, len(body), 0)
            return
        prefix = ""
        if self.config.title_prefix and document.title.strip():
            prefix = document.title.strip() + "\n"
        overhead = self.count_tokens(prefix)
        if overhead > self.limit // 2:  # a huge title would crowd out the text: drop it
            prefix, overhead = "", self.count_tokens("")
        budget = self.limit - overhead
        spans = self._windows(document, budget, prefix)
        for index, (base, window, (start, end, tokens)) in enumerate(spans):
            piece = window[start:end]
            yield Chunk(
                chunk_id(document.key, index, piece),
                piece,
                prefix + piece,
                index,
                base + start,
                base + end,
                tokens + overhead,
            )

    def _windows(
        self, document: DocumentLike, budget: int, prefix: str
    ) -> Iterator[tuple[int, str, _Span]]:
        """``(window offset, window text, span)`` per chunk, in document order."""
        blocks = document.blocks()
        window, base, final = "", 0, False
        while True:
            while not final and len(window) < WINDOW_CHARS:
                block = next(blocks, None)
                final = block is None
                window += block or ""
            spans, restart = self._spans(window, budget, prefix, final)
            for span in spans:
                yield base, window, span
            if restart is None:
                return
            if restart == 0:  # no chunk fits in the window yet (a giant token): read more
                block = next(blocks, None)
                final = block is None
                window += block or ""
                continue
            base, window = base + restart, window[restart:]

    def _spans(
        self, text: str, budget: int, prefix: str, final: bool
    ) -> tuple[list[_Span], int | None]:
        """Chunk spans in ``text`` and where the next window starts (``None``: done).

        Without ``final``, a chunk is cut only where every token it may look at lies well
        before the window's end.
        """
        offsets = self._offsets(text)
        n = len(offsets)
        if n == 0:
            return [], (None if final else len(text))
        safe = n if final else sum(1 for _, b in offsets if b <= len(text) - _MARGIN_CHARS)
        priority = [self._priority(text, offsets, i) for i in range(n)]
        ends = [b for _, b in offsets]
        spans: list[_Span] = []
        start = 0
        while start < n:
            if not final and start + budget + 1 > safe:
                return spans, offsets[start][0]
            fits = bisect.bisect_right(ends, offsets[start][0] + self.max_chars, lo=start)
            bounded = fits < min(n, start + budget)  # the character bound ends this chunk
            end = self._cut(priority, start, min(n, start + budget, fits), n)
            # Verify with the real tokenizer (a substring may tokenize differently); shrink.
            while end > start + 1 and self._too_long(prefix, text, offsets, start, end):
                end = self._cut(priority, start, end - 1, n)
            spans.append((offsets[start][0], offsets[end - 1][1], end - start))
            if end >= n:
                break
            start = end if bounded else self._next_start(priority, start, end)
        return spans, (None if final else len(text))

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
        if PARAGRAPH.search(gap):
            return 3
        if ends_sentence(text[offsets[i - 1][0] : prev_end], gap):
            return 2
        if gap or is_cjk(text[start]) or is_cjk(text[prev_end - 1]):
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
