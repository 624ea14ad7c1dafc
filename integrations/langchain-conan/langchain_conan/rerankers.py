"""ConanReranker: a LangChain document compressor on conan-rag's shared cross-encoder.

A drop-in for LangChain's ``CrossEncoderReranker``/``CohereRerank``: it re-scores retrieved
documents with any sentence-transformers ``CrossEncoder`` folder (default
``BAAI/bge-reranker-v2-m3``) run by :func:`conan_rag.load_reranker`, and keeps the
``top_n`` best, each with its score in ``metadata["relevance_score"]``.

Example:
    >>> import tempfile
    >>> from langchain_core.documents import Document
    >>> from conan_rag.testing import build_cross_encoder
    >>> folder = build_cross_encoder(tempfile.mkdtemp(), n_cjk=100)  # random weights
    >>> reranker = ConanReranker(folder, device="cpu", top_n=2)
    >>> docs = [Document("a cat"), Document("a dog"), Document("a cow")]
    >>> best = reranker.compress_documents(docs, "cat")
    >>> len(best), all("relevance_score" in d.metadata for d in best)
    (2, True)
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from pydantic import ConfigDict, Field, PrivateAttr, field_validator, model_validator

try:
    from conan_rag import DEFAULT_RERANKER
    from conan_rag.adapter_kit import SharedRerankerMixin, model_alias
except ImportError as exc:  # pragma: no cover - exercised only without conan-rag installed
    raise ImportError(
        "langchain-conan needs the conan-rag package; install it with `pip install conan-rag`."
    ) from exc

if TYPE_CHECKING:
    from conan_rag import Reranker


class ConanReranker(SharedRerankerMixin, BaseDocumentCompressor):
    """Rerank documents with a cross-encoder; keep the ``top_n`` best (LangChain compressor).

    Use it as ``ContextualCompressionRetriever(base_compressor=ConanReranker(...),
    base_retriever=...)``. The returned documents are new objects, best first, carrying the
    cross-encoder's score in ``metadata["relevance_score"]`` (sigmoid in [0, 1] for the usual
    single-label rerankers); the inputs are not changed. Their order equals
    :meth:`conan_rag.Reranker.rank` on the ``page_content``.

    Instances with the same settings share one :class:`~conan_rag.Reranker` (and one
    set of weights, also with ``RetrievalOptions(reranker=...)`` and the LlamaIndex
    ``ConanRerank``); torch loads with the first instance, not on import. Assigning a setting
    or ``model_copy(update=...)`` rebinds the reranker; pickles and copies carry settings.

    Example:
        >>> import tempfile
        >>> from langchain_core.documents import Document
        >>> from conan_rag.testing import build_cross_encoder
        >>> folder = str(build_cross_encoder(tempfile.mkdtemp(), n_cjk=100))
        >>> reranker = ConanReranker(model_name=folder, device="cpu", top_n=1)
        >>> docs = [Document("Paris is in France."), Document("Bananas are yellow.")]
        >>> top = reranker.compress_documents(docs, "Where is Paris?")
        >>> ranked = reranker.reranker.rank("Where is Paris?", [d.page_content for d in docs])
        >>> top[0].page_content == docs[ranked[0][0]].page_content
        True
    """

    model: str = DEFAULT_RERANKER
    """A ``CrossEncoder`` folder or a Hugging Face hub id in the local cache (``model_name``)."""

    revision: str | None = None
    """Hub revision (branch, tag or commit) to read from the local cache."""

    device: str = "auto"
    """``"auto"`` (cuda, then mps, then cpu), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``."""

    dtype: str = "auto"
    """``"auto"``, ``"float32"``, ``"bfloat16"`` or ``"float16"``."""

    max_length: int | None = Field(default=None, ge=1)
    """Truncate each (query, document) pair at this many tokens; ``None``: the model's limit."""

    top_n: int | None = Field(default=3, ge=1)
    """Documents to return; ``None`` returns them all, reordered."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    _reranker: Reranker = PrivateAttr()

    def __init__(self, model: str | os.PathLike[str] | None = None, /, **data: Any) -> None:
        """Validate the settings, then load (or reuse) the shared reranker.

        Args:
            model: the model, positionally (or pass ``model=``/``model_name=``).
            **data: the other settings, by name.

        Raises:
            pydantic.ValidationError: an unknown or mistyped parameter.
            conan_rag.ConanModelError: the folder is missing, incomplete or not a CrossEncoder.
            conan_rag.ConanConfigError: an unknown device or dtype, a ``max_length`` over the
                model's limit, or the model given twice.
        """
        super().__init__(**model_alias(data, model))
        self._bind()

    @model_validator(mode="before")
    @classmethod
    def _translate(cls, data: Any) -> Any:
        return model_alias(data) if isinstance(data, Mapping) else data

    @field_validator("model", mode="before")
    @classmethod
    def _path_to_str(cls, value: Any) -> Any:
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @staticmethod
    def _top(documents: Sequence[Document], ranked: list[tuple[int, float]]) -> list[Document]:
        return [
            documents[index].model_copy(
                update={"metadata": {**documents[index].metadata, "relevance_score": score}}
            )
            for index, score in ranked
        ]

    def compress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """The ``top_n`` documents by cross-encoder score, best first (ties keep input order).

        Args:
            documents: the retrieved documents (not modified).
            query: the query they are scored against.
            callbacks: accepted for LangChain's interface; scoring emits no callback events.

        Returns:
            New documents with ``metadata["relevance_score"]`` set.

        Raises:
            conan_rag.ConanConfigError: the model has several labels (no single score).
        """
        docs = list(documents)
        if not docs:
            return []
        ranked = self._reranker.rank(query, [d.page_content for d in docs], top_k=self.top_n)
        return self._top(docs, ranked)

    async def acompress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """Like :meth:`compress_documents`, awaited without blocking the event loop.

        Pairs are tokenized in a worker thread and scored by the model's batching queue,
        where concurrent callers share batches.
        """
        docs = list(documents)
        if not docs:
            return []
        passages = [d.page_content for d in docs]
        ranked = await self._reranker.arank(query, passages, top_k=self.top_n)
        return self._top(docs, ranked)
