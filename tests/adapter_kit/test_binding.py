"""LangChain, LlamaIndex and Chroma adapters in one process share one encoder and its weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from langchain_conan import ConanEmbeddings
from llama_index.embeddings.conan import ConanEmbedding

import conan_rag
from conan_rag.chroma import ConanEmbeddingFunction
from conan_rag.registry import loaded_backends
from conan_rag.testing import build_conan_layout_model

# Characters the tiny Conan-layout vocab knows (its first 3,000 CJK characters).
TEXTS = ["他们去参加大会。", "八个人出去了。", "中国人口众多。"]


@pytest.fixture(scope="module")
def prompted_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Conan-layout model no other test loads, with distinct query and document prompts."""
    folder = tmp_path_factory.mktemp("shared") / "prompted"
    return build_conan_layout_model(
        folder,
        prompts={"query": "回复：", "document": "公告：关于："},
        weights="safetensors",
        seed=7,
    )


def test_three_adapters_one_encoder_one_weight_load(prompted_model: Path) -> None:
    model = str(prompted_model)
    before = loaded_backends()
    lc = ConanEmbeddings(model=model, device="cpu", dtype="float32")
    assert loaded_backends() == before + 1  # the weights load once, here
    li = ConanEmbedding(model_name=model, device="cpu", dtype="float32")
    ch = ConanEmbeddingFunction(model, device="cpu", dtype="float32")
    core = conan_rag.load_encoder(model, device="cpu", dtype="float32")
    assert loaded_backends() == before + 1
    assert lc.encoder is li.encoder is ch.encoder is core
    assert lc.encoder.backend is core.backend
    assert core.prompts == {"query": "回复：", "document": "公告：关于："}

    docs = core.encode(TEXTS, kind="document")
    queries = core.encode(TEXTS, kind="query")
    assert np.abs(docs - queries).max() > 1e-3  # the prompts make the kinds differ

    np.testing.assert_allclose(lc.embed_documents(TEXTS), docs, atol=1e-6)
    np.testing.assert_allclose(li.get_text_embedding_batch(TEXTS), docs, atol=1e-6)
    np.testing.assert_allclose(np.stack(ch(TEXTS)), docs, atol=1e-6)

    np.testing.assert_allclose([lc.embed_query(t) for t in TEXTS], queries, atol=1e-6)
    np.testing.assert_allclose([li.get_query_embedding(t) for t in TEXTS], queries, atol=1e-6)
    np.testing.assert_allclose(np.stack(ch.embed_query(TEXTS)), queries, atol=1e-6)


async def test_async_paths_agree_with_the_core(prompted_model: Path) -> None:
    model = str(prompted_model)
    core = conan_rag.load_encoder(model, device="cpu", dtype="float32")
    lc = ConanEmbeddings(model=model, device="cpu", dtype="float32")
    li = ConanEmbedding(model_name=model, device="cpu", dtype="float32")
    np.testing.assert_allclose(
        await lc.aembed_documents(TEXTS), core.encode(TEXTS, kind="document"), atol=1e-6
    )
    np.testing.assert_allclose(
        await li.aget_query_embedding(TEXTS[0]), core.encode(TEXTS[:1], kind="query")[0], atol=1e-6
    )


def test_different_prompts_share_weights_but_not_the_encoder(prompted_model: Path) -> None:
    model = str(prompted_model)
    before = loaded_backends()
    plain = ConanEmbeddings(model=model, device="cpu", dtype="float32")
    custom = ConanEmbedding(
        model_name=model, device="cpu", dtype="float32", query_instruction="关于："
    )
    assert loaded_backends() == before
    assert custom.encoder is not plain.encoder
    assert custom.encoder.backend is plain.encoder.backend
    bare = conan_rag.load_encoder(
        model, device="cpu", dtype="float32", query_prompt="", document_prompt=""
    )
    np.testing.assert_allclose(
        custom.get_query_embedding(TEXTS[0]), bare.encode(["关于：" + TEXTS[0]])[0], atol=1e-6
    )
    np.testing.assert_allclose(
        plain.embed_query(TEXTS[0]), bare.encode(["回复：" + TEXTS[0]])[0], atol=1e-6
    )
    assert loaded_backends() == before
