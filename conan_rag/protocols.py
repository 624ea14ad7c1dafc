"""EncoderLike: what the adapters and the RAG pipeline need from an encoder, local or remote.

:class:`~conan_rag.encoder.Encoder` (a model in this process) and
:class:`~conan_rag.remote.RemoteEncoder` (a ``conan-rag serve`` server) both provide it, so every
adapter, the pipeline and the command take either.

Example:
    >>> from conan_rag import load_encoder
    >>> isinstance(load_encoder("sentence-transformers/all-MiniLM-L6-v2"), EncoderLike)
    True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np

    from conan_rag.config import EncoderConfig
    from conan_rag.inputs import Kind


@runtime_checkable
class EncoderLike(Protocol):
    """Texts in, float32 vectors out, plus what a collection records about the vectors."""

    model_id: str
    dim: int
    max_seq_length: int
    token_budget: int
    prompts: dict[str, str]

    @property
    def config(self) -> EncoderConfig:
        """The settings (for a server: its model, as a local encoder would load it)."""
        ...

    @property
    def fingerprint(self) -> str:
        """Identifies the model files and every setting that changes the vectors."""
        ...

    @property
    def tokenizer(self) -> Any:
        """The model's fast tokenizer (a server sends its own)."""
        ...

    @property
    def do_lower_case(self) -> bool:
        """Whether texts are lower-cased before tokenizing."""
        ...

    @property
    def device(self) -> str:
        """Where the model runs."""
        ...

    @property
    def dtype(self) -> str:
        """The dtype it computes in."""
        ...

    def encode(
        self,
        texts: Sequence[str],
        *,
        kind: Kind = "document",
        normalize: bool = True,
        show_progress: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Embed texts: float32 ``(len(texts), dim)``, rows in input order."""
        ...

    async def aencode(
        self, texts: Sequence[str], *, kind: Kind = "document", normalize: bool = True
    ) -> np.ndarray:
        """Like :meth:`encode`, without blocking the event loop."""
        ...
