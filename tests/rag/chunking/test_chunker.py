"""Chunker: token limit (specials, prompt, title), sentence/paragraph cuts, overlap, offsets."""

# ruff: noqa: F811 - pytest fixtures imported from tests.pipeline_helpers
from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest

from conan_rag import ConanConfigError, load_encoder
from conan_rag.rag.chunking import ChunkConfig, Chunker
from conan_rag.rag.sources.documents import Document
from conan_rag.testing import build_conan_layout_model
from tests.pipeline_helpers import minilm, tiny  # noqa: F401 - fixtures

WORDS = ["cell", "protein", "gene", "binds", "the", "of", "interleukin", "transcription", "3.5"]
ZH = "北京是中国的首都。长城非常雄伟！你去过吗？我们明天出发；天气很好。"


def _count(encoder, text: str) -> int:
    """Independent count: the encoder's own tokenizer, prompt and specials, no truncation."""
    full = encoder.prompts["document"] + text
    return len(encoder.backend.tokenizer(full, truncation=False)["input_ids"])


def _random_text(seed: int) -> str:
    rng = random.Random(seed)
    paragraphs = []
    for _ in range(rng.randint(2, 6)):
        sentences = []
        for _ in range(rng.randint(1, 8)):
            if rng.random() < 0.3:
                sentences.append(ZH[rng.randint(0, 10) :])
            else:
                words = rng.choices(WORDS, k=rng.randint(3, 40))
                sentences.append(" ".join(words).capitalize() + rng.choice([".", "!", "?"]))
        paragraphs.append(" ".join(sentences))
    return "\n\n".join(paragraphs)


@pytest.mark.parametrize("seed", range(6))
def test_chunks_never_exceed_limit_and_offsets_match(tiny, minilm, seed: int) -> None:
    text = _random_text(seed)
    for encoder, limit in ((tiny, 24), (minilm, 40)):
        chunker = Chunker(encoder, ChunkConfig(max_tokens=limit, overlap_tokens=6))
        doc = Document("d", text, "s", title="A title")
        chunks = chunker.chunk(doc)
        assert chunks and [c.index for c in chunks] == list(range(len(chunks)))
        for chunk in chunks:
            assert _count(encoder, chunk.embed_text) <= limit
            assert text[chunk.char_start : chunk.char_end] == chunk.text == chunk.text.strip()
            assert chunk.embed_text == "A title\n" + chunk.text
        covered = set()
        for c in chunks:
            covered.update(range(c.char_start, c.char_end))
        assert all(i in covered for i, ch in enumerate(text) if not ch.isspace())  # nothing lost
        assert chunks[0].char_start == 0 and chunks[-1].char_end == len(text.rstrip())


def test_default_limit_is_max_seq_length(minilm) -> None:
    text = " ".join(["interleukin transcription factor binds the gene."] * 300)
    chunks = Chunker(minilm).chunk(Document("d", text, "s"))
    assert len(chunks) > 1
    assert all(_count(minilm, c.embed_text) <= minilm.max_seq_length for c in chunks)
    assert max(_count(minilm, c.embed_text) for c in chunks) > minilm.max_seq_length * 0.7


def test_chinese_sentence_boundaries(tiny) -> None:
    text = ZH * 6
    chunks = Chunker(tiny, ChunkConfig(max_tokens=20, overlap_tokens=0)).chunk(
        Document("z", text, "s")
    )
    assert len(chunks) > 3
    assert all(c.text[-1] in "。！？；" for c in chunks)
    assert "".join(c.text for c in chunks) == text


def test_english_sentences_and_paragraphs_preferred(minilm) -> None:
    para = "The protein binds the gene. It was measured in 3.5 hours! Results vary?"
    text = "\n\n".join([para] * 4)
    chunks = Chunker(minilm, ChunkConfig(max_tokens=40, overlap_tokens=0)).chunk(
        Document("e", text, "s")
    )
    assert all(c.text.endswith(("?", "!", ".")) for c in chunks)
    assert all(c.text.startswith(("The", "It", "Results")) for c in chunks)
    assert any(c.text == para or c.text == f"{para}\n\n{para}" for c in chunks)


def test_overlap(minilm) -> None:
    text = " ".join(f"Sentence number {i} talks about gene {i}." for i in range(40))
    doc = Document("o", text, "s")
    overlapping = Chunker(minilm, ChunkConfig(max_tokens=48, overlap_tokens=16)).chunk(doc)
    disjoint = Chunker(minilm, ChunkConfig(max_tokens=48, overlap_tokens=0)).chunk(doc)
    for a, b in itertools.pairwise(overlapping):
        assert b.char_start < a.char_end and b.char_start > a.char_start
        assert text[b.char_start : a.char_end].startswith("Sentence")  # snapped to a sentence
    for a, b in itertools.pairwise(disjoint):
        assert b.char_start >= a.char_end
    assert len(overlapping) > len(disjoint)


def test_prompt_counts_toward_limit(tmp_path: Path) -> None:
    folder = build_conan_layout_model(
        tmp_path / "prompted", hidden_size=32, num_layers=1, prompts={"document": "passage: "}
    )
    encoder = load_encoder(str(folder), device="cpu", dtype="float32")
    text = "the cell and the gene " * 50
    chunks = Chunker(encoder, ChunkConfig(max_tokens=20, overlap_tokens=0)).chunk(
        Document("p", text, "s")
    )
    assert all(_count(encoder, c.embed_text) <= 20 for c in chunks)
    assert max(_count(encoder, c.embed_text) for c in chunks) == 20


def test_whole_mode_ids_and_errors(minilm) -> None:
    doc = Document("w", "Body text.", "s", title="Title")
    whole = Chunker(minilm, ChunkConfig(mode="whole")).chunk(doc)
    assert [c.text for c in whole] == ["Title Body text."]
    chunker = Chunker(minilm)
    first, again = chunker.chunk(doc), chunker.chunk(doc)
    assert [c.id for c in first] == [c.id for c in again]
    other = chunker.chunk(Document("w2", "Body text.", "s", title="Title"))
    assert first[0].id != other[0].id
    assert chunker.chunk(Document("e", "  \n ", "s")) == []
    assert chunker.document_hash(doc) != Chunker(
        minilm, ChunkConfig(overlap_tokens=0)
    ).document_hash(doc)
    with pytest.raises(ConanConfigError, match="max_seq_length"):
        Chunker(minilm, ChunkConfig(max_tokens=10_000))
    with pytest.raises(ConanConfigError, match="tokens"):
        ChunkConfig(mode="pages")  # type: ignore[arg-type]


@pytest.mark.parametrize("max_tokens", [64, 80, 96])
def test_sentence_end_beats_a_word_cut_in_the_first_half(minilm, max_tokens: int) -> None:
    # Regression: with max_tokens=80 a sentence end just before the window's middle lost to a
    # cut between words, stranding "sources." alone in the next chunk.
    from conan_rag.rag.sources.discovery import load_paths

    corpus = Path(__file__).resolve().parents[3] / "examples" / "corpus" / "transformers.txt"
    (document,) = load_paths([corpus]).documents
    chunks = Chunker(minilm, ChunkConfig(max_tokens=max_tokens, overlap_tokens=0)).chunk(document)
    assert all(c.text.rstrip().endswith((".", "!", "?")) for c in chunks)
    assert all(len(c.text.split()) > 3 for c in chunks)


def test_hash_covers_chunker_version(minilm, monkeypatch) -> None:
    import conan_rag.rag.chunking.chunker as chunking

    doc = Document("v", "Some text.", "s")
    before = Chunker(minilm).document_hash(doc)
    monkeypatch.setattr(chunking, "CHUNKER_VERSION", chunking.CHUNKER_VERSION + 1)
    assert Chunker(minilm).document_hash(doc) != before  # old chunks get re-cut, not kept


@pytest.mark.parametrize("seed", range(3))
def test_windowed_chunking_covers_everything_and_keeps_limits(
    tiny, minilm, monkeypatch, seed: int
) -> None:
    # Tiny windows force many window restarts; every invariant of whole-text chunking holds.
    import conan_rag.rag.chunking.chunker as chunking

    text = "\n\n".join(_random_text(seed * 10 + i) for i in range(12))
    for encoder, limit in ((tiny, 32), (minilm, 48)):
        chunker = Chunker(encoder, ChunkConfig(max_tokens=limit, overlap_tokens=6))
        doc = Document("w", text, "s", title="T")
        whole = chunker.chunk(doc)
        monkeypatch.setattr(chunking, "WINDOW_CHARS", 900)
        monkeypatch.setattr(chunking, "_MARGIN_CHARS", 120)
        windowed = chunker.chunk(doc)
        monkeypatch.undo()
        assert len(text) > 10 * 900 and len(windowed) > 10
        assert [c.index for c in windowed] == list(range(len(windowed)))
        for chunk in windowed:
            assert _count(encoder, chunk.embed_text) <= limit
            assert text[chunk.char_start : chunk.char_end] == chunk.text == chunk.text.strip()
        covered = set()
        for c in windowed:
            covered.update(range(c.char_start, c.char_end))
        assert all(i in covered for i, ch in enumerate(text) if not ch.isspace())
        starts = [c.char_start for c in windowed]
        assert starts == sorted(starts) and len(set(starts)) == len(starts)
        # cut by the same rules: most chunks coincide with the whole-text chunking's
        same = {(c.char_start, c.char_end) for c in whole} & {
            (c.char_start, c.char_end) for c in windowed
        }
        assert len(same) >= 0.8 * len(whole)


@pytest.mark.slow
def test_a_long_document_is_tokenized_window_by_window(minilm, tmp_path: Path, monkeypatch) -> None:
    # The memory bound: no tokenizer call sees more than one window, whatever the file size,
    # and Python allocations while hashing and cutting a 4 MB file stay small.
    import tracemalloc

    import conan_rag.rag.chunking.chunker as chunking
    from conan_rag.rag.sources.documents import BLOCK_CHARS, read_file

    sentence = "The interleukin binds the transcription factor of gene 3.5 in the cell. "
    path = tmp_path / "big.txt"
    path.write_text((sentence * 60 + "\n\n") * 1000, encoding="utf-8")  # ~4.4 MB
    (doc,) = read_file(path)
    chunker = Chunker(minilm, ChunkConfig(overlap_tokens=0))
    seen: list[int] = []
    real = chunker._offsets

    def recording(text: str) -> list[tuple[int, int]]:
        seen.append(len(text))
        return real(text)

    monkeypatch.setattr(chunker, "_offsets", recording)
    tracemalloc.start()
    digest = chunker.digest(doc)
    count = sum(1 for _ in chunker.iter_chunks(doc))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert digest.chars == path.stat().st_size and count > 1000
    window = chunking.WINDOW_CHARS + BLOCK_CHARS + 4096  # a window, one more block, a margin
    assert max(seen) <= window and len(seen) > path.stat().st_size // window
    assert peak < 120 * 2**20, f"{peak / 2**20:.0f} MiB of Python objects"


def test_a_chunk_holds_at_most_max_chars_whatever_its_tokens(minilm, tmp_path: Path) -> None:
    """A 5 MB line without a space is one ``[UNK]`` token: it still becomes bounded chunks."""
    from conan_rag.rag.sources.documents import read_file

    run = "x" * 5_000_000
    path = tmp_path / "blob.txt"
    path.write_text("Intro words here. " + run + " tail words.\n\n" + "b " * 3000, "utf-8")
    (doc,) = read_file(path)  # read window by window, as an ingest reads it
    text = path.read_text("utf-8")
    chunker = Chunker(minilm)
    assert chunker.max_chars == 8 * minilm.max_seq_length  # the documented default
    chunks = chunker.chunk(doc)
    assert max(len(c.text) for c in chunks) <= chunker.max_chars
    assert max(_count(minilm, c.embed_text) for c in chunks) <= chunker.limit
    for chunk in chunks:
        assert text[chunk.char_start : chunk.char_end] == chunk.text
    covered = sum(c.char_end - c.char_start for c in chunks if "x" in c.text)
    assert covered >= len(run)  # every character of the run is in some chunk
    assert chunks[0].text == "Intro words here."  # the cut before the run is a sentence end

    spaced = Document("s", "a" + " " * 10_000 + "b", "s")  # two tokens 10,000 characters apart
    assert [c.text for c in Chunker(minilm, ChunkConfig(max_chars=64)).chunk(spaced)] == ["a", "b"]


def test_the_character_bound_leaves_prose_alone_and_is_checked(minilm) -> None:
    text = "\n\n".join(_random_text(seed) for seed in range(8))
    doc = Document("p", text, "s", title="Prose")
    default = [(c.char_start, c.char_end) for c in Chunker(minilm).chunk(doc)]
    unbounded = ChunkConfig(max_chars=10**9)
    assert default == [(c.char_start, c.char_end) for c in Chunker(minilm, unbounded).chunk(doc)]
    small = Chunker(minilm, ChunkConfig(max_chars=100)).chunk(doc)
    assert max(len(c.text) for c in small) <= 100 < max(e - s for s, e in default)
    for bad in (0, 15, 2.5, True):
        with pytest.raises(ConanConfigError, match="max_chars must be an integer >= 16"):
            ChunkConfig(max_chars=bad)
