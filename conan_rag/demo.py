"""``conan-rag demo`` / ``make demo``: the bundled corpus into Chroma, then cited answers.

The model is ``--model``, else ``$CONAN_RAG_MODEL``, else the bundled all-MiniLM-L6-v2; the store
is a temporary folder, so the demo leaves nothing behind. It ingests twice to show that unchanged
documents are not embedded again. The corpus ships inside the package (:data:`CORPUS`), so the
demo runs from an installed wheel too.

Example:
    >>> sorted(p.name for p in CORPUS.iterdir())[:2]
    ['NOTICE', 'coffee.html']
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from conan_rag.model.files import BUNDLED_MINILM
from conan_rag.rag.pipeline import MODEL_ENV, Pipeline
from conan_rag.rag.search.retrieval import RetrievalOptions
from conan_rag.registry import load_encoder

CORPUS = Path(__file__).resolve().parent / "corpus"
QUESTIONS = [
    "What gas do plants release during photosynthesis?",
    "When was smallpox declared eradicated?",
    "Who first reached the summit of Mount Everest?",
    "Which coffee beans contain more caffeine?",
    "长城有多长？",
]


def main(
    corpus: Path = CORPUS, questions: list[str] | None = None, model: str | None = None
) -> None:
    """Ingest ``corpus`` and print cited extractive answers to ``questions``."""
    model = model or os.environ.get(MODEL_ENV) or BUNDLED_MINILM
    start = time.perf_counter()
    encoder = load_encoder(model)
    print(f"{encoder}  (loaded in {time.perf_counter() - start:.1f}s)")
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
            answer = pipe.answer(question, options=RetrievalOptions(k=3))
            print(f"\nQ: {question}\n{answer.text}")
    print(f"\nDone in {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    main()
