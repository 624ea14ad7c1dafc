r"""Files → documents: .txt, .md, .html, .pdf and BEIR ``.jsonl``/``.jsonl.gz``.

Text and markdown files become a :class:`TextFile`: a document read in blocks whenever it is
hashed or chunked, so a file of any size is never held whole in memory. Everything else is read
into a :class:`Document`. Text encodings are detected (:mod:`conan_rag.rag.sources.decoding`);
a file that cannot be read raises :class:`~conan_rag.errors.LoaderError` naming it and the reason.

Example:
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "a.md").write_text(chr(10).join(["# Cats", "", "Cats purr."]))
    >>> (doc,) = read_file(folder / "a.md")
    >>> doc.title, doc.text
    ('Cats', '# Cats\n\nCats purr.')
"""

from __future__ import annotations

import gzip
import html.parser
import io
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from conan_rag.errors import LoaderError
from conan_rag.rag.sources.decoding import decode_bytes, iter_decoded, sniff_file

TEXT_SUFFIXES = (".txt", ".md", ".markdown")
HTML_SUFFIXES = (".html", ".htm")
PDF_SUFFIXES = (".pdf",)
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz")
SUFFIXES: tuple[str, ...] = TEXT_SUFFIXES + HTML_SUFFIXES + PDF_SUFFIXES + JSONL_SUFFIXES
BLOCK_CHARS = 1 << 18  # characters per block when a document's text is streamed


class DocumentLike(Protocol):
    """What ingestion needs of a document: identity, title, metadata, and its text in blocks."""

    @property
    def doc_id(self) -> str:
        """The document's id (a BEIR ``_id``, or the file path)."""
        ...

    @property
    def source(self) -> str:
        """The file it came from (absolute path), or any label for in-memory documents."""
        ...

    @property
    def title(self) -> str:
        """A title, or ``""``."""
        ...

    @property
    def metadata(self) -> dict[str, Any]:
        """Extra metadata copied onto every chunk."""
        ...

    @property
    def key(self) -> str:
        """The unit of incremental ingestion."""
        ...

    def blocks(self, size: int = BLOCK_CHARS) -> Iterator[str]:
        """The text, in consecutive pieces of about ``size`` characters."""
        ...


def _key(source: str, doc_id: str) -> str:
    return source if doc_id == source else f"{source}#{doc_id}"


@dataclass(frozen=True)
class Document:
    """One document held in memory.

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
        return _key(self.source, self.doc_id)

    def blocks(self, size: int = BLOCK_CHARS) -> Iterator[str]:
        """The text in pieces of ``size`` characters."""
        for start in range(0, len(self.text), size):
            yield self.text[start : start + size]


@dataclass(frozen=True)
class TextFile:
    """A text or markdown file, read in blocks each time its text is needed.

    Attributes:
        path: the file.
        encoding: the codec its bytes are decoded with.
        title: the first markdown heading (``.md``), else ``""``.
        metadata: extra metadata copied onto every chunk.
    """

    path: Path
    encoding: str
    title: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def source(self) -> str:
        """The absolute path of the file."""
        return str(self.path)

    @property
    def doc_id(self) -> str:
        """The file path (one document per file)."""
        return str(self.path)

    @property
    def key(self) -> str:
        """The file path."""
        return str(self.path)

    def blocks(self, size: int = BLOCK_CHARS) -> Iterator[str]:
        """The decoded text in blocks (each file read decodes strictly; see decoding)."""
        yield from iter_decoded(self.path, self.encoding, block_bytes=size)

    @property
    def text(self) -> str:
        """The whole text (reads the file; for small files and tests)."""
        return "".join(self.blocks())


class _HTMLText(html.parser.HTMLParser):
    """Collects visible text and the <title>; skips script, style and template contents."""

    SKIP = frozenset({"script", "style", "noscript", "template"})
    BLOCKS = frozenset(
        {
            "p",
            "div",
            "br",
            "li",
            "ul",
            "ol",
            "h1",
            "h2",
            "h3",
            "h4",
            "h5",
            "h6",
            "tr",
            "table",
            "section",
            "article",
            "header",
            "footer",
            "pre",
            "blockquote",
            "hr",
        }
    )

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
        (self.title_parts if self._in_title else self.parts).append(data)


def html_to_text(markup: str) -> tuple[str, str]:
    """Visible text (paragraphs separated by blank lines) and title of an HTML page.

    Example:
        >>> html_to_text("<title>T</title><p>Hi <b>there</b></p><script>x()</script>")
        ('Hi there', 'T')
    """
    parser = _HTMLText()
    parser.feed(markup)
    parser.close()
    paragraphs = [" ".join(p.split()) for p in "".join(parser.parts).split("\n\n")]
    title = " ".join("".join(parser.title_parts).split())
    return "\n\n".join(p for p in paragraphs if p), title


def markdown_title(text: str) -> str:
    r"""The first line's heading, if the first non-blank line is one.

    Example:
        >>> markdown_title("\n# Cats\nText")
        'Cats'
    """
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            return stripped.lstrip("#").strip()
        if stripped:
            return ""
    return ""


def suffix_of(path: Path) -> str:
    """The file type as :data:`SUFFIXES` spells it (``.jsonl.gz`` counts as one suffix)."""
    name = path.name.lower()
    return ".jsonl.gz" if name.endswith(".jsonl.gz") else path.suffix.lower()


def read_file(path: str | Path) -> Iterator[DocumentLike]:
    """The documents of one file: one per BEIR jsonl line, else one per file.

    Text and markdown files are not read here beyond their first MiB (encoding and title).

    Raises:
        LoaderError: the file is unreadable, corrupt, or of an unsupported type (raised when
            the offending part is reached, so a jsonl file may yield documents first).
    """
    path = Path(os.path.abspath(path))  # a link is read under its own name, not its target's
    suffix = suffix_of(path)
    if suffix not in SUFFIXES:
        raise LoaderError(path, f"unsupported file type {suffix!r}; supported: {list(SUFFIXES)}")
    try:
        if suffix in TEXT_SUFFIXES:
            encoding, head = sniff_file(path)
            yield TextFile(path, encoding, markdown_title(head) if suffix != ".txt" else "")
        elif suffix in HTML_SUFFIXES:
            text, title = html_to_text(decode_bytes(path.read_bytes(), str(path)))
            yield Document(str(path), text, str(path), title)
        elif suffix in PDF_SUFFIXES:
            yield _read_pdf(path)
        else:
            yield from _read_jsonl(path)
    except LoaderError:
        raise
    except OSError as exc:
        raise LoaderError(path, f"cannot read it ({exc.strerror or exc})") from None
    except Exception as exc:  # noqa: BLE001 - any parser failure means "unreadable file"
        raise LoaderError(path, f"{type(exc).__name__}: {str(exc)[:200]}") from None


def _read_pdf(path: Path) -> Document:
    try:
        from pypdf import PdfReader
    except ImportError:
        raise LoaderError(
            path, "reading PDF needs pypdf: pip install 'conan-rag[rag]' (or pypdf)"
        ) from None
    # pypdf logs what it recovers from ("EOF marker not found") as warnings; a file it cannot
    # read is skipped with its reason, so those lines are noise around the skip line.
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    reader = PdfReader(str(path))
    pages = [(page.extract_text() or "").strip() for page in reader.pages]
    title = ""
    if reader.metadata is not None and reader.metadata.title:
        title = str(reader.metadata.title)
    return Document(str(path), "\n\n".join(p for p in pages if p), str(path), title)


def _read_jsonl(path: Path) -> Iterator[Document]:
    opener: Any = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as raw, io.TextIOWrapper(raw, encoding="utf-8-sig") as lines:
        try:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    doc_id = str(row["_id"])
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    raise LoaderError(
                        path,
                        f"line {number} is not a BEIR corpus line ({type(exc).__name__}); each "
                        'line must be a JSON object with "_id", "title" and "text"',
                    ) from None
                text, title = str(row.get("text") or ""), str(row.get("title") or "")
                yield Document(doc_id, text, str(path), title)
        except UnicodeDecodeError:
            raise LoaderError(path, "not valid UTF-8 (JSON Lines must be UTF-8)") from None
