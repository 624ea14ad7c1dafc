"""Paths → the files to ingest, and an account of everything that was not taken.

Folders are walked recursively in sorted order. Hidden files and folders (names starting with a
dot, such as ``.git`` or ``.venv``) are skipped unless named explicitly; a folder that cannot be
listed is reported, never silently left out, and what is stored from under it is protected from
pruning (:attr:`Discovery.unreadable`). Named paths that do not exist are collected in
:attr:`Discovery.missing` so the caller can refuse before doing anything.

Example:
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ("a.md", "b.docx", ".hidden.md"):
    ...     _ = (root / name).write_text("x")
    >>> found = discover([root])
    >>> [p.name for p in found.files], dict(found.unsupported), found.hidden
    (['a.md'], {'.docx': 1}, 1)
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from conan_rag.errors import LoaderError
from conan_rag.rag.sources.documents import SUFFIXES, DocumentLike, read_file, suffix_of


@dataclass
class Discovery:
    """What a walk of the input paths found.

    Attributes:
        files: supported files, in walk order (absolute paths).
        folders: the folders named as input (absolute), walked.
        missing: named paths that do not exist, as given.
        unreadable: folders that could not be listed (absolute), with the reason.
        unsupported: files of another type, counted by suffix.
        hidden: hidden files and folders skipped.
    """

    files: list[Path] = field(default_factory=list)
    folders: list[Path] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    unsupported: Counter[str] = field(default_factory=Counter)
    hidden: int = 0

    def covers(self, source: str) -> bool:
        """Whether ``source`` lies under a folder that was walked completely."""
        path = Path(source)
        if not any(path.is_relative_to(folder) for folder in self.folders):
            return False
        return not any(path.is_relative_to(folder) for folder, _ in self.unreadable)


def _hidden(name: str) -> bool:
    return name.startswith(".") and name not in (".", "..")


def _walk(folder: Path, found: Discovery) -> None:
    def failed(error: OSError) -> None:
        where = error.filename or str(folder)
        found.unreadable.append((str(Path(where).resolve()), error.strerror or str(error)))

    for top, dirs, files in os.walk(folder, onerror=failed):
        kept = []
        for name in sorted(dirs):
            if _hidden(name):
                found.hidden += 1
            else:
                kept.append(name)
        dirs[:] = kept  # os.walk descends only into these, in this order
        for name in sorted(files):
            if _hidden(name):
                found.hidden += 1
                continue
            path = Path(top, name)
            if suffix_of(path) in SUFFIXES:
                found.files.append(path.resolve())
            elif path.is_file():
                found.unsupported[suffix_of(path) or "(no suffix)"] += 1


def discover(paths: Iterable[str | Path]) -> Discovery:
    """Walk the input paths (files are taken as named, folders recursively).

    A file named explicitly is taken whatever its name; its type is checked when it is read.

    Args:
        paths: files and folders.

    Returns:
        A :class:`Discovery`; files found twice are listed once.
    """
    found = Discovery()
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            folder = path.resolve()
            found.folders.append(folder)
            _walk(folder, found)
        elif path.exists():
            found.files.append(path.resolve())
        else:
            found.missing.append(str(raw))
    found.files = list(dict.fromkeys(found.files))
    return found


@dataclass
class LoadResult:
    """Documents read from some paths, and what could not be read as ``(path, reason)``."""

    documents: list[DocumentLike] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def load_paths(paths: Iterable[str | Path]) -> LoadResult:
    """Read every document under the given paths (a convenience for small collections).

    Text files stay :class:`~conan_rag.rag.sources.documents.TextFile` objects (read when used);
    files that cannot be read, missing paths and unlistable folders are listed in ``skipped``.

    Example:
        >>> result = load_paths(["conan_rag/corpus"])
        >>> len(result.documents), result.skipped
        (6, [])
    """
    found = discover(paths)
    result = LoadResult()
    result.skipped.extend((path, "no such file or folder") for path in found.missing)
    result.skipped.extend((path, f"cannot list it ({why})") for path, why in found.unreadable)
    for path in found.files:
        try:
            result.documents.extend(list(read_file(path)))  # all of a file, or none of it
        except LoaderError as exc:
            result.skipped.append((str(path), exc.reason))
    return result
