"""``conan-rag demo`` / ``make demo``: the bundled corpus into Chroma, then cited answers.

The model is ``--model``, else ``$CONAN_RAG_MODEL``, else the bundled all-MiniLM-L6-v2; the store
is a temporary folder, so the demo leaves nothing behind. It ingests twice to show that unchanged
documents are not embedded again, then answers with hybrid retrieval (dense vectors and BM25 over
jieba words, fused by rank) and says where each mode ranked the passage it cites. The corpus ships
inside the package (:data:`CORPUS`), so the demo runs from an installed wheel too.

Example:
    >>> sorted(p.name for p in CORPUS.iterdir())[:2]
    ['NOTICE', 'coffee.html']
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from conan_rag.errors import ModelNotFoundError
from conan_rag.model.files import BUNDLED_MINILM, bundled_minilm_path
from conan_rag.rag.chunking.sentences import is_cjk
from conan_rag.rag.pipeline import MODEL_ENV, Pipeline
from conan_rag.rag.search.retrieval import RetrievalOptions
from conan_rag.registry import load_encoder

CORPUS = Path(__file__).resolve().parent / "corpus"
QUESTIONS = [
    "What gas do plants release during photosynthesis?",
    "When was smallpox declared eradicated?",
    "Who first reached the summit of Mount Everest?",
    "Which coffee beans contain more caffeine?",
    "What does RuBisCO fix?",  # a rare term: MiniLM's vectors miss it, BM25 finds it
    "长城有多长？",
]
ENGLISH_ONLY = (
    "The bundled all-MiniLM-L6-v2 is an English model: it finds English passages and the "
    "sentences that answer in them, but it cannot read Chinese, so for Chinese questions the "
    "passage is found by BM25 (the lexical half of hybrid retrieval) and the sentence quoted from "
    "it is a guess. For Chinese, run: conan-rag demo --model TencentBAC/Conan-embedding-v1 "
    "(a model folder, or the model id when the Hugging Face Hub is reachable)."
)
MODES = {"dense": "dense", "lexical": "BM25"}


def main(
    corpus: Path = CORPUS,
    questions: list[str] | None = None,
    model: str | None = None,
    dtype: str = "auto",
) -> None:
    """Ingest ``corpus`` and print cited extractive answers to ``questions``.

    ``dtype`` is the encoder's (``"auto"``: bfloat16 where the CPU computes it natively).
    """
    model = model or os.environ.get(MODEL_ENV) or BUNDLED_MINILM
    start = time.perf_counter()
    encoder = load_encoder(model, dtype=dtype)
    print(f"{encoder}  (loaded in {time.perf_counter() - start:.1f}s)")
    bundled = _is_bundled(model)
    if bundled:
        print(ENGLISH_ONLY)
    with tempfile.TemporaryDirectory(prefix="conan-rag-demo-") as folder:
        pipe = Pipeline(encoder, db=folder, collection="demo")
        report = pipe.ingest([corpus])
        print(
            f"Ingested {corpus}: {report.added} documents, {report.chunks_embedded} chunks; "
            f"skipped: {report.skipped or 'none'}"
        )
        again = pipe.ingest([corpus])
        print(f"Re-ingest: {again.unchanged} unchanged, {again.chunks_embedded} chunks embedded")
        for question in questions or QUESTIONS:
            answer = pipe.answer(question, options=RetrievalOptions(k=3, retrieval="hybrid"))
            print(f"\nQ: {question}\n{answer.text}")
            if answer.hits:
                print(f"Hybrid retrieval: [1] ranked {_ranks(pipe, question, answer.hits[0].id)}")
            if bundled and any(is_cjk(char) for char in question):
                print("(an English model quoting Chinese: the sentence is a guess, see above)")
    print(f"\nDone in {time.perf_counter() - start:.1f}s")


def _is_bundled(model: str) -> bool:
    """Whether ``model`` names the bundled all-MiniLM-L6-v2 (by id or by its folder)."""
    if model == BUNDLED_MINILM:
        return True
    try:
        return Path(model).expanduser().resolve() == bundled_minilm_path().resolve()
    except ModelNotFoundError:
        return False


def _ranks(pipe: Pipeline, question: str, chunk_id: str) -> str:
    """Where dense and lexical retrieval each rank a chunk, e.g. ``"#1 by dense, #2 by BM25"``."""
    ranks = []
    for mode, name in MODES.items():
        hits = pipe.retrieve(question, RetrievalOptions(k=3, retrieval=mode))
        ids = [hit.id for hit in hits]
        ranks.append(
            f"#{ids.index(chunk_id) + 1} by {name}" if chunk_id in ids else f"not by {name}"
        )
    return ", ".join(ranks)


if __name__ == "__main__":
    main()
