"""The demo ingests the shipped corpus and answers with cited passages."""

from __future__ import annotations

from pathlib import Path

from conan_rag import demo


def _answers(out: str) -> dict[str, str]:
    """Question → what the demo printed under it."""
    blocks = out.split("\nQ: ")[1:]
    return {block.split("\n", 1)[0]: block.split("\n", 1)[1] for block in blocks}


def test_demo_answers_with_citations(minilm_path: Path, monkeypatch, capsys) -> None:
    """float32, so the ranks printed are those of any CPU (bf16 could move a close second)."""
    monkeypatch.setenv("CONAN_RAG_MODEL", str(minilm_path))
    demo.main(dtype="float32")
    out = capsys.readouterr().out
    assert "Ingested" in out and "6 documents" in out and "skipped: none" in out
    assert "Re-ingest: 6 unchanged, 0 chunks embedded" in out
    assert "declared\nit eradicated in 1980" not in out  # sentences are re-flowed, not raw lines
    answers = _answers(out)
    assert list(answers) == demo.QUESTIONS
    assert "eradicated in 1980 after a global vaccination campaign. [1]" in out
    assert "Tenzing Norgay and Edmund Hillary" in out
    assert "[1] How vaccines work (vaccines.md) (cosine" in out
    # The close second sentence is quoted: the one naming the gas, after the one naming the topic.
    photosynthesis = answers["What gas do plants release during photosynthesis?"]
    assert "releasing oxygen as a by-product" in photosynthesis.split("\n\nSources:")[0]
    assert "robusta beans contain roughly twice as much caffeine" in out
    # Where hybrid helps: a rare term the vectors rank second, BM25 first; hybrid cites it.
    rubisco = answers["What does RuBisCO fix?"]
    assert "the enzyme RuBisCO fixes carbon dioxide" in rubisco
    assert "[1] Photosynthesis (photosynthesis.md)" in rubisco
    assert "Hybrid retrieval: [1] ranked #2 by dense, #1 by BM25" in rubisco
    # What the bundled model cannot do is said, once, and under the Chinese answer.
    assert out.count(demo.ENGLISH_ONLY) == 1 and "English model" in demo.ENGLISH_ONLY
    assert "[1] 长城 (great_wall_zh.md)" in answers["长城有多长？"]
    assert "the sentence is a guess" in answers["长城有多长？"]
    assert sum("the sentence is a guess" in answer for answer in answers.values()) == 1


def test_corpus_is_small_and_bilingual() -> None:
    files = sorted(p.name for p in demo.CORPUS.iterdir())
    assert "great_wall_zh.md" in files and len(files) >= 6
    assert any(p.suffix == ".html" for p in demo.CORPUS.iterdir())
    assert sum(p.stat().st_size for p in demo.CORPUS.iterdir()) < 20_000
