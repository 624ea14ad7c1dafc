"""ConanEmbeddings: LangChain ``Embeddings`` on conan-rag's shared encoder.

Example:
    >>> from langchain_conan import ConanEmbeddings
    >>> emb = ConanEmbeddings("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    >>> len(emb.embed_query("What is the capital of France?"))
    384
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.embeddings import Embeddings
from pydantic import BaseModel, ConfigDict, PrivateAttr, SecretStr, model_validator

try:
    from conan_rag import DEFAULT_MODEL
    from conan_rag.adapter_kit import SharedEncoderMixin, translate_options, with_positional_model
except ImportError as exc:  # pragma: no cover - exercised only without conan-rag installed
    raise ImportError(
        "langchain-conan needs the conan-rag package; install it with `pip install conan-rag`."
    ) from exc

if TYPE_CHECKING:
    from conan_rag import EncoderLike, Kind


def _register_with_chroma() -> None:
    """Register conan-rag's Chroma embedding function where chromadb is installed.

    A collection ``conan-rag ingest`` built records its embedding function as ``"conan-rag"``,
    and Chroma finds a function by name only among the classes registered in this process (it
    has no plugin entry points). Importing :mod:`conan_rag.chroma` registers it, so
    ``langchain_chroma.Chroma`` and Chroma's own calls can rebuild it. Called when the encoder
    loads (torch is loading then anyway), never on ``import``.
    """
    try:
        if importlib.util.find_spec("chromadb") is None:
            return
        import conan_rag.chroma  # noqa: F401  (registers "conan-rag" with Chroma)
    except ImportError:  # a chromadb too old for embedding-function registration
        return


class ConanEmbeddings(SharedEncoderMixin, BaseModel, Embeddings):
    """Conan-embedding-v1 (or any sentence-transformers model) as LangChain embeddings.

    Queries get the model's query prompt and documents its document prompt, so retrieval uses
    the model the way it was trained. Every instance with the same settings shares one
    :class:`conan_rag.Encoder` (and one set of weights) with every other conan-rag adapter in
    the process; torch loads with the first instance, not on import.

    The options are the same in every conan-rag adapter. ``model_name`` is accepted for
    ``model``, and ``HuggingFaceEmbeddings``' ``model_kwargs``/``encode_kwargs``/
    ``query_encode_kwargs`` are translated where they map onto an option (device, revision,
    dtype, prompts, normalization, batch size) and refused with the equivalent otherwise.
    With ``endpoint=`` the vectors come from a ``conan-rag serve`` server (same vectors, no model
    in this process).

    Settings stay true: assigning one (``emb.query_prompt = "query: "``) or
    ``model_copy(update=...)`` rebinds the encoder; pickles and copies carry settings and
    re-attach to the shared encoder of the process that loads them.

    Example:
        >>> from langchain_core.vectorstores import InMemoryVectorStore
        >>> emb = ConanEmbeddings("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
        >>> store = InMemoryVectorStore.from_texts(
        ...     ["Paris is the capital of France.", "Bananas are yellow."], embedding=emb
        ... )
        >>> store.similarity_search("capital of France", k=1)[0].page_content
        'Paris is the capital of France.'
    """

    model: str = DEFAULT_MODEL
    """Model folder, Hugging Face hub id from the local cache, or a bundled model id."""

    revision: str | None = None
    """Hub revision (branch, tag or commit) to read from the local cache."""

    device: str = "auto"
    """``"auto"`` (cuda, then mps, then cpu), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``."""

    dtype: str = "auto"
    """``"auto"``, ``"float32"``, ``"bfloat16"`` or ``"float16"``."""

    query_prompt: str | None = None
    """Text prepended to queries; ``None`` uses the model's own query prompt."""

    document_prompt: str | None = None
    """Text prepended to documents; ``None`` uses the model's own document prompt (or none)."""

    truncate_dim: int | None = None
    """Keep only the first N dimensions (then re-normalize); ``None`` keeps all."""

    max_seq_length: int | None = None
    """Truncate texts at this many tokens; ``None`` uses the model's limit."""

    token_budget: int | None = None
    """Most padded tokens per model batch; ``None`` picks per device."""

    max_batch_size: int = 512
    """Most texts per model batch."""

    normalize: bool = True
    """L2-normalize the vectors, so dot product equals cosine similarity."""

    show_progress: bool = False
    """Show a progress bar while embedding documents synchronously."""

    endpoint: str | None = None
    """A ``conan-rag serve`` server (``http://HOST:PORT``) to embed on instead of this process."""

    api_key: SecretStr | None = None
    """The server's API key; default ``$CONAN_RAG_API_KEY``."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    _encoder: EncoderLike = PrivateAttr()

    def __init__(self, model: str | None = None, /, **data: Any) -> None:
        """Validate the settings, then load (or reuse) the shared encoder.

        Args:
            model: the model, positionally (or pass ``model=``/``model_name=``).
            **data: the other settings, by name.

        Raises:
            pydantic.ValidationError: an unknown or mistyped parameter.
            conan_rag.ConanModelError: the model cannot be found or its folder is incomplete.
            conan_rag.ConanConfigError: an unknown device or dtype, or a ``model_kwargs``/
                ``encode_kwargs`` key with no equivalent (the message lists the options).
        """
        super().__init__(**translate_options(with_positional_model(model, data)))
        self._bind()

    def _bind(self) -> None:
        super()._bind()
        _register_with_chroma()

    @model_validator(mode="before")
    @classmethod
    def _translate(cls, data: Any) -> Any:
        return translate_options(data) if isinstance(data, dict) else data

    @property
    def encoder(self) -> EncoderLike:
        """The shared encoder doing the work (a server's with ``endpoint``)."""
        return self._encoder

    def _embed(self, texts: Sequence[str], kind: Kind) -> list[list[float]]:
        vectors = self._encoder.encode(
            list(texts), kind=kind, normalize=self.normalize, show_progress=self.show_progress
        )
        return vectors.tolist()

    async def _aembed(self, texts: Sequence[str], kind: Kind) -> list[list[float]]:
        return await self._aencode_lists(list(texts), kind)

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
