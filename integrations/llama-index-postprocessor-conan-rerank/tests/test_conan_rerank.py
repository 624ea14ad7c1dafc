"""ConanRerank: order equals Reranker.rank, events, settings, serialization, query engines.

The cross-encoders are small random-weight folders in the real BERT and XLM-R layouts
(``conan_rag.testing.build_cross_encoder``): their scores mean nothing, so every check compares
the postprocessor with the core reranker on the same pairs rather than with expected nodes.
"""

from __future__ import annotations

import asyncio
import copy
import json
import pickle
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conan_rag import DEFAULT_RERANKER, ConanConfigError, ConanModelError, load_reranker
from conan_rag.testing import build_cross_encoder
from llama_index.core import Document, MockEmbedding, VectorStoreIndex
from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.llms import MockLLM
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode
from pydantic import ValidationError

from llama_index.postprocessor.conan_rerank import ConanRerank

TEXTS = [
    "Paris is the capital of France.",
    "The Eiffel Tower was completed in 1889.",
    "Bananas are yellow when ripe.",
    "北京是中国的首都。",
    "长城有几千公里长。",
    "Mitochondria are the powerhouse of the cell.",
]
QUERY = "What is the capital of France?"


@pytest.fixture(scope="module", params=["bert", "xlmr"])
def folder(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp(f"ce_{request.param}")
    return str(build_cross_encoder(root, layout=request.param, n_cjk=3000, seed=7))


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_cross_encoder(tmp_path_factory.mktemp("ce"), n_cjk=3000, seed=8))


def nodes() -> list[NodeWithScore]:
    return [
        NodeWithScore(node=TextNode(id_=f"n{i}", text=t), score=0.1 * i)
        for i, t in enumerate(TEXTS)
    ]


def test_order_and_scores_equal_reranker_rank(folder: str) -> None:
    rerank = ConanRerank(folder, device="cpu", top_n=4)
    inputs = nodes()
    before = copy.deepcopy(inputs)
    out = rerank.postprocess_nodes(inputs, query_str=QUERY)
    ranked = load_reranker(folder, device="cpu").rank(QUERY, TEXTS, top_k=4)
    assert [n.node_id for n in out] == [f"n{i}" for i, _ in ranked]
    assert [n.score for n in out] == [s for _, s in ranked]
    assert [(n.node_id, n.score) for n in inputs] == [(n.node_id, n.score) for n in before]
    assert not {id(n) for n in out} & {id(n) for n in inputs}  # new NodeWithScore objects
    everything = ConanRerank(folder, device="cpu", top_n=None).postprocess_nodes(
        inputs, query_bundle=QueryBundle(QUERY)
    )
    full = load_reranker(folder, device="cpu").rank(QUERY, TEXTS)
    assert [n.node_id for n in everything] == [f"n{i}" for i, _ in full]


def test_a_query_is_required_and_no_nodes_give_none(bert: str) -> None:
    rerank = ConanRerank(bert, device="cpu")
    with pytest.raises(ValueError, match="Missing query bundle"):
        rerank.postprocess_nodes(nodes())
    assert rerank.postprocess_nodes([], query_str=QUERY) == []


def test_nodes_are_scored_on_their_embed_content(bert: str) -> None:
    node = TextNode(
        text="Paris is in France.",
        metadata={"city": "Paris", "secret": "x"},
        excluded_embed_metadata_keys=["secret"],
    )
    rerank = ConanRerank(bert, device="cpu")
    [out] = rerank.postprocess_nodes([NodeWithScore(node=node)], query_str=QUERY)
    content = node.get_content(metadata_mode=MetadataMode.EMBED)
    assert "city: Paris" in content and "secret" not in content
    assert out.score == pytest.approx(float(rerank.reranker.score(QUERY, [content])[0]))


def test_keep_retrieval_score_copies_the_node(bert: str) -> None:
    inputs = nodes()
    out = ConanRerank(bert, device="cpu", keep_retrieval_score=True).postprocess_nodes(
        inputs, query_str=QUERY
    )
    by_id = {n.node_id: n for n in inputs}
    for node in out:
        assert node.metadata["retrieval_score"] == by_id[node.node_id].score
        assert node.node is not by_id[node.node_id].node
    assert all("retrieval_score" not in n.metadata for n in inputs)


def test_settings_names_and_shared_reranker(bert: str) -> None:
    fields = ConanRerank.model_fields
    assert fields["model"].default == DEFAULT_RERANKER and fields["top_n"].default == 2
    for name in ("model", "top_n", "device", "dtype", "revision", "max_length"):
        assert fields[name].description, f"{name} has no description"
    assert ConanRerank.class_name() == "ConanRerank"
    shared = load_reranker(bert, device="cpu")
    assert ConanRerank(Path(bert), device="cpu").reranker is shared
    assert ConanRerank(model_name=bert, device="cpu").reranker is shared
    assert ConanRerank(model=bert, device="cpu").model == bert
    with pytest.raises(ConanConfigError, match="pass it once"):
        ConanRerank(bert, model=bert)
    with pytest.raises(ValidationError, match="topn"):
        ConanRerank(bert, device="cpu", topn=3)  # a typo fails loudly
    with pytest.raises(ValidationError):
        ConanRerank(bert, device="cpu", top_n=0)
    with pytest.raises(ConanModelError):
        ConanRerank("no-such-org/no-such-reranker", device="cpu")


def test_serialization_copies_and_assignment(bert: str, caplog: pytest.LogCaptureFixture) -> None:
    rerank = ConanRerank(bert, device="cpu", dtype="float32", top_n=3, max_length=64)
    data = json.loads(json.dumps(rerank.to_dict()))
    assert data["class_name"] == "ConanRerank" and data["max_length"] == 64
    with caplog.at_level("WARNING"):
        clones = [
            ConanRerank.from_dict(data),
            ConanRerank.from_json(rerank.to_json()),
            pickle.loads(pickle.dumps(rerank)),
            copy.deepcopy(rerank),
        ]
    assert not [r for r in caplog.records if "unpickleable" in r.getMessage().lower()]
    for clone in clones:
        assert clone.to_dict() == rerank.to_dict()
        assert clone.reranker is rerank.reranker
    rerank.max_length = 32
    assert rerank.reranker is load_reranker(bert, device="cpu", dtype="float32", max_length=32)
    with pytest.raises(ConanConfigError):
        rerank.dtype = "int4"
    assert rerank.dtype == "float32" and rerank.reranker.max_length == 32
    wider = rerank.model_copy(update={"max_length": None})
    assert wider.reranker is load_reranker(bert, device="cpu", dtype="float32")


async def test_async_matches_sync(folder: str) -> None:
    rerank = ConanRerank(folder, device="cpu", top_n=3)
    got = await rerank.apostprocess_nodes(nodes(), query_str=QUERY)
    want = rerank.postprocess_nodes(nodes(), query_str=QUERY)
    assert [(n.node_id, n.score) for n in got] == [(n.node_id, n.score) for n in want]
    many = await asyncio.gather(*(rerank.apostprocess_nodes(nodes(), query_str=q) for q in TEXTS))
    assert [[n.node_id for n in r] for r in many] == [
        [n.node_id for n in rerank.postprocess_nodes(nodes(), query_str=q)] for q in TEXTS
    ]
    with pytest.raises(ValueError, match="Missing query bundle"):
        await rerank.apostprocess_nodes(nodes())


class _Counter(BaseEventHandler):
    counts: Counter[str]

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        if isinstance(event, (ReRankStartEvent, ReRankEndEvent)):
            self.counts[type(event).__name__] += 1


@pytest.fixture
def rerank_events() -> Iterator[_Counter]:
    root = get_dispatcher()
    handler = _Counter(counts=Counter())
    root.add_event_handler(handler)
    yield handler
    root.event_handlers = [h for h in root.event_handlers if h is not handler]


async def test_callback_and_instrumentation_events(bert: str, rerank_events: _Counter) -> None:
    debug = LlamaDebugHandler()
    rerank = ConanRerank(bert, device="cpu", callback_manager=CallbackManager([debug]))
    out = rerank.postprocess_nodes(nodes(), query_str=QUERY)
    await rerank.apostprocess_nodes(nodes(), query_str=QUERY)
    pairs = debug.get_event_pairs(CBEventType.RERANKING)
    assert len(pairs) == 2
    assert [n.node_id for n in (pairs[0][1].payload or {})["nodes"]] == [n.node_id for n in out]
    assert rerank_events.counts == {"ReRankStartEvent": 2, "ReRankEndEvent": 2}


def test_inside_a_query_engine(bert: str) -> None:
    index = VectorStoreIndex.from_documents(
        [Document(text=t) for t in TEXTS], embed_model=MockEmbedding(embed_dim=8)
    )
    rerank = ConanRerank(bert, device="cpu", top_n=3)
    engine = index.as_query_engine(
        llm=MockLLM(), similarity_top_k=len(TEXTS), node_postprocessors=[rerank]
    )
    response = engine.query(QUERY)
    ranked = rerank.reranker.rank(QUERY, TEXTS, top_k=3)
    assert [n.text for n in response.source_nodes] == [TEXTS[i] for i, _ in ranked]
    assert [n.score for n in response.source_nodes] == [s for _, s in ranked]
    again = asyncio.run(engine.aquery(QUERY))
    assert [n.text for n in again.source_nodes] == [TEXTS[i] for i, _ in ranked]


def test_importing_the_package_does_not_load_torch() -> None:
    script = (
        "import sys\n"
        "from llama_index.postprocessor.conan_rerank import ConanRerank\n"
        "print([x for x in ('torch', 'transformers', 'chromadb') if x in sys.modules])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[]"
