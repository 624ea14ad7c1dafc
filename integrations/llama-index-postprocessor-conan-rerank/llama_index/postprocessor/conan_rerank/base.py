"""ConanRerank: a LlamaIndex node postprocessor on conan-rag's shared cross-encoder.

Example:
    >>> import tempfile
    >>> from llama_index.core.schema import NodeWithScore, TextNode
    >>> from conan_rag.testing import build_cross_encoder
    >>> folder = build_cross_encoder(tempfile.mkdtemp(), n_cjk=100)  # random weights
    >>> rerank = ConanRerank(folder, device="cpu", top_n=1)
    >>> nodes = [NodeWithScore(node=TextNode(text=t)) for t in ("a cat", "a dog")]
    >>> len(rerank.postprocess_nodes(nodes, query_str="cat"))
    1
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from llama_index.core.bridge.pydantic import (
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)
from llama_index.core.callbacks import CBEventType, EventPayload
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

try:
    from conan_rag import DEFAULT_RERANKER
    from conan_rag.adapter_kit import SharedRerankerMixin, model_alias
except ImportError as exc:  # pragma: no cover - exercised only without conan-rag installed
    raise ImportError(
        "llama-index-postprocessor-conan-rerank needs the conan-rag package; install it with "
        "`pip install conan-rag`."
    ) from exc

if TYPE_CHECKING:
    from conan_rag import Reranker

dispatcher = get_dispatcher(__name__)


class ConanRerank(SharedRerankerMixin, BaseNodePostprocessor):
    """Rerank nodes with a cross-encoder, keep the ``top_n`` best (as SentenceTransformerRerank).

    Each node is scored on ``node.get_content(metadata_mode=MetadataMode.EMBED)`` against the
    query; the returned :class:`~llama_index.core.schema.NodeWithScore` objects are new, best
    first, with ``score`` set to the cross-encoder's score (sigmoid in [0, 1] for the usual
    single-label rerankers), and their order equals :meth:`conan_rag.Reranker.rank`.
    The input nodes are not changed (with ``keep_retrieval_score``, the returned node is a copy
    whose ``metadata["retrieval_score"]`` holds the incoming score). Emits the ``RERANKING``
    callback event and the ``ReRankStartEvent``/``ReRankEndEvent`` instrumentation events.

    Instances with the same settings share one :class:`~conan_rag.Reranker` (and one
    set of weights) with every conan-rag adapter in the process; torch loads with the first
    instance, not on import. Assigning a setting or ``model_copy(update=...)`` rebinds the
    reranker; pickles, copies and ``to_dict()``/``from_dict()`` carry settings.

    Example:
        >>> import tempfile
        >>> from llama_index.core.schema import NodeWithScore, TextNode
        >>> from conan_rag.testing import build_cross_encoder
        >>> folder = str(build_cross_encoder(tempfile.mkdtemp(), n_cjk=100))
        >>> rerank = ConanRerank(model=folder, device="cpu", top_n=2)
        >>> texts = ["Paris is in France.", "Bananas are yellow.", "The Seine flows in Paris."]
        >>> nodes = [NodeWithScore(node=TextNode(text=t), score=0.5) for t in texts]
        >>> top = rerank.postprocess_nodes(nodes, query_str="Where is Paris?")
        >>> ranked = rerank.reranker.rank("Where is Paris?", texts, top_k=2)
        >>> [n.text for n in top] == [texts[i] for i, _ in ranked]
        True
    """

    model: str = Field(
        default=DEFAULT_RERANKER,
        description="CrossEncoder folder or Hugging Face hub id in the local cache (model_name).",
    )
    top_n: int | None = Field(
        default=2, ge=1, description="Nodes to return; None returns them all, reordered."
    )
    revision: str | None = Field(
        default=None, description="Hub revision (branch, tag or commit) in the local cache."
    )
    device: str = Field(
        default="auto", description="'auto' (cuda, then mps, then cpu), 'cpu', 'cuda[:N]', 'mps'."
    )
    dtype: str = Field(default="auto", description="'auto', 'float32', 'bfloat16' or 'float16'.")
    max_length: int | None = Field(
        default=None, ge=1, description="Truncate each (query, node) pair at N tokens."
    )
    keep_retrieval_score: bool = Field(
        default=False,
        description="Copy each node's incoming score into metadata['retrieval_score'].",
    )

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

    @classmethod
    def class_name(cls) -> str:
        """Name stored by ``to_dict()`` and used by LlamaIndex serialization."""
        return "ConanRerank"

    # -- reranking ------------------------------------------------------------------------------
    @staticmethod
    def _query(query_bundle: QueryBundle | None) -> QueryBundle:
        if query_bundle is None:
            raise ValueError(
                "Missing query bundle in extra info: ConanRerank scores nodes against the "
                "query; pass query_str= or query_bundle= to postprocess_nodes."
            )
        return query_bundle

    def _start(self, nodes: list[NodeWithScore], query: QueryBundle) -> None:
        dispatcher.event(
            ReRankStartEvent(
                query=query, nodes=nodes, top_n=self.top_n or len(nodes), model_name=self.model
            )
        )

    def _payload(self, nodes: list[NodeWithScore], query: QueryBundle) -> dict[str, Any]:
        return {
            EventPayload.NODES: nodes,
            EventPayload.MODEL_NAME: self.model,
            EventPayload.QUERY_STR: query.query_str,
            EventPayload.TOP_K: self.top_n,
        }

    def _ranked(
        self, nodes: Sequence[NodeWithScore], ranked: list[tuple[int, float]]
    ) -> list[NodeWithScore]:
        out = []
        for index, score in ranked:
            node = nodes[index].node
            if self.keep_retrieval_score:
                metadata = {**node.metadata, "retrieval_score": nodes[index].score}
                node = node.model_copy(update={"metadata": metadata})
            out.append(NodeWithScore(node=node, score=score))
        dispatcher.event(ReRankEndEvent(nodes=out))
        return out

    @staticmethod
    def _passages(nodes: Sequence[NodeWithScore]) -> list[str]:
        return [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]

    def _postprocess_nodes(
        self,
        nodes: list[NodeWithScore],
        query_bundle: QueryBundle | None = None,
    ) -> list[NodeWithScore]:
        query = self._query(query_bundle)
        if not nodes:
            return []
        self._start(nodes, query)
        with self.callback_manager.event(
            CBEventType.RERANKING, payload=self._payload(nodes, query)
        ) as event:
            ranked = self._reranker.rank(query.query_str, self._passages(nodes), top_k=self.top_n)
            out = self._ranked(nodes, ranked)
            event.on_end(payload={EventPayload.NODES: out})
        return out

    async def _apostprocess_nodes(
        self,
        nodes: list[NodeWithScore],
        query_bundle: QueryBundle | None = None,
    ) -> list[NodeWithScore]:
        """Like the sync hook, awaited without blocking the event loop (the model's queue)."""
        query = self._query(query_bundle)
        if not nodes:
            return []
        self._start(nodes, query)
        with self.callback_manager.event(
            CBEventType.RERANKING, payload=self._payload(nodes, query)
        ) as event:
            passages = self._passages(nodes)
            ranked = await self._reranker.arank(query.query_str, passages, top_k=self.top_n)
            out = self._ranked(nodes, ranked)
            event.on_end(payload={EventPayload.NODES: out})
        return out
