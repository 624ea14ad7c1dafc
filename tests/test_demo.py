"""The demo ingests the shipped corpus and answers with cited passages."""

from __future__ import annotations

from pathlib import Path

from conan_rag import demo


def test_demo_answers_with_citations(minilm_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("CONAN_RAG_MODEL", str(minilm_path))
    demo.main()
    out = capsys.readouterr().out
    assert "Ingested" in out and "6 documents" in out and "skipped: none" in out
    assert "Re-ingest: 6 unchanged, 0 chunks embedded" in out
    assert "declared\nit eradicated in 1980" not in out  # sentences are re-flowed, not raw lines
    assert "eradicated in 1980 after a global vaccination campaign. [1]" in out
    assert "Tenzing Norgay and Edmund Hillary" in out
    assert "[1] How vaccines work (vaccines.md) (cosine" in out


def test_corpus_is_small_and_bilingual() -> None:
    files = sorted(p.name for p in demo.CORPUS.iterdir())
    assert "great_wall_zh.md" in files and len(files) >= 6
    assert any(p.suffix == ".html" for p in demo.CORPUS.iterdir())
    assert sum(p.stat().st_size for p in demo.CORPUS.iterdir()) < 20_000
