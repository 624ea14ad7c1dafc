"""One real ``conan-rag serve --collection`` process over a real collection, for this package.

The collection is embedded Chroma holding ``fact_docs`` (all-MiniLM-L6-v2, float32, so the
served scores agree with ``Pipeline.retrieve``'s to 1e-5 on any CPU) and a recorded threshold
sweep; the server reads the model the collection records. Package-scoped: the retrieval tests
and the search page's browser test share one server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conan_rag import load_encoder
from conan_rag.rag.evaluation import record_sweep, threshold_sweep
from conan_rag.rag.pipeline import Pipeline
from conan_rag.rag.search.retrieval import RetrievalOptions
from conan_rag.testing import start_serve_process
from tests.pipeline_helpers import fact_docs

QUERIES = ["Which city is the capital of France?", "red planet", "北京的故宫", "tea leaves"]
MODES = ("dense", "lexical", "hybrid")
NAME = "served-facts"
SWEEP = threshold_sweep({"q": {"a": 1}}, {"q": {"a": 0.8, "b": 0.3}}, [0.2, 0.5, 0.9])


@pytest.fixture(scope="package")
def collection(minilm_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The collection and what ``Pipeline.retrieve`` answers on it, per mode (k=3)."""
    db = tmp_path_factory.mktemp("served") / "db"
    encoder = load_encoder(str(minilm_path), device="cpu", dtype="float32")
    pipe = Pipeline(encoder, db=db, collection=NAME)
    pipe.ingest(fact_docs())
    record_sweep(pipe.store, SWEEP, {"dataset": "facts", "retrieval": "dense"})
    want = {
        mode: pipe.retrieve_many(QUERIES, RetrievalOptions(k=3, retrieval=mode)) for mode in MODES
    }
    return {"db": db, "want": want, "chunks": pipe.collection.count()}


@pytest.fixture(scope="package")
def served_url(collection: dict[str, Any]) -> Iterator[str]:
    """A server searching the collection, with the model the collection records."""
    args = ["--port", "0", "--device", "cpu", "--dtype", "float32"]
    proc, base = start_serve_process([*args, "--collection", NAME, "--db", str(collection["db"])])
    try:
        yield base
    finally:
        proc.terminate()
        proc.wait(60)
