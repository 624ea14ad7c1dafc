"""The adapters through code nobody here wrote: what other libraries do with conan-rag's vectors.

langchain-chroma's relevance scores (l2 by default, cosine when asked), LangChain's
``CacheBackedEmbeddings`` and LCEL chains, LlamaIndex's ingestion pipeline, ``ChromaVectorStore``
scores and ``SimilarityPostprocessor``, and Chroma rebuilding ``ConanEmbeddingFunction`` from a
collection's config. float32 is pinned (``dtype="float32"``, ``device="cpu"``) so the numpy
references computed from the adapters' own vectors agree to 1e-5 on every CPU. docs/ecosystems.md
shows the same code and names the test that runs each block.
"""

from __future__ import annotations

import math
import re
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import chromadb
import numpy as np
import pytest
from langchain_chroma import Chroma
from langchain_classic.embeddings import CacheBackedEmbeddings
from langchain_conan import ConanEmbeddings
from langchain_core.documents import Document as LCDocument
from langchain_core.runnables import RunnableLambda
from langchain_core.stores import InMemoryByteStore
from langchain_core.vectorstores import InMemoryVectorStore
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.postprocessor import SimilarityPostprocessor
from llama_index.embeddings.conan import ConanEmbedding
from llama_index.vector_stores.chroma import ChromaVectorStore

from conan_rag.chroma import ConanEmbeddingFunction

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
PARIS = "Paris is the capital of France."
BANANAS = "Bananas are yellow and rich in potassium."
CELL = "The mitochondria is the powerhouse of the cell."
PYTHON = "Python was created by Guido van Rossum."
DOCS = [PARIS, BANANAS, CELL, PYTHON]
QUERY = "What is the capital city of France?"
# float32 cosines with QUERY: Paris 0.849, Python 0.115, cell 0.112, bananas -0.013.
TOL = 1e-5
SCORE_WARNING = "Relevance scores must be between 0 and 1"


def _name(prefix: str) -> str:
    """A collection name no other test in this process uses (EphemeralClients share one DB)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _cosines(query: list[float], docs: list[list[float]]) -> dict[str, float]:
    """True cosine similarity of the query with each of DOCS, from the vectors given."""
    q = np.asarray(query, dtype=np.float64)
    d = np.asarray(docs, dtype=np.float64)
    cos = (d @ q) / (np.linalg.norm(d, axis=1) * np.linalg.norm(q))
    return dict(zip(DOCS, cos.tolist()))


def _ranked(cosines: dict[str, float]) -> list[str]:
    return sorted(cosines, key=cosines.__getitem__, reverse=True)


@pytest.fixture(scope="module")
def embeddings() -> ConanEmbeddings:
    return ConanEmbeddings(MINILM, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def lc_cosines(embeddings: ConanEmbeddings) -> dict[str, float]:
    return _cosines(embeddings.embed_query(QUERY), embeddings.embed_documents(DOCS))


@pytest.fixture(scope="module")
def client() -> chromadb.ClientAPI:
    return chromadb.EphemeralClient()


# --- langchain-chroma ----------------------------------------------------------------------


def test_langchain_chroma_default_l2_relevance_is_not_the_cosine(
    embeddings: ConanEmbeddings, client: chromadb.ClientAPI, lc_cosines: dict[str, float]
) -> None:
    name = _name("lc-l2")
    store = Chroma(collection_name=name, embedding_function=embeddings, client=client)
    store.add_texts(DOCS)
    assert client.get_collection(name).configuration["hnsw"]["space"] == "l2"

    # Chroma's l2 is the squared distance: 2 - 2 cos for unit vectors.
    distances = store.similarity_search_with_score(QUERY, k=4)
    for doc, distance in distances:
        assert distance == pytest.approx(2 - 2 * lc_cosines[doc.page_content], abs=TOL)

    # LangChain maps it with 1 - d / sqrt(2): 1 - sqrt(2) (1 - cos), negative below cos 0.29.
    with pytest.warns(UserWarning, match=SCORE_WARNING):
        hits = store.similarity_search_with_relevance_scores(QUERY, k=4)
    with pytest.warns(UserWarning, match=SCORE_WARNING):  # warned before filtering
        kept = store.similarity_search_with_relevance_scores(QUERY, k=4, score_threshold=0.5)
    assert [doc.page_content for doc, _ in hits] == _ranked(lc_cosines)
    scores = {doc.page_content: score for doc, score in hits}
    for text, score in scores.items():
        assert score == pytest.approx(1 - math.sqrt(2) * (1 - lc_cosines[text]), abs=TOL)
    assert lc_cosines[PYTHON] > 0.1 and scores[PYTHON] < -0.2  # related-ish, scored negative
    assert max(abs(scores[t] - lc_cosines[t]) for t in DOCS) > 0.3  # not the cosine
    # score_threshold=t keeps cos >= 1 - (1 - t) / sqrt(2): 0.646 for t = 0.5.
    floor = 1 - 0.5 / math.sqrt(2)
    assert [d.page_content for d, _ in kept] == [
        t for t in _ranked(lc_cosines) if lc_cosines[t] >= floor
    ]


@pytest.mark.parametrize(
    "space",
    [
        {"collection_configuration": {"hnsw": {"space": "cosine"}}},
        {"collection_metadata": {"hnsw:space": "cosine"}},
    ],
    ids=["collection_configuration", "collection_metadata"],
)
def test_langchain_chroma_cosine_space_relevance_is_the_cosine(
    space: dict, embeddings: ConanEmbeddings, client: chromadb.ClientAPI, lc_cosines: dict
) -> None:
    name = _name("lc-cos")
    store = Chroma(collection_name=name, embedding_function=embeddings, client=client, **space)
    store.add_texts(DOCS)
    assert client.get_collection(name).configuration["hnsw"]["space"] == "cosine"

    with warnings.catch_warnings():  # a negative cosine (bananas) still makes LangChain warn
        warnings.simplefilter("ignore", UserWarning)
        hits = store.similarity_search_with_relevance_scores(QUERY, k=4)
        kept = store.similarity_search_with_relevance_scores(QUERY, k=4, score_threshold=0.5)
    assert [doc.page_content for doc, _ in hits] == _ranked(lc_cosines)
    for doc, score in hits:
        assert score == pytest.approx(lc_cosines[doc.page_content], abs=TOL)
    assert [doc.page_content for doc, _ in kept] == [PARIS]  # the threshold is a cosine


# --- LangChain: CacheBackedEmbeddings and LCEL -----------------------------------------------


async def test_cache_backed_embeddings_hit_the_cache(embeddings: ConanEmbeddings) -> None:
    store = InMemoryByteStore()
    cached = CacheBackedEmbeddings.from_bytes_store(
        embeddings, store, namespace="all-MiniLM-L6-v2-float32", key_encoder="sha256"
    )
    queue = embeddings.encoder.queue
    before = queue.batches_run
    first = cached.embed_documents(DOCS)
    assert queue.batches_run > before  # a miss runs the model
    keys = list(store.yield_keys())
    assert len(keys) == len(DOCS)
    assert all(k.startswith("all-MiniLM-L6-v2-float32") for k in keys)

    ran = queue.batches_run
    assert cached.embed_documents(DOCS) == first
    assert await cached.aembed_documents(DOCS[::-1]) == first[::-1]
    assert queue.batches_run == ran  # hits do not
    np.testing.assert_allclose(first, embeddings.embed_documents(DOCS), atol=1e-6)


def test_cache_backed_query_cache_true_shares_keys_with_documents() -> None:
    # With a query prompt, query and document vectors of one text differ; LangChain keys both
    # by the text alone when query_embedding_cache=True, so a cached document answers a query.
    prompted = ConanEmbeddings(MINILM, device="cpu", dtype="float32", query_prompt="query: ")
    query_vector = prompted.embed_query(PARIS)
    document_vector = prompted.embed_documents([PARIS])[0]
    assert not np.allclose(query_vector, document_vector, atol=1e-3)

    shared = CacheBackedEmbeddings.from_bytes_store(
        prompted,
        InMemoryByteStore(),
        namespace="q",
        query_embedding_cache=True,
        key_encoder="sha256",
    )
    shared.embed_documents([PARIS])
    assert shared.embed_query(PARIS) == pytest.approx(document_vector, abs=1e-6)  # not the query

    separate = CacheBackedEmbeddings.from_bytes_store(
        prompted,
        InMemoryByteStore(),
        namespace="all-MiniLM-L6-v2-float32",
        query_embedding_cache=InMemoryByteStore(),
        key_encoder="sha256",
    )
    separate.embed_documents([PARIS])
    np.testing.assert_allclose(separate.embed_query(PARIS), query_vector, atol=1e-6)
    ran = prompted.encoder.queue.batches_run
    np.testing.assert_allclose(separate.embed_query(PARIS), query_vector, atol=1e-6)
    assert prompted.encoder.queue.batches_run == ran  # the query came from its cache


def _join(docs: list[LCDocument]) -> str:
    return "\n\n".join(doc.page_content for doc in docs)


async def test_lcel_retriever_chain_invoke_and_ainvoke(embeddings: ConanEmbeddings) -> None:
    store = InMemoryVectorStore.from_texts(DOCS, embedding=embeddings)
    chain = store.as_retriever(search_kwargs={"k": 1}) | RunnableLambda(_join)
    assert chain.invoke(QUERY) == PARIS
    assert await chain.ainvoke(QUERY) == PARIS
    assert await chain.ainvoke("Which fruit is yellow?") == BANANAS
    assert chain.batch([QUERY, "Who made Python?"]) == [PARIS, PYTHON]


# --- LlamaIndex: IngestionPipeline, ChromaVectorStore, SimilarityPostprocessor ----------------


@pytest.mark.parametrize(
    ("configuration", "to_cosine"),
    [
        ({"hnsw": {"space": "cosine"}}, lambda score: 1 + math.log(score)),
        (None, lambda score: 1 + math.log(score) / 2),  # Chroma's default space, l2
    ],
    ids=["cosine", "default-l2"],
)
async def test_llamaindex_chroma_scores_are_exp_minus_distance(
    configuration: dict | None,
    to_cosine: Callable[[float], float],
    client: chromadb.ClientAPI,
) -> None:
    embed_model = ConanEmbedding(MINILM, device="cpu", dtype="float32")
    collection = client.create_collection(_name("li"), configuration=configuration)
    vector_store = ChromaVectorStore(chroma_collection=collection)
    pipeline = IngestionPipeline(
        transformations=[SentenceSplitter(chunk_size=128, chunk_overlap=0), embed_model],
        vector_store=vector_store,
    )
    await pipeline.arun(documents=[Document(text=text) for text in DOCS])  # async embedding
    doc_vectors = embed_model.get_text_embedding_batch(DOCS)
    stored = collection.get(include=["documents", "embeddings"])
    for text, vector in zip(stored["documents"], stored["embeddings"]):
        np.testing.assert_allclose(vector, doc_vectors[DOCS.index(text)], atol=1e-6)
    cosines = _cosines(embed_model.get_query_embedding(QUERY), doc_vectors)

    index = VectorStoreIndex.from_vector_store(vector_store, embed_model=embed_model)
    retriever = index.as_retriever(similarity_top_k=4)
    hits = retriever.retrieve(QUERY)
    ahits = await retriever.aretrieve(QUERY)
    assert [h.node.node_id for h in ahits] == [h.node.node_id for h in hits]
    assert [h.score for h in ahits] == pytest.approx([h.score for h in hits], abs=1e-6)
    assert [hit.node.get_content() for hit in hits] == _ranked(cosines)
    distance = (lambda c: 1 - c) if configuration else (lambda c: 2 - 2 * c)
    for hit in hits:
        cos = cosines[hit.node.get_content()]
        assert hit.score == pytest.approx(math.exp(-distance(cos)), abs=TOL)
        assert to_cosine(hit.score) == pytest.approx(cos, abs=TOL)
        assert 0 < hit.score < 1

    # A cutoff on these scores is a cosine threshold through the same formula.
    cos_min = 0.3
    cutoff = math.exp(-distance(cos_min))
    kept = SimilarityPostprocessor(similarity_cutoff=cutoff).postprocess_nodes(hits)
    assert [n.node.get_content() for n in kept] == [
        t for t in _ranked(cosines) if cosines[t] >= 0.3
    ]
    assert [n.node.get_content() for n in kept] == [PARIS]


# --- Chroma's own embedding-function registry ------------------------------------------------


def test_chroma_rebuilds_the_function_from_the_collection(
    client: chromadb.ClientAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    ef = ConanEmbeddingFunction(MINILM, device="cpu", dtype="float32")
    name = _name("ef")
    collection = client.create_collection(name, embedding_function=ef)
    assert collection.configuration["hnsw"]["space"] == "cosine"  # ef.default_space()
    collection.add(ids=[str(i) for i in range(len(DOCS))], documents=DOCS)
    want = collection.query(query_texts=[QUERY, "yellow fruit"], n_results=2)
    assert want["documents"][0][0] == PARIS and want["documents"][1][0] == BANANAS
    cosines = _cosines(ef.embed_query([QUERY])[0].tolist(), [v.tolist() for v in ef(DOCS)])
    for text, distance in zip(want["documents"][0], want["distances"][0]):
        assert 1 - distance == pytest.approx(cosines[text], abs=TOL)  # cosine space

    # The stored config names no device or dtype: these pin them for the rebuilt function.
    monkeypatch.setenv("CONAN_RAG_DEVICE", "cpu")
    monkeypatch.setenv("CONAN_RAG_DTYPE", "float32")
    reopened = client.get_collection(name)
    rebuilt = reopened.configuration["embedding_function"]
    assert isinstance(rebuilt, ConanEmbeddingFunction) and rebuilt.encoder is ef.encoder
    got = reopened.query(query_texts=[QUERY, "yellow fruit"], n_results=2)
    assert got["ids"] == want["ids"]
    np.testing.assert_allclose(got["distances"], want["distances"], atol=1e-6)


# --- docs/ecosystems.md ----------------------------------------------------------------------

DOC = Path(__file__).resolve().parent.parent / "docs" / "ecosystems.md"


def test_docs_blocks_run() -> None:
    """Each python block of docs/ecosystems.md runs as written (on the default dtype)."""
    text = DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    assert len(blocks) == 5
    assert all("Checked by `test_" in part for part in text.split("```python")[1:])
    runs = []
    for block in blocks:
        namespace: dict[str, Any] = {"__name__": "__docs__"}
        with warnings.catch_warnings():  # negative cosines make LangChain warn
            warnings.simplefilter("ignore", UserWarning)
            exec(compile(block, str(DOC), "exec"), namespace)
        runs.append(namespace)
    lc_chroma, cache, lcel, llama, chroma = runs

    ((doc, score),) = lc_chroma["hits"]
    assert doc.page_content == PARIS and score == pytest.approx(0.849, abs=0.02)

    assert cache["vectors"] == cache["cached"].embed_documents([PARIS])
    assert len(list(cache["cached"].document_embedding_store.yield_keys())) == 1
    assert len(cache["query"]) == 384

    assert lcel["context"] == PARIS

    assert llama["hits"][0].node.get_content() == PARIS
    assert llama["cosines"][0] == pytest.approx(0.849, abs=0.02)
    assert [n.node.get_content() for n in llama["kept"]] == [PARIS]

    assert chroma["result"]["ids"] == [["paris"]]
    assert chroma["cosine"] == pytest.approx(0.849, abs=0.02)
