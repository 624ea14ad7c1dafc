"""ConanEmbedding: a LlamaIndex ``BaseEmbedding`` on conan-rag's shared encoder.

Example:
    >>> from llama_index.embeddings.conan import ConanEmbedding
    >>> emb = ConanEmbedding(model_name="sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    >>> len(emb.get_text_embedding_batch(["a cat", "a dog"]))
    2
"""

from __future__ import annotations

from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.bridge.pydantic import Field, PrivateAttr

try:
    from conan_rag import DEFAULT_MODEL, Encoder, load_encoder
    from conan_rag.encoder import Kind
except ImportError as exc:  # pragma: no cover - exercised only without conan-rag installed
    raise ImportError(
        "llama-index-embeddings-conan needs the conan-rag package; install it with "
        "`pip install conan-rag`."
    ) from exc


class ConanEmbedding(BaseEmbedding):
    """Conan-embedding-v1 (or any sentence-transformers model) as a LlamaIndex embedding.

    Only the private ``_get_*``/``_aget_*`` hooks are implemented, so the public methods keep
    emitting callback and instrumentation events and using ``embeddings_cache``. Instances with
    the same model, device, dtype and instructions share one :class:`conan_rag.Encoder` (and
    one set of weights) with every other conan-rag adapter in the process.

    Example:
        >>> from llama_index.core import Document, VectorStoreIndex
        >>> emb = ConanEmbedding(model_name="sentence-transformers/all-MiniLM-L6-v2", device="cpu")
        >>> index = VectorStoreIndex.from_documents(
        ...     [Document(text="Paris is in France."), Document(text="Bananas are yellow.")],
        ...     embed_model=emb,
        ... )
        >>> index.as_retriever(similarity_top_k=1).retrieve("French capital")[0].text
        'Paris is in France.'
    """

    model_name: str = Field(
        default=DEFAULT_MODEL,
        description="Model folder, Hugging Face hub id from the local cache, or bundled model id.",
    )
    embed_batch_size: int = Field(
        default=1024,
        description="Texts handed to the encoder per call; it batches by tokens itself.",
        gt=0,
        le=2048,
    )
    device: str = Field(
        default="auto", description="'auto' (cuda, then mps, then cpu), 'cpu', 'cuda[:N]', 'mps'."
    )
    dtype: str = Field(default="auto", description="'auto', 'float32', 'bfloat16' or 'float16'.")
    normalize: bool = Field(
        default=True, description="L2-normalize the vectors (dot product = cosine similarity)."
    )
    query_instruction: str | None = Field(
        default=None,
        description="Text prepended to queries; None uses the model's own query prompt.",
    )
    text_instruction: str | None = Field(
        default=None,
        description="Text prepended to documents; None uses the model's own document prompt.",
    )

    _encoder: Encoder = PrivateAttr()

    def __init__(self, **data: Any) -> None:
        """Validate the fields, then load (or reuse) the shared encoder.

        Raises:
            pydantic.ValidationError: a mistyped parameter.
            conan_rag.ConanModelError: the model cannot be found or its folder is incomplete.
            conan_rag.ConanConfigError: an unknown device or dtype (the message lists them).
        """
        super().__init__(**data)
        self._encoder = load_encoder(
            self.model_name,
            device=self.device,
            dtype=self.dtype,
            query_prompt=self.query_instruction,
            document_prompt=self.text_instruction,
        )

    @classmethod
    def class_name(cls) -> str:
        """Name stored by ``to_dict()`` and used by LlamaIndex serialization."""
        return "ConanEmbedding"

    @property
    def encoder(self) -> Encoder:
        """The shared :class:`conan_rag.Encoder` doing the work."""
        return self._encoder

    def _embed(self, texts: list[str], kind: Kind) -> list[Embedding]:
        return self._encoder.encode(texts, kind=kind, normalize=self.normalize).tolist()

    async def _aembed(self, texts: list[str], kind: Kind) -> list[Embedding]:
        vectors = await self._encoder.aencode(texts, kind=kind, normalize=self.normalize)
        return vectors.tolist()

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._embed([query], "query")[0]

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return (await self._aembed([query], "query"))[0]

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._embed([text], "document")[0]

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return (await self._aembed([text], "document"))[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._embed(texts, "document")

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await self._aembed(texts, "document")
