"""ConanReranker: order equals Reranker.rank, settings, copies, async, compression retriever.

The cross-encoders are small random-weight folders in the real BERT and XLM-R layouts
(``conan_rag.testing.build_cross_encoder``): their scores mean nothing, so every check compares
the compressor with the core reranker on the same pairs rather than with expected documents.
"""

from __future__ import annotations

import asyncio
import copy
import pickle
import random
import subprocess
import sys
from pathlib import Path

import pytest
from conan_rag import (
    DEFAULT_RERANKER,
    ConanConfigError,
    ConanModelError,
    load_encoder,
    load_reranker,
)
from conan_rag.rag import Document as Doc
from conan_rag.rag import Pipeline
from conan_rag.testing import LoopProbe, build_cross_encoder
from langchain_core.documents import Document
from pydantic import ValidationError

from langchain_conan import ConanReranker
from langchain_conan.retrievers import ConanRetriever

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
    return str(build_cross_encoder(root, layout=request.param, n_cjk=3000, seed=3))


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_cross_encoder(tmp_path_factory.mktemp("ce"), n_cjk=3000, seed=5))


def docs() -> list[Document]:
    return [Document(t, metadata={"n": i}, id=f"d{i}") for i, t in enumerate(TEXTS)]


def test_order_and_scores_equal_reranker_rank(folder: str) -> None:
    compressor = ConanReranker(folder, device="cpu", top_n=4)
    inputs = docs()
    before = copy.deepcopy(inputs)
    out = compressor.compress_documents(inputs, QUERY)
    ranked = load_reranker(folder, device="cpu").rank(QUERY, TEXTS, top_k=4)
    assert [d.id for d in out] == [f"d{i}" for i, _ in ranked]
    assert [d.metadata["relevance_score"] for d in out] == [s for _, s in ranked]
    assert all(d.metadata["n"] == int(d.id[1:]) for d in out)  # metadata kept, score added
    assert inputs == before  # the inputs are not modified ...
    assert not {id(d) for d in out} & {id(d) for d in inputs}  # ... and not returned
    everything = ConanReranker(folder, device="cpu", top_n=None).compress_documents(inputs, QUERY)
    full = load_reranker(folder, device="cpu").rank(QUERY, TEXTS)
    assert [d.id for d in everything] == [f"d{i}" for i, _ in full]
    assert compressor.compress_documents([], QUERY) == []


def test_settings_names_and_shared_reranker(bert: str) -> None:
    assert ConanReranker.model_fields["model"].default == DEFAULT_RERANKER
    assert ConanReranker.model_fields["top_n"].default == 3
    shared = load_reranker(bert, device="cpu")
    by_position = ConanReranker(Path(bert), device="cpu")
    by_name = ConanReranker(model_name=bert, device="cpu")
    by_field = ConanReranker(model=bert, device="cpu")
    assert by_position.model == by_name.model == by_field.model == bert
    assert by_position.reranker is by_name.reranker is by_field.reranker is shared
    with pytest.raises(ConanConfigError, match="pass it once"):
        ConanReranker(bert, model_name=bert)
    with pytest.raises(ValidationError, match="topn"):
        ConanReranker(bert, device="cpu", topn=2)  # a typo fails loudly
    with pytest.raises(ValidationError):
        ConanReranker(bert, device="cpu", top_n=0)
    with pytest.raises(ConanModelError):
        ConanReranker("no-such-org/no-such-reranker", device="cpu")


def test_assignment_and_model_copy_rebind(bert: str) -> None:
    compressor = ConanReranker(bert, device="cpu")
    compressor.max_length = 16
    assert compressor.reranker is load_reranker(bert, device="cpu", max_length=16)
    with pytest.raises(ConanConfigError):
        compressor.device = "tpu"
    assert compressor.device == "cpu" and compressor.reranker.max_length == 16  # unchanged
    wider = compressor.model_copy(update={"max_length": None, "top_n": 1})
    assert wider.reranker is load_reranker(bert, device="cpu") and wider.top_n == 1
    assert compressor.top_n == 3 and compressor.max_length == 16


def test_pickle_and_copies_carry_settings(bert: str) -> None:
    compressor = ConanReranker(bert, device="cpu", top_n=2, max_length=32)
    for clone in (
        pickle.loads(pickle.dumps(compressor)),
        copy.deepcopy(compressor),
        copy.copy(compressor),
    ):
        assert clone.model_dump() == compressor.model_dump()
        assert clone.reranker is compressor.reranker
        assert [d.id for d in clone.compress_documents(docs(), QUERY)] == [
            d.id for d in compressor.compress_documents(docs(), QUERY)
        ]


async def test_async_matches_sync(folder: str) -> None:
    compressor = ConanReranker(folder, device="cpu", top_n=3)
    got = await compressor.acompress_documents(docs(), QUERY)
    want = compressor.compress_documents(docs(), QUERY)
    assert [(d.id, d.metadata["relevance_score"]) for d in got] == [
        (d.id, d.metadata["relevance_score"]) for d in want
    ]
    many = await asyncio.gather(*(compressor.acompress_documents(docs(), q) for q in TEXTS))
    assert [[d.id for d in r] for r in many] == [
        [d.id for d in compressor.compress_documents(docs(), q)] for q in TEXTS
    ]


async def test_acompress_does_not_block_the_event_loop(
    bert: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Synchronised on state, not on a clock (conan_rag.testing.LoopProbe): after each model
    # batch, the thread running it waits until the event loop has ticked once more.
    compressor = ConanReranker(bert, device="cpu", top_n=5)
    rng = random.Random(0)
    passages = [
        Document("".join(chr(0x4E00 + rng.randrange(3000)) for _ in range(100))) for _ in range(800)
    ]
    runner = compressor._reranker.runner
    probe = LoopProbe()
    monkeypatch.setattr(runner, "logits", probe.wrap(runner.logits))
    async with probe:
        await compressor.acompress_documents(passages, "一个问题")
    assert probe.failures(min_batches=2) == []


@pytest.fixture(scope="module")
def pipe(tmp_path_factory: pytest.TempPathFactory, minilm_path: Path) -> Pipeline:
    encoder = load_encoder(str(minilm_path), device="cpu", dtype="float32")
    pipeline = Pipeline(encoder, db=tmp_path_factory.mktemp("db"), collection="compress")
    pipeline.ingest([Doc(f"t{i}", text, "facts") for i, text in enumerate(TEXTS)])
    return pipeline


def test_inside_a_contextual_compression_retriever(pipe: Pipeline, bert: str) -> None:
    retrievers = pytest.importorskip("langchain_classic.retrievers")
    base = ConanRetriever(pipeline=pipe, options={"retrieval": "hybrid", "k": 5})
    compressor = ConanReranker(bert, device="cpu", top_n=2)
    chain = retrievers.ContextualCompressionRetriever(
        base_compressor=compressor, base_retriever=base
    )
    candidates = base.invoke(QUERY)
    got = chain.invoke(QUERY)
    ranked = compressor.reranker.rank(QUERY, [d.page_content for d in candidates], top_k=2)
    assert [d.id for d in got] == [candidates[i].id for i, _ in ranked]
    assert [d.metadata["relevance_score"] for d in got] == [s for _, s in ranked]
    assert all("score" in d.metadata and "fused_score" in d.metadata for d in got)
    assert [d.id for d in asyncio.run(chain.ainvoke(QUERY))] == [d.id for d in got]


def test_importing_the_package_loads_neither_torch_nor_the_reranker_module() -> None:
    script = (
        "import sys, langchain_conan\n"
        "print([m for m in ('torch', 'langchain_conan.rerankers') if m in sys.modules])\n"
        "from langchain_conan import ConanReranker\n"  # the class alone loads no model either
        "print([m for m in ('torch', 'transformers', 'chromadb') if m in sys.modules])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.split() == ["[]", "[]"]
