"""Documents: every supported format, streamed text files, unreadable files reported, not stored."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from conan_rag.errors import LoaderError
from conan_rag.rag.sources.decoding import decode_bytes
from conan_rag.rag.sources.discovery import load_paths
from conan_rag.rag.sources.documents import TextFile, html_to_text, read_file


def _pdf(text: str) -> bytes:
    """A minimal valid one-page PDF showing ``text`` in Helvetica (correct xref offsets)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def test_text_markdown_html_pdf(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("Plain text.", encoding="utf-8")
    (tmp_path / "b.md").write_text("# Heading One\n\nBody text.", encoding="utf-8")
    (tmp_path / "c.html").write_text(
        "<html><head><title>Page</title><style>p{color:red}</style></head><body>"
        "<p>First &amp; foremost.</p><script>var secret = 1;</script><div>Second.</div>"
        "</body></html>",
        encoding="utf-8",
    )
    (tmp_path / "d.pdf").write_bytes(_pdf("Hello from a PDF page"))
    (tmp_path / "ignored.bin").write_bytes(b"\x00\x01")
    result = load_paths([tmp_path])
    assert result.skipped == []
    by_name = {Path(d.source).name: d for d in result.documents}
    assert sorted(by_name) == ["a.txt", "b.md", "c.html", "d.pdf"]
    assert by_name["a.txt"].text == "Plain text." and by_name["a.txt"].title == ""
    assert isinstance(by_name["a.txt"], TextFile) and isinstance(by_name["b.md"], TextFile)
    assert by_name["b.md"].title == "Heading One"
    assert by_name["c.html"].text == "First & foremost.\n\nSecond."
    assert by_name["c.html"].title == "Page"
    assert "Hello from a PDF page" in by_name["d.pdf"].text
    assert all(d.doc_id == d.source == str(Path(d.source).resolve()) for d in result.documents)


def test_html_skips_script_and_style() -> None:
    text, title = html_to_text("<style>x{}</style><p>Keep</p><script>drop()</script><p>this</p>")
    assert text == "Keep\n\nthis" and title == ""


def test_beir_jsonl_and_gz(tmp_path: Path) -> None:
    rows = [{"_id": "d1", "title": "T1", "text": "One."}, {"_id": 2, "title": "", "text": "Two."}]
    lines = "\n".join(json.dumps(r) for r in rows) + "\n\n"
    (tmp_path / "corpus.jsonl").write_text(lines, encoding="utf-8")
    (tmp_path / "corpus2.jsonl.gz").write_bytes(gzip.compress(lines.encode()))
    for name in ("corpus.jsonl", "corpus2.jsonl.gz"):
        docs = list(read_file(tmp_path / name))
        assert [(d.doc_id, d.title, d.text) for d in docs] == [
            ("d1", "T1", "One."),
            ("2", "", "Two."),
        ]
        assert docs[0].key == f"{(tmp_path / name).resolve()}#d1"


def test_gb18030_is_detected(tmp_path: Path) -> None:
    text = "北京是中国的首都。长城非常雄伟！"
    path = tmp_path / "zh.txt"
    path.write_bytes(text.encode("gb18030"))
    with pytest.raises(UnicodeDecodeError):
        path.read_bytes().decode("utf-8")
    (doc,) = read_file(path)
    assert doc.text == text
    assert decode_bytes("\ufeffhello".encode()) == "hello"


def test_unreadable_files_are_reported_and_skipped(tmp_path: Path) -> None:
    (tmp_path / "good.txt").write_text("Fine.", encoding="utf-8")
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf")
    (tmp_path / "binary.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00")
    (tmp_path / "bad.jsonl").write_text('{"_id": "1", "text": "ok"}\nnot json\n', encoding="utf-8")
    result = load_paths([tmp_path, tmp_path / "missing.md"])
    assert [Path(d.source).name for d in result.documents] == ["good.txt"]
    skipped = {Path(p).name: reason for p, reason in result.skipped}
    assert sorted(skipped) == ["bad.jsonl", "binary.txt", "broken.pdf", "missing.md"]
    assert "line 2" in skipped["bad.jsonl"] and "binary" in skipped["binary.txt"]
    assert skipped["missing.md"] == "no such file or folder"
    with pytest.raises(LoaderError, match="unsupported file type"):
        list(read_file(tmp_path / "x.docx"))
