"""RerankerConfig: everything that builds a reranker, as data that can be saved and read back.

Example:
    >>> cfg = RerankerConfig(model="BAAI/bge-reranker-v2-m3", max_length=512)
    >>> RerankerConfig.from_dict(cfg.to_dict()) == cfg
    True
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from conan_rag.config import DEFAULT_BATCH_WAIT_MS, DEFAULT_MAX_BATCH_SIZE
from conan_rag.errors import ConanConfigError

# Multilingual (Chinese included), like Conan-embedding-v1's corpora.
DEFAULT_RERANKER = "BAAI/bge-reranker-v2-m3"


def _check_positive(name: str, value: Any, *, optional: bool) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        allowed = "a positive integer or None" if optional else "a positive integer"
        raise ConanConfigError(
            f"{name} must be {allowed}, not {value!r}.", setting=name, value=value
        )


@dataclass(frozen=True)
class RerankerConfig:
    """Settings of one reranker. ``None`` means "the model's own value" or "pick for me".

    Attributes:
        model: a ``CrossEncoder`` folder, or a Hugging Face hub id in the local cache.
        revision: hub revision to resolve in the local cache.
        device: ``"auto"`` (cuda, then mps, then cpu), ``"cpu"``, ``"cuda"``, ``"cuda:N"``,
            ``"mps"``.
        dtype: ``"auto"`` (bf16/fp16 where the hardware has it, else float32), ``"float32"``,
            ``"bfloat16"``, ``"float16"``.
        max_length: truncate each (query, passage) pair at this many tokens, special tokens
            included; ``None`` uses the model's limit.
        token_budget: most padded tokens in one batch; ``None`` picks per device
            (:data:`~conan_rag.config.DEFAULT_TOKEN_BUDGETS`).
        max_batch_size: most pairs in one batch.
        use_queue: score through the model's batching queue (one worker thread that coalesces
            concurrent callers); ``False`` runs each call's batches directly.
        batch_wait_ms: the longest a request waits in the queue for others to share its batch.
    """

    model: str = DEFAULT_RERANKER
    revision: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    max_length: int | None = None
    token_budget: int | None = None
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    use_queue: bool = True
    batch_wait_ms: float = DEFAULT_BATCH_WAIT_MS

    def __post_init__(self) -> None:
        _check_positive("max_length", self.max_length, optional=True)
        _check_positive("token_budget", self.token_budget, optional=True)
        _check_positive("max_batch_size", self.max_batch_size, optional=False)
        if not isinstance(self.use_queue, bool):
            raise ConanConfigError(
                f"use_queue must be True or False, not {self.use_queue!r}.",
                setting="use_queue",
                value=self.use_queue,
                choices=(True, False),
            )
        wait = self.batch_wait_ms
        if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait <= 1000:
            raise ConanConfigError(
                f"batch_wait_ms must be a number of milliseconds in [0, 1000], not {wait!r}.",
                setting="batch_wait_ms",
                value=wait,
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RerankerConfig:
        """Build from :meth:`to_dict` output; unknown keys are an error listing the valid ones.

        Example:
            >>> RerankerConfig.from_dict({"max_len": 256})
            Traceback (most recent call last):
            ...
            conan_rag.errors.ConanConfigError: Unknown reranker setting(s) ['max_len']; ...
        """
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - valid)
        if unknown:
            raise ConanConfigError(
                f"Unknown reranker setting(s) {unknown}; valid settings are {sorted(valid)}.",
                setting=unknown[0],
                choices=sorted(valid),
            )
        return cls(**data)

    def replace(self, **changes: Any) -> RerankerConfig:
        """A copy with some fields changed (unknown names are an error)."""
        return RerankerConfig.from_dict({**self.to_dict(), **changes})
