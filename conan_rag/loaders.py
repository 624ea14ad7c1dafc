"""Files → documents: .txt, .md, .html (text only), .pdf and BEIR ``.jsonl``/``.jsonl.gz``.

Text files are decoded as UTF-8, falling back to GB18030 (the superset of GBK/GB2312 most
Chinese files use). A file that cannot be read is skipped with a warning and listed in the
result, never silently dropped.

Example:
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "a.md").write_text(chr(10).join(["# Cats", "", "Cats purr."]))
    >>> result = load_paths([folder])
    >>> [d.title for d in result.documents], result.skipped
    (['Cats'], [])
"""

from __future__ import annotations

import gzip
import html.parser
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

TEXT_SUFFIXES = (".txt", ".md", ".markdown")
HTML_SUFFIXES = (".html", ".htm")
PDF_SUFFIXES = (".pdf",)
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz")
SUFFIXES: tuple[str, ...] = TEXT_SUFFIXES + HTML_SUFFIXES + PDF_SUFFIXES + JSONL_SUFFIXES
ENCODINGS = ("utf-8", "gb18030")


@dataclass(frozen=True)
class Document:
    """One document to chunk and embed.

    Attributes:
        doc_id: the document's id: the BEIR ``_id`` for jsonl lines, else the file path.
        text: the document's text.
        source: the file it came from (absolute path), or any label for in-memory documents.
        title: a title (BEIR title, markdown/html heading, pdf title), or ``""``.
        metadata: extra metadata copied onto every chunk (str, int, float or bool values).
    """

    doc_id: str
    text: str
    source: str
    title: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """The unit of incremental ingestion: ``source`` or ``source#doc_id``."""
        return self.source if self.doc_id == self.source else f"{self.source}#{self.doc_id}"


@dataclass
class LoadResult:
    """Documents read from some paths, and the files skipped (path, reason)."""

    documents: list[Document] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


class LoaderError(Exception):
    """A file could not be read; the message names the file and the reason."""


def decode_text(data: bytes, name: str = "<bytes>") -> str:
    """Decode bytes as UTF-8 (BOM allowed), else GB18030.

    Raises:
        LoaderError: neither encoding decodes the bytes.

    Example:
        >>> decode_text("猫".encode("gb18030"))
        '猫'
    """
    for encoding in ENCODINGS:
        try:
            text = data.decode("utf-8-sig" if encoding == "utf-8" else encoding)
        except UnicodeDecodeError:
            continue
        if encoding != "utf-8" and "\x00" in text:
            break  # binary data that happens to decode
        return text
    raise LoaderError(
        f"{name}: not valid text in any of {list(ENCODINGS)}; re-save it as UTF-8 "
        "or remove it from the input."
    )


class _HTMLText(html.parser.HTMLParser):
    """Collects visible text and the <title>; skips script, style and template contents."""

    SKIP = frozenset({"script", "style", "noscript", "template"})
    BLOCKS = frozenset(
        {"p", "div", "br", "li", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "tr",
         "table", "section", "article", "header", "footer", "pre", "blockquote", "hr"}
    )  # fmt: skip

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title_parts: list[str] = []
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self._skip += 1
        elif tag == "title":
            self._in_title = True
        elif tag in self.BLOCKS:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag == "title":
            self._in_title = False
        elif tag in self.BLOCKS:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        if self._in_title:
            self.title_parts.append(data)
        else:
            self.parts.append(data)


def _normalize_blocks(text: str) -> str:
    paragraphs = [" ".join(p.split()) for p in text.split("\n\n")]
    return "\n\n".join(p for p in paragraphs if p)


def html_to_text(markup: str) -> tuple[str, str]:
    """Visible text (paragraphs separated by blank lines) and title of an HTML page.

    Example:
        >>> html_to_text("<title>T</title><p>Hi <b>there</b></p><script>x()</script>")
        ('Hi there', 'T')
    """
    parser = _HTMLText()
    parser.feed(markup)
    parser.close()
    return _normalize_blocks("".join(parser.parts)), " ".join("".join(parser.title_parts).split())


def _markdown_title(text: str) -> str:
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            return stripped.lstrip("#").strip()
        if stripped:
            return ""
    return ""


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".jsonl.gz" if name.endswith(".jsonl.gz") else path.suffix.lower()


def load_file(path: str | Path) -> list[Document]:
    """Read one file into documents (one per BEIR jsonl line, else one per file).

    Raises:
        LoaderError: the file is unreadable, corrupt, or of an unsupported type.
    """
    path = Path(path)
    source = str(path.resolve())
    suffix = _suffix(path)
    try:
        if suffix in TEXT_SUFFIXES:
            text = decode_text(path.read_bytes(), str(path))
            title = _markdown_title(text) if suffix != ".txt" else ""
            return [Document(source, text, source, title)]
        if suffix in HTML_SUFFIXES:
            text, title = html_to_text(decode_text(path.read_bytes(), str(path)))
            return [Document(source, text, source, title)]
        if suffix in PDF_SUFFIXES:
            return [_load_pdf(path, source)]
        if suffix in JSONL_SUFFIXES:
            return list(_load_jsonl(path, source))
    except LoaderError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parser failure means "unreadable file"
        raise LoaderError(f"{path}: {type(exc).__name__}: {str(exc)[:200]}") from None
    raise LoaderError(f"{path}: unsupported file type {suffix!r}; supported: {list(SUFFIXES)}.")


def _load_pdf(path: Path, source: str) -> Document:
    from pypdf import PdfReader

    reader = PdfReader(str(path))
    pages = [(page.extract_text() or "").strip() for page in reader.pages]
    title = ""
    if reader.metadata is not None and reader.metadata.title:
        title = str(reader.metadata.title)
    return Document(source, "\n\n".join(p for p in pages if p), source, title)


def _load_jsonl(path: Path, source: str) -> Iterator[Document]:
    data = path.read_bytes()
    if path.name.lower().endswith(".gz"):
        data = gzip.decompress(data)
    text = decode_text(data, str(path))
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            doc_id = str(row["_id"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise LoaderError(
                f"{path}:{number}: not a BEIR corpus line ({type(exc).__name__}); each line "
                'must be a JSON object with "_id", "title" and "text".'
            ) from None
        yield Document(doc_id, str(row.get("text") or ""), source, str(row.get("title") or ""))


def iter_files(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Files under the given paths (folders walked recursively, sorted), supported types only."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if child.is_file() and _suffix(child) in SUFFIXES:
                    yield child
        else:
            yield path


def load_paths(paths: Iterable[str | Path]) -> LoadResult:
    """Load files and folders; unreadable files are logged, listed in ``skipped`` and skipped.

    Args:
        paths: files or folders (folders are walked recursively for supported suffixes).

    Returns:
        A :class:`LoadResult` with the documents in path order.
    """
    result = LoadResult()
    for path in iter_files(paths):
        if not path.exists():
            reason = "no such file"
        else:
            try:
                result.documents.extend(load_file(path))
                continue
            except LoaderError as exc:
                reason = str(exc)
        logger.warning("Skipping %s: %s", path, reason)
        result.skipped.append((str(path), reason))
    return result
