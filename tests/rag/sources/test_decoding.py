"""Text decoding: UTF-8 first, legacy encodings detected, binary refused, streamed safely."""

from __future__ import annotations

from pathlib import Path

import pytest

import conan_rag.rag.sources.decoding as decoding
from conan_rag import load_encoder
from conan_rag.errors import LoaderError
from conan_rag.rag.pipeline import Pipeline
from conan_rag.rag.sources.decoding import (
    DecodingError,
    decode_bytes,
    detect_encoding,
    file_encoding,
    iter_decoded,
    redetect,
)

SAMPLES = [
    ("Müller ärgert sich über die Größe der Straße.", "latin-1"),
    ("Müller ärgert sich", "latin-1"),
    ("El niño comió paella en España; ¿qué más?", "latin-1"),
    ("“Smart quotes” – and an em—dash €", "cp1252"),
    ("Příliš žluťoučký kůň úpěl ďábelské ódy.", "cp1250"),
    ("Zażółć gęślą jaźń. Łódź jest miastem w Polsce.", "cp1250"),
    ("Привет, как дела? Москва - столица России.", "cp1251"),
    ("Привет, как дела? Москва - столица России.", "koi8_r"),
    ("北京是中国的首都。长城非常雄伟！", "gb18030"),
    ("台灣的首都是台北。", "big5"),
    ("日本語のテキストです。東京は首都です。", "shift_jis"),
    ("한국어 텍스트입니다. 서울은 수도입니다.", "euc_kr"),
    ("Καλημέρα κόσμε, η Αθήνα είναι πρωτεύουσα.", "cp1253"),
    ("Müller 北京 ✓", "utf-8"),
    ("with a BOM", "utf-8-sig"),
    ("UTF-16 with its BOM: Müller", "utf-16"),
]


@pytest.mark.parametrize(("text", "encoding"), SAMPLES, ids=[e for _, e in SAMPLES])
def test_text_decodes_to_what_was_written(text: str, encoding: str) -> None:
    assert decode_bytes(text.encode(encoding)) == text


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        ("Größe und Straße", "latin-1"),
        ("Привет, как дела?", "cp1251"),
        ("北京是中国的首都。长城", "gb18030"),
        ("日本語のテキスト", "shift_jis"),
    ],
)
def test_a_few_words_in_pages_of_ascii(text: str, encoding: str) -> None:
    # Diluted evidence: every candidate decodes the ASCII; the non-ASCII words decide.
    data = ("plain ascii text. " * 2000 + text).encode(encoding)
    assert decode_bytes(data).endswith(text)


def test_binary_and_undecodable_bytes_are_refused() -> None:
    with pytest.raises(LoaderError, match="binary"):
        decode_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with pytest.raises(LoaderError, match="binary"):
        decode_bytes(bytes(range(1, 32)) * 20)  # control characters in every encoding


def test_multibyte_characters_split_across_blocks(tmp_path: Path) -> None:
    text = "北京是中国的首都。Müller ✓ " * 50
    path = tmp_path / "zh.txt"
    path.write_bytes(text.encode("utf-8"))
    blocks = list(iter_decoded(path, file_encoding(path), block_bytes=7))
    assert "".join(blocks) == text and len(blocks) > 100


def test_a_later_part_in_another_encoding_is_redetected(tmp_path: Path) -> None:
    path = tmp_path / "mixed.txt"
    ascii_part = b"plain ascii text. " * 80_000  # 1.4 MB: more than the detection sample
    path.write_bytes(ascii_part + "Größe und Straße".encode("latin-1"))
    assert file_encoding(path) == "utf_8"  # the start says UTF-8 ...
    with pytest.raises(DecodingError) as info:
        "".join(iter_decoded(path, "utf_8"))  # ... strictly: an error, never a garbled store
    assert info.value.offset == len(ascii_part) + 2
    encoding = redetect(path, info.value)
    assert encoding == "cp1252"
    assert "".join(iter_decoded(path, encoding)).endswith("Größe und Straße")


def test_ingest_uses_the_redetected_encoding(
    tmp_path: Path, conan_tiny: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(decoding, "SAMPLE_BYTES", 2000)  # a small file with a "late" Latin-1
    text = "plain ascii text. " * 150 + "Größe und Straße."
    (tmp_path / "late.txt").write_bytes(text.encode("latin-1"))
    encoder = load_encoder(str(conan_tiny), device="cpu", dtype="float32")
    pipe = Pipeline(encoder, db=tmp_path / "db")
    report = pipe.ingest([tmp_path / "late.txt"])
    assert report.added == 1 and report.skipped == []
    stored = pipe.collection.get(include=["documents"])["documents"]
    assert "Größe und Straße." in " ".join(stored)


def test_detect_encoding_prefers_utf8_and_boms() -> None:
    assert detect_encoding(b"just ascii") == "utf_8"
    assert detect_encoding("é".encode()[:1], complete=False) == "utf_8"  # a cut character is fine
    assert detect_encoding("x".encode("utf-16")) == "utf_16"
    assert detect_encoding(b"\xef\xbb\xbfx") == "utf_8_sig"
