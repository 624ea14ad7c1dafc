"""ConanEmbeddings: LangChain ``Embeddings`` on conan-rag's shared encoder.

Example:
    >>> from langchain_conan import ConanEmbeddings
    >>> emb = ConanEmbeddings(model="sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    >>> len(emb.embed_query("What is the capital of France?"))
    384
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.embeddings import Embeddings
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

try:
    from conan_rag import DEFAULT_MODEL, Encoder, load_encoder
    from conan_rag.encoder import Kind
except ImportError as exc:  # pragma: no cover - exercised only without conan-rag installed
    raise ImportError(
        "langchain-conan needs the conan-rag package; install it with `pip install conan-rag`."
    ) from exc


class ConanEmbeddings(BaseModel, Embeddings):
    """Conan-embedding-v1 (or any sentence-transformers model) as LangChain embeddings.

    Queries get the model's query prompt and documents its document prompt, so retrieval uses
    the model the way it was trained. Every instance with the same model, device, dtype and
    prompts shares one :class:`conan_rag.Encoder` (and one set of weights) with every other
    conan-rag adapter in the process.

    Example:
        >>> from langchain_core.vectorstores import InMemoryVectorStore
        >>> emb = ConanEmbeddings(model="sentence-transformers/all-MiniLM-L6-v2", device="cpu")
        >>> store = InMemoryVectorStore.from_texts(
        ...     ["Paris is the capital of France.", "Bananas are yellow."], embedding=emb
        ... )
        >>> store.similarity_search("capital of France", k=1)[0].page_content
        'Paris is the capital of France.'
    """

    model: str = Field(default=DEFAULT_MODEL, alias="model_name")
    """Model folder, Hugging Face hub id from the local cache, or a bundled model id."""

    device: str = "auto"
    """``"auto"`` (cuda, then mps, then cpu), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``."""

    dtype: str = "auto"
    """``"auto"``, ``"float32"``, ``"bfloat16"`` or ``"float16"``."""

    normalize: bool = True
    """L2-normalize the vectors, so dot product equals cosine similarity."""

    query_prompt: str | None = None
    """Text prepended to queries; ``None`` uses the model's own query prompt."""

    document_prompt: str | None = None
    """Text prepended to documents; ``None`` uses the model's own document prompt (or none)."""

    show_progress: bool = False
    """Show a progress bar while embedding documents synchronously."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, protected_namespaces=())

    _encoder: Encoder = PrivateAttr()

    def __init__(self, **data: Any) -> None:
        """Validate the fields, then load (or reuse) the shared encoder.

        Raises:
            pydantic.ValidationError: an unknown or mistyped parameter.
            conan_rag.ConanModelError: the model cannot be found or its folder is incomplete.
            conan_rag.ConanConfigError: an unknown device or dtype (the message lists them).
        """
        super().__init__(**data)
        self._encoder = load_encoder(
            self.model,
            device=self.device,
            dtype=self.dtype,
            query_prompt=self.query_prompt,
            document_prompt=self.document_prompt,
        )

    @property
    def encoder(self) -> Encoder:
        """The shared :class:`conan_rag.Encoder` doing the work."""
        return self._encoder

    def _embed(self, texts: Sequence[str], kind: Kind) -> list[list[float]]:
        vectors = self._encoder.encode(
            list(texts), kind=kind, normalize=self.normalize, show_progress=self.show_progress
        )
        return vectors.tolist()

    async def _aembed(self, texts: Sequence[str], kind: Kind) -> list[list[float]]:
        vectors = await self._encoder.aencode(list(texts), kind=kind, normalize=self.normalize)
        return vectors.tolist()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed documents (with the document prompt).

        Args:
            texts: the documents.

        Returns:
            One vector (a list of floats) per document, in input order.
        """
        return self._embed(texts, "document")

    def embed_query(self, text: str) -> list[float]:
        """Embed one query (with the query prompt).

        Args:
            text: the query.

        Returns:
            Its vector as a list of floats.
        """
        return self._embed([text], "query")[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed documents without blocking the event loop.

        Args:
            texts: the documents.

        Returns:
            One vector (a list of floats) per document, in input order.
        """
        return await self._aembed(texts, "document")

    async def aembed_query(self, text: str) -> list[float]:
        """Embed one query without blocking the event loop.

        Args:
            text: the query.

        Returns:
            Its vector as a list of floats.
        """
        return (await self._aembed([text], "query"))[0]
