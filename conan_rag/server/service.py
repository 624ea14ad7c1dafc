"""EmbeddingService: the shared encoder as the endpoints use it (count tokens, embed, describe).

The service counts tokens with its own copy of the model's fast tokenizer (the encoder's is not
re-entrant and belongs to the batching queue's worker): a few microseconds for a short text,
done on the event loop; large requests are counted in a worker thread. Embedding goes through
:meth:`~conan_rag.encoder.Encoder.aencode`, so every client's requests share the queue's batches
and the event loop never waits for the model.

Example:
    >>> import asyncio
    >>> from conan_rag import load_encoder
    >>> enc = load_encoder("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    >>> service = EmbeddingService(enc)
    >>> service.count(["Hello World!"], "document")
    [5]
    >>> asyncio.run(service.embed(["Hello World!"], "document", dimensions=8)).shape
    (1, 8)
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from tokenizers import Tokenizer

import conan_rag
from conan_rag.encoder import Encoder
from conan_rag.inputs import Kind
from conan_rag.registry import load_encoder
from conan_rag.server.errors import ApiError

INLINE_CHARS = 16384  # requests up to this many characters are tokenized on the event loop
# A text longer than max_seq_length * this many characters is first cut there, and the cut kept
# only where it leaves the truncated tokens as they were (else a 4x longer cut is tried): a
# 20 MB text costs what its first few thousand characters cost, not gigabytes of tokens.
CHARS_PER_TOKEN = 16
CUT_GROWTH = 4


@dataclass(frozen=True)
class Rows:
    """A request's texts as the model is fed them (:meth:`EmbeddingService.rows`).

    Attributes:
        texts: the texts, long ones cut by characters (their truncated tokens unchanged).
        ids: each text's token ids, truncated at max_seq_length, as ``Encoder.tokenize`` gives.
        over: whether each text has more tokens than max_seq_length (it was truncated).
        cut: whether each text was cut by characters first.
    """

    texts: list[str]
    ids: list[list[int]]
    over: list[bool]
    cut: list[bool]


def _truncating(fast: Any, max_length: int) -> Tokenizer:
    """A copy of the fast tokenizer's Rust tokenizer, truncating as ``tokenizer(...)`` does."""
    tokenizer = Tokenizer.from_str(fast.backend_tokenizer.to_str())
    side = getattr(fast, "truncation_side", "right")
    tokenizer.enable_truncation(max_length, stride=0, strategy="longest_first", direction=side)
    tokenizer.no_padding()
    tokenizer.encode_special_tokens = bool(getattr(fast, "split_special_tokens", False))
    return tokenizer


class EmbeddingService:
    """The loaded encoder, its token counter and its descriptions.

    Args:
        encoder: the shared encoder (from :func:`conan_rag.load_encoder`).
    """

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder
        self.model_id = encoder.model_id
        self.dim = encoder.dim
        self.max_seq_length = encoder.max_seq_length
        self.do_lower_case = bool(encoder.spec.do_lower_case)
        fast: Any = encoder.backend.tokenizer  # transformers' fast tokenizer
        counter = Tokenizer.from_str(fast.backend_tokenizer.to_str())
        counter.no_truncation()  # lengths before truncation: over-long texts are detected
        counter.no_padding()
        self._counter = counter
        self.tokenizer_json = counter.to_str()
        self._rows = _truncating(fast, self.max_seq_length)  # the ids the model is fed

    # -- tokens -------------------------------------------------------------------------------
    def prepare(self, texts: list[str], kind: Kind) -> list[str]:
        """The strings the model's tokenizer sees: prompt prepended, lower-cased if asked."""
        prompt = self.encoder.prompts[kind]
        items = [prompt + t for t in texts] if prompt else texts
        return [t.lower() for t in items] if self.do_lower_case else items

    def count(self, texts: list[str], kind: Kind) -> list[int]:
        """Tokens of each text before truncation (prompt and special tokens included)."""
        encodings = self._counter.encode_batch_fast(self.prepare(texts, kind))
        return [len(e.ids) for e in encodings]

    def measure(self, texts: list[str], kind: Kind) -> tuple[list[str], list[int]]:
        """The texts to embed, each cut where that keeps its truncated tokens, and their tokens.

        A text over ``max_seq_length * CHARS_PER_TOKEN`` characters is replaced by a prefix
        whose truncated tokens are exactly those of the whole text (see :meth:`_keeps_tokens`);
        its count (the prefix's, over ``max_seq_length``) then says only that it is too long.

        Example:
            >>> from conan_rag import load_encoder
            >>> service = EmbeddingService(load_encoder("sentence-transformers/all-MiniLM-L6-v2"))
            >>> text = "one more word " * 10_000
            >>> cut, lengths = service.measure([text, "hi"], "document")
            >>> len(cut[0]) < len(text), lengths[0] > 256, lengths[1]
            (True, True, 3)
            >>> service.encoder.tokenize(cut[:1]) == service.encoder.tokenize([text])
            True
        """
        out, cut = self._cut(texts, kind)
        rest = [i for i in range(len(texts)) if i not in cut]
        lengths = dict(cut)
        lengths.update(zip(rest, self.count([out[i] for i in rest], kind), strict=True))
        return out, [lengths[i] for i in range(len(texts))]

    def rows(self, texts: list[str], kind: Kind) -> Rows:
        """Token ids as the model is fed them, tokenized once (long texts cut first).

        Example:
            >>> from conan_rag import load_encoder
            >>> service = EmbeddingService(load_encoder("sentence-transformers/all-MiniLM-L6-v2"))
            >>> rows = service.rows(["Hello World!", "word " * 1000], "document")
            >>> rows.ids == service.encoder.tokenize(["Hello World!", "word " * 1000])
            True
            >>> [len(x) for x in rows.ids], rows.over
            ([5, 256], [False, True])
        """
        out, cut = self._cut(texts, kind)
        encodings = self._rows.encode_batch_fast(self.prepare(out, kind))
        over = [i in cut or bool(e.overflowing) for i, e in enumerate(encodings)]
        return Rows(out, [e.ids for e in encodings], over, [i in cut for i in range(len(out))])

    def _cut(self, texts: list[str], kind: Kind) -> tuple[list[str], dict[int, int]]:
        """The texts with the long ones cut (see :meth:`measure`), and each cut one's count."""
        out = list(texts)
        cut: dict[int, int] = {}
        bound = self.max_seq_length * CHARS_PER_TOKEN
        long = [i for i, t in enumerate(texts) if len(t) > bound]
        while long:
            prefixes = [texts[i][:bound] for i in long]
            encodings = self._counter.encode_batch(self.prepare(prefixes, kind))
            retry = []
            for i, prefix, encoding in zip(long, prefixes, encodings, strict=True):
                if self._keeps_tokens(encoding.word_ids):
                    out[i], cut[i] = prefix, len(encoding.ids)
                else:
                    retry.append(i)
            bound *= CUT_GROWTH
            long = [i for i in retry if len(texts[i]) > bound]
        return out, cut

    def _keeps_tokens(self, word_ids: list[int | None]) -> bool:
        """Whether a prefix's truncated tokens are those of the whole text it was cut from.

        The tokenizer splits text into words (whitespace, punctuation, CJK characters) and
        tokenizes each alone, with character-local normalization: only the last word of a
        prefix can differ from the whole text's. So the cut is safe when truncation keeps no
        token of that word: the prefix has more tokens than are kept, the last kept one from an
        earlier word. (A tokenizer without word splits has one word: never cut.)
        """
        content = [w for w in word_ids if w is not None]  # None: special tokens
        kept = self.max_seq_length - (len(word_ids) - len(content))
        return 0 < kept < len(content) and content[kept - 1] < content[-1]

    async def arows(self, texts: list[str], kind: Kind) -> Rows:
        """:meth:`rows`, on the event loop for small requests, else in a worker thread."""
        if len(texts) <= 256 and sum(len(t) for t in texts) <= INLINE_CHARS:
            return self.rows(texts, kind)
        return await asyncio.to_thread(self.rows, texts, kind)

    def truncated(self, lengths: list[int]) -> int:
        """Tokens the model runs for texts of these lengths (each cut at max_seq_length)."""
        limit = self.max_seq_length
        return sum(min(n, limit) for n in lengths)

    def check_length(self, rows: Rows, field: str, kind: Kind) -> None:
        """Refuse (413) texts over max_seq_length, for requests that forbid truncation."""
        for index, over in enumerate(rows.over):
            if over:
                if rows.cut[index]:  # cut by characters: only known to be over the limit
                    has = f"more than {self.max_seq_length}"
                else:
                    has = str(self.count([rows.texts[index]], kind)[0])
                raise ApiError(
                    413,
                    f"{field}[{index}] has {has} tokens (prompt and special tokens included); "
                    f"the model takes at most {self.max_seq_length}. Shorten it, or send "
                    "truncate=true to embed its first tokens.",
                    param=field,
                    code="input_too_long",
                )

    def check_dimensions(self, dimensions: int | None) -> None:
        """Refuse (400) a ``dimensions`` larger than the model's, or below 1."""
        if dimensions is not None and not 1 <= dimensions <= self.dim:
            raise ApiError(
                400,
                f"dimensions {dimensions} is outside 1..{self.dim} (the model's dimension); "
                "pass a value in that range, or omit it for all.",
                param="dimensions",
            )

    # -- vectors ------------------------------------------------------------------------------
    async def embed(
        self, texts: list[str], kind: Kind, *, dimensions: int | None = None, normalize: bool = True
    ) -> np.ndarray:
        """Vectors of ``texts``: the first ``dimensions`` (all: None), L2-normalized if asked.

        ``normalize=False`` gives what ``Encoder.encode(texts, normalize=False)`` gives (its first
        ``dimensions``); ``True`` equals an encoder loaded with ``truncate_dim=dimensions``.
        """
        ids = (await self.arows(texts, kind)).ids
        return await self.embed_ids(ids, kind, dimensions=dimensions, normalize=normalize)

    async def embed_ids(
        self,
        ids: list[list[int]],
        kind: Kind,
        *,
        dimensions: int | None = None,
        normalize: bool = True,
    ) -> np.ndarray:
        """:meth:`embed` for the ids of :meth:`rows` (the texts are not tokenized again)."""
        whole = dimensions is None or dimensions >= self.dim
        vectors = await self.encoder.aencode_ids(ids, kind=kind, normalize=normalize and whole)
        if not whole:
            vectors = vectors[:, :dimensions]
            if normalize:
                norms = np.linalg.norm(vectors, axis=1, keepdims=True)
                vectors = vectors / np.maximum(norms, 1e-12)
        if not np.isfinite(vectors).all():
            raise ApiError(
                500, "The model produced non-finite values (overflow in half precision?)."
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    # -- descriptions -------------------------------------------------------------------------
    def fingerprint(self, dimensions: int | None = None) -> str:
        """The fingerprint of the vectors served with ``dimensions`` (all: None).

        Equal to that of a local encoder loaded with ``truncate_dim=dimensions``, so a
        collection filled through the server and one filled locally guard each other.
        """
        self.check_dimensions(dimensions)
        if dimensions is None or dimensions == self.dim:
            return self.encoder.fingerprint
        view = load_encoder(config=self.encoder.config.replace(truncate_dim=dimensions))
        return view.fingerprint  # a view of the same weights: nothing is loaded again

    def info(
        self, max_inputs: int, max_queued_tokens: int, dimensions: int | None = None
    ) -> dict[str, Any]:
        """``GET /info``: what the client needs to use and trust the vectors.

        ``dimensions`` asks for the fingerprint of vectors truncated to that many dimensions.
        """
        enc = self.encoder
        return {
            "model_id": self.model_id,
            "fingerprint": self.fingerprint(dimensions),
            "dim": self.dim,
            "max_seq_length": self.max_seq_length,
            "dtype": enc.dtype,
            "device": enc.device,
            "prompts": dict(enc.prompts),
            "do_lower_case": self.do_lower_case,
            "max_inputs": max_inputs,
            "max_queued_tokens": max_queued_tokens,
            "version": conan_rag.__version__,
        }

    def tokenizer_body(self) -> bytes:
        """``GET /tokenizer``: the tokenizer (untruncated, unpadded) and how texts are prepared."""
        body = {
            "tokenizer_json": self.tokenizer_json,
            "do_lower_case": self.do_lower_case,
            "max_seq_length": self.max_seq_length,
            "prompts": dict(self.encoder.prompts),
        }
        return json.dumps(body, ensure_ascii=False).encode("utf-8")
