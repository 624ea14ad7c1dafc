"""Bytes → text: UTF-8 first, else the encoding ``charset-normalizer`` detects; never garbled.

Detection runs on a sample (the first MiB), so a file of any size is decoded in blocks
(:func:`iter_decoded`) with the encoding chosen once; every block is decoded strictly, so bytes
that do not fit the chosen encoding stop the file with a :class:`~conan_rag.errors.LoaderError`
instead of storing mojibake.

``charset-normalizer`` ranks candidate encodings by how chaotic the decoded text looks. On short
Western texts many single-byte code pages tie (cp1250, cp1252, cp775, ...); we ask it only about
the encodings documents are written in (:data:`CANDIDATES`) and, among near-ties, take the one
listed first there (Windows-1252 before Central European, GB18030 before Big5, ...).

Example:
    >>> detect_encoding("Müller ärgert sich".encode("latin-1"))
    'cp1252'
    >>> decode_bytes("北京是中国的首都。".encode("gb18030"))
    '北京是中国的首都。'
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from conan_rag.errors import LoaderError

if TYPE_CHECKING:
    from charset_normalizer import CharsetMatch


class DecodingError(LoaderError):
    """Bytes of a file are not valid in the encoding chosen for it.

    Attributes:
        encoding: the encoding tried.
        offset: the byte offset of the first invalid byte.
    """

    def __init__(self, path: str | Path, encoding: str, offset: int, guessed: bool) -> None:
        where = " (the encoding was guessed from the start of the file)" if guessed else ""
        super().__init__(
            path, f"not valid {encoding} near byte {offset}{where}; re-save it as UTF-8"
        )
        self.encoding = encoding
        self.offset = offset


SAMPLE_BYTES = 1 << 20  # bytes read to choose a file's encoding
READ_BYTES = 1 << 20  # bytes per block when a file is decoded in blocks
# Encodings documents come in, most common first (ties go to the earlier one).
CANDIDATES: tuple[str, ...] = (
    "utf_8",
    "utf_16",
    "utf_32",
    "gb18030",
    "big5",
    "cp932",
    "euc_jp",
    "cp949",
    "cp1252",
    "cp1251",
    "cp1250",
    "koi8_r",
    "cp1253",
    "cp1254",
    "cp1255",
    "cp1256",
    "cp1257",
    "iso8859_15",
    "latin_1",
)
_TIE = 0.02  # chaos difference under which two candidates count as tied
_MAX_CHAOS = 0.25  # above this, the best decoding still looks like noise: refuse
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf_32"),
    (codecs.BOM_UTF32_BE, "utf_32"),
    (codecs.BOM_UTF8, "utf_8_sig"),
    (codecs.BOM_UTF16_LE, "utf_16"),
    (codecs.BOM_UTF16_BE, "utf_16"),
)


def _rank(name: str) -> int:
    return CANDIDATES.index(name) if name in CANDIDATES else len(CANDIDATES)


def _valid_utf8_prefix(sample: bytes, complete: bool) -> bool:
    decoder = codecs.getincrementaldecoder("utf_8")("strict")
    try:
        decoder.decode(sample, final=complete)
    except UnicodeDecodeError:
        return False
    return True


_NON_ASCII_WORDS = re.compile(rb"\S*[\x80-\xff]\S*")
_DILUTED = 0.2  # non-ASCII words under this share of the sample: detect on them alone


def _best(matches: list[CharsetMatch]) -> str:
    """The preferred encoding among the least chaotic matches (ties go to CANDIDATES order)."""
    least = min(m.chaos for m in matches)
    tied = [m for m in matches if m.chaos <= least + _TIE]
    best = min(tied, key=lambda m: min(_rank(n) for n in [m.encoding, *m.could_be_from_charset]))
    return min([best.encoding, *best.could_be_from_charset], key=_rank)


def _detect(sample: bytes, name: str) -> str:
    from charset_normalizer import from_bytes

    matches = list(from_bytes(sample, cp_isolation=list(CANDIDATES)))
    if not matches or min(m.chaos for m in matches) > _MAX_CHAOS:
        raise LoaderError(
            name,
            f"cannot tell its text encoding (tried {', '.join(CANDIDATES)}); re-save it as UTF-8",
        )
    # A few non-ASCII words in pages of ASCII: every candidate decodes the ASCII, which dilutes
    # the evidence until Latin-1 ties with GB18030. Decide among the tied on those words alone
    # (whitespace never occurs inside a multi-byte character, so no character is split).
    least = min(m.chaos for m in matches)
    tied = [m for m in matches if m.chaos <= least + _TIE]
    words = b" ".join(_NON_ASCII_WORDS.findall(sample))
    if len({str(m) for m in tied}) > 1 and 0 < len(words) < _DILUTED * len(sample):
        names = sorted({n for m in tied for n in [m.encoding, *m.could_be_from_charset]})
        dense = list(from_bytes(words, cp_isolation=[n for n in names if n in CANDIDATES]))
        if dense:
            return _best(dense)
    return _best(matches)


def detect_encoding(sample: bytes, *, complete: bool = True, name: str = "<bytes>") -> str:
    """The encoding to decode a file with, chosen from its first bytes.

    Args:
        sample: the file's first bytes (the whole file when it is small).
        complete: ``sample`` is the whole file (else a multi-byte character may be cut at its
            end, which is not an error).
        name: the file, for messages.

    Returns:
        A codec name (``"utf_8"``, ``"utf_8_sig"``, ``"gb18030"``, ``"cp1252"``, ...).

    Raises:
        LoaderError: the bytes look binary, or no candidate encoding decodes them into
            plausible text.

    Example:
        >>> detect_encoding(b"plain ascii")
        'utf_8'
    """
    for bom, encoding in _BOMS:
        if sample.startswith(bom):
            return encoding
    if b"\x00" in sample:
        raise LoaderError(name, "binary data (NUL bytes), not text; remove it from the input")
    if _valid_utf8_prefix(sample, complete):
        return "utf_8"
    return _detect(sample, name)


def _check_text(text: str, name: str, encoding: str) -> None:
    controls = sum(1 for c in text if c < " " and c not in "\t\n\r\f\v")
    if controls > max(8, len(text) // 100):
        raise LoaderError(
            name, f"decodes as {encoding} into control characters: binary data, not text"
        )


def decode_bytes(data: bytes, name: str = "<bytes>") -> str:
    r"""Decode a whole file's bytes (see :func:`detect_encoding`).

    Raises:
        LoaderError: binary data, or an undetectable or inconsistent encoding.

    Example:
        >>> decode_bytes(b"\xef\xbb\xbfhello")
        'hello'
    """
    encoding = detect_encoding(data[:SAMPLE_BYTES], complete=len(data) <= SAMPLE_BYTES, name=name)
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise DecodingError(name, encoding, exc.start, guessed=False) from None
    _check_text(text[:100_000], name, encoding)
    return text


def file_encoding(path: Path) -> str:
    """The encoding of a text file, from its first MiB; a bad guess fails later, never garbles.

    Raises:
        LoaderError: the file cannot be read, is binary, or its encoding is undetectable.
    """
    return sniff_file(path)[0]


def sniff_file(path: Path) -> tuple[str, str]:
    """A text file's encoding (see :func:`file_encoding`) and its first MiB of text, one read.

    Raises:
        LoaderError: the file cannot be read, is binary, or its encoding is undetectable.
    """
    try:
        with path.open("rb") as fh:
            sample = fh.read(SAMPLE_BYTES + 1)
    except OSError as exc:
        raise LoaderError(path, f"cannot read it ({exc.strerror or exc})") from None
    complete = len(sample) <= SAMPLE_BYTES
    encoding = detect_encoding(sample[:SAMPLE_BYTES], complete=complete, name=str(path))
    head = sample[:SAMPLE_BYTES].decode(encoding, errors="ignore")
    _check_text(head[:100_000], str(path), encoding)
    return encoding, head


def iter_decoded(path: Path, encoding: str, block_bytes: int = READ_BYTES) -> Iterator[str]:
    """A file's text in blocks, decoded strictly with ``encoding`` (memory: one block).

    Raises:
        LoaderError: the file cannot be read, or holds bytes that are not valid ``encoding``.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
        >>> _ = p.write_bytes("naïve café".encode("cp1252"))
        >>> "".join(iter_decoded(p, file_encoding(p)))
        'naïve café'
    """
    decoder = codecs.getincrementaldecoder(encoding)("strict")
    offset = 0
    try:
        with path.open("rb") as fh:
            while True:
                data = fh.read(block_bytes)
                text = decoder.decode(data, final=not data)
                if text:
                    yield text
                if not data:
                    return
                offset += len(data)
    except UnicodeDecodeError as exc:
        raise DecodingError(path, encoding, offset + exc.start, guessed=True) from None
    except OSError as exc:
        raise LoaderError(path, f"cannot read it ({exc.strerror or exc})") from None


def redetect(path: Path, error: DecodingError) -> str | None:
    """Another encoding for a file whose start was valid UTF-8 but a later part is not.

    Detects on a MiB around the first invalid byte; ``None`` when that gives nothing new.
    """
    if error.encoding not in ("utf_8", "utf_8_sig"):
        return None
    start = max(0, error.offset - SAMPLE_BYTES // 2)
    try:
        with path.open("rb") as fh:
            fh.seek(start)
            sample = fh.read(SAMPLE_BYTES)
        encoding = detect_encoding(sample, complete=False, name=str(path))
    except (OSError, LoaderError):
        return None
    return None if encoding == error.encoding else encoding
