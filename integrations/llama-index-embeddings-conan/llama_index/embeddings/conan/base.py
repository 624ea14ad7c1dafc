"""ConanEmbedding: a LlamaIndex ``BaseEmbedding`` on conan-rag's shared encoder.

Example:
    >>> from llama_index.embeddings.conan import ConanEmbedding
    >>> emb = ConanEmbedding("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    >>> len(emb.get_text_embedding_batch(["a cat", "a dog"]))
    2
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any, ClassVar

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr, model_validator

try:
    from conan_rag import DEFAULT_MODEL
    from conan_rag.adapter_kit import (
        ENCODER_OPTIONS,
        SharedEncoderMixin,
        translate_options,
        with_positional_model,
    )
except ImportError as exc:  # pragma: no cover - exercised only without conan-rag installed
    raise ImportError(
        "llama-index-embeddings-conan needs the conan-rag package; install it with "
        "`pip install conan-rag`."
    ) from exc

if TYPE_CHECKING:
    from conan_rag import EncoderLike, Kind


def _register_with_chroma() -> None:
    """Register conan-rag's Chroma embedding function where chromadb is installed.

    A collection ``conan-rag ingest`` built records its embedding function as ``"conan-rag"``,
    and Chroma finds a function by name only among the classes registered in this process (it
    has no plugin entry points). Importing :mod:`conan_rag.chroma` registers it, so LlamaIndex's
    ``ChromaVectorStore`` and Chroma's own calls can rebuild it. Called when the encoder loads
    (torch is loading then anyway), never on ``import``.
    """
    try:
        if importlib.util.find_spec("chromadb") is None:
            return
        import conan_rag.chroma  # noqa: F401  (registers "conan-rag" with Chroma)
    except ImportError:  # a chromadb too old for embedding-function registration
        return


# Our option names -> this adapter's fields (BaseEmbedding owns ``model_name``).
RENAME = {"model": "model_name"}


class ConanEmbedding(SharedEncoderMixin, BaseEmbedding):
    """Conan-embedding-v1 (or any sentence-transformers model) as a LlamaIndex embedding.

    Only the private ``_get_*``/``_aget_*`` hooks are implemented, so the public methods keep
    emitting callback and instrumentation events and using ``embeddings_cache``. Instances with
    the same settings share one :class:`conan_rag.Encoder` (and one set of weights) with every
    other conan-rag adapter in the process; torch loads with the first instance, not on import.

    The options are the same in every conan-rag adapter; LlamaIndex's customary names are
    accepted too: ``model`` or ``model_name``, ``query_prompt`` or ``query_instruction``,
    ``document_prompt`` or ``text_instruction``, ``max_seq_length`` or ``max_length``.
    Assigning a setting or ``model_copy(update=...)`` rebinds the encoder; pickles and copies
    carry settings and re-attach to the shared encoder of the process that loads them.

    Example:
        >>> from llama_index.core import Document, VectorStoreIndex
        >>> emb = ConanEmbedding("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
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
    revision: str | None = Field(
        default=None, description="Hub revision (branch, tag or commit) in the local cache."
    )
    device: str = Field(
        default="auto", description="'auto' (cuda, then mps, then cpu), 'cpu', 'cuda[:N]', 'mps'."
    )
    dtype: str = Field(default="auto", description="'auto', 'float32', 'bfloat16' or 'float16'.")
    query_prompt: str | None = Field(
        default=None,
        description="Text prepended to queries (query_instruction); None: the model's own.",
    )
    document_prompt: str | None = Field(
        default=None,
        description="Text prepended to documents (text_instruction); None: the model's own.",
    )
    truncate_dim: int | None = Field(
        default=None, description="Keep the first N dimensions (re-normalized); None keeps all."
    )
    max_seq_length: int | None = Field(
        default=None, description="Truncate texts at N tokens (max_length); None: model's limit."
    )
    token_budget: int | None = Field(
        default=None, description="Most padded tokens per model batch; None picks per device."
    )
    max_batch_size: int = Field(default=512, description="Most texts per model batch.")
    normalize: bool = Field(
        default=True, description="L2-normalize the vectors (dot product = cosine similarity)."
    )
    endpoint: str | None = Field(
        default=None, description="A conan-rag server (http://HOST:PORT) to embed on instead."
    )
    api_key: str | None = Field(
        default=None,
        description="The server's API key; default $CONAN_RAG_API_KEY.",
        exclude=True,  # never written by to_dict()/to_json()
        repr=False,
    )

    model_config = ConfigDict(validate_assignment=True, protected_namespaces=())

    ENCODER_FIELDS: ClassVar[dict[str, str]] = {RENAME.get(o, o): o for o in ENCODER_OPTIONS}

    _encoder: EncoderLike = PrivateAttr()

    def __init__(self, model: str | None = None, /, **data: Any) -> None:
        """Validate the settings, then load (or reuse) the shared encoder.

        Args:
            model: the model, positionally (or pass ``model=``/``model_name=``).
            **data: the other settings, by name.

        Raises:
            pydantic.ValidationError: a mistyped parameter.
            conan_rag.ConanModelError: the model cannot be found or its folder is incomplete.
            conan_rag.ConanConfigError: an unknown device or dtype, or two names for one
                setting that disagree (the message lists the options).
        """
        super().__init__(**translate_options(with_positional_model(model, data), RENAME))
        self._bind()

    def _bind(self) -> None:
        super()._bind()
        _register_with_chroma()

    @model_validator(mode="before")
    @classmethod
    def _translate(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        return translate_options(data, RENAME)

    @classmethod
    def class_name(cls) -> str:
        """Name stored by ``to_dict()`` and used by LlamaIndex serialization."""
        return "ConanEmbedding"

    @property
    def query_instruction(self) -> str | None:
        """LlamaIndex's name for :attr:`query_prompt` (assigning it rebinds the encoder)."""
        return self.query_prompt

    @query_instruction.setter
    def query_instruction(self, value: str | None) -> None:
        self.query_prompt = value

    @property
    def text_instruction(self) -> str | None:
        """LlamaIndex's name for :attr:`document_prompt` (assigning it rebinds the encoder)."""
        return self.document_prompt

    @text_instruction.setter
    def text_instruction(self, value: str | None) -> None:
        self.document_prompt = value

    @property
    def encoder(self) -> EncoderLike:
        """The shared encoder doing the work (a server's with ``endpoint``)."""
        return self._encoder

    def _embed(self, texts: list[str], kind: Kind) -> list[Embedding]:
        return self._encoder.encode(texts, kind=kind, normalize=self.normalize).tolist()

    async def _aembed(self, texts: list[str], kind: Kind) -> list[Embedding]:
        return await self._aencode_lists(list(texts), kind)

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
