"""Paths → the files to ingest, and an account of everything that was not taken.

Folders are walked recursively in sorted order. Hidden files and folders (names starting with a
dot, such as ``.git`` or ``.venv``) are skipped unless named explicitly; a folder that cannot be
listed is reported, never silently left out, and what is stored from under it is protected from
pruning (:attr:`Discovery.unreadable`). Named paths that do not exist are collected in
:attr:`Discovery.missing` so the caller can refuse before doing anything.

Symbolic links are followed, and files are kept under the path they were found at (a linked file
is stored under the link, inside the folder that was ingested, so ``--prune`` sees it). A folder
reached a second time (a link loop, or two links to one folder) is walked once; the later paths
and broken links are listed in :attr:`Discovery.skipped` with the reason, and what is stored
under them is protected from pruning, like an unreadable folder.

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
        skipped: links left out (absolute, as found), with the reason: broken links, and
            folders reached a second time through a link.
    """

    files: list[Path] = field(default_factory=list)
    folders: list[Path] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    unsupported: Counter[str] = field(default_factory=Counter)
    hidden: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def covers(self, source: str) -> bool:
        """Whether ``source`` lies under a folder that was walked completely."""
        path = Path(source)
        if not any(path.is_relative_to(folder) for folder in self.folders):
            return False
        left_out = (*self.unreadable, *self.skipped)
        return not any(path.is_relative_to(folder) for folder, _ in left_out)


def _hidden(name: str) -> bool:
    return name.startswith(".") and name not in (".", "..")


def _identity(path: Path) -> tuple[int, int] | None:
    """``(device, inode)`` of what ``path`` points at; ``None`` if it cannot be reached."""
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _walk(folder: Path, found: Discovery, walked: dict[tuple[int, int], Path]) -> None:
    """Walk ``folder``, following links; ``walked`` maps each folder walked to its first path."""

    def failed(error: OSError) -> None:
        where = error.filename or str(folder)
        found.unreadable.append((os.path.abspath(where), error.strerror or str(error)))

    for top, dirs, files in os.walk(folder, onerror=failed, followlinks=True):
        kept = []
        for name in sorted(dirs):
            if _hidden(name):
                found.hidden += 1
            elif _enter(Path(top, name), folder, found, walked):
                kept.append(name)
        dirs[:] = kept  # os.walk descends only into these, in this order
        for name in sorted(files):
            if _hidden(name):
                found.hidden += 1
            else:
                _take_file(Path(top, name), found)


def _enter(path: Path, root: Path, found: Discovery, walked: dict[tuple[int, int], Path]) -> bool:
    """Whether to walk the folder at ``path``; a link left out is listed with the reason."""
    if path.is_symlink():
        target = path.resolve()
        inside = target.is_relative_to(root) and not any(
            _hidden(part) for part in target.relative_to(root).parts
        )
        if inside:  # walked (or to be walked) at its own path inside the folder
            kind = "symlink loop" if path.is_relative_to(target) else "link inside the folder"
            found.skipped.append((str(path), f"{kind}: {target} is walked at its own path"))
            return False
    identity = _identity(path)
    if identity is None:  # gone since it was listed: os.walk reports it if it cannot list it
        return True
    first = walked.setdefault(identity, path)
    if first is path:
        return True
    if path.is_symlink():  # a folder outside reached twice: through a loop, or two links
        kind = "symlink loop" if path.is_relative_to(first) else "linked folder"
        found.skipped.append((str(path), f"{kind}: the same folder as {first}, walked there"))
    return False  # a folder named as input and also found inside another: walked once


def _broken(link: Path) -> str:
    return f"broken symlink: its target {os.readlink(link)} does not exist"


def _take_file(path: Path, found: Discovery) -> None:
    if path.is_symlink() and not path.exists():
        found.skipped.append((str(path), _broken(path)))
    elif suffix_of(path) in SUFFIXES:
        found.files.append(path)
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
    walked: dict[tuple[int, int], Path] = {}
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            folder = path.resolve()  # a named folder is stored under its real path
            found.folders.append(folder)
            identity = _identity(folder)
            if identity is not None and walked.setdefault(identity, folder) is folder:
                _walk(folder, found, walked)
        elif path.exists():
            found.files.append(path.parent.resolve() / path.name)  # a named link stays a link
        elif path.is_symlink():
            found.skipped.append((str(path.absolute()), _broken(path)))
        else:
            found.missing.append(str(raw))
    found.files = _once(found.files)
    return found


def _once(files: list[Path]) -> list[Path]:
    """``files`` without repeats, in order.

    A file also reached through a link is kept at its own path if it was found there, else at
    the first link to it.
    """
    links = {path: _identity(path) for path in files if path.is_symlink()}
    own = {_identity(path) for path in files if path not in links} if links else set()
    taken: set[object] = set()
    kept = []
    for path in files:
        key = links.get(path) or path
        if key in taken or (path in links and key in own):
            continue
        taken.add(key)
        kept.append(path)
    return kept


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
    result.skipped.extend(found.skipped)
    for path in found.files:
        try:
            result.documents.extend(list(read_file(path)))  # all of a file, or none of it
        except LoaderError as exc:
            result.skipped.append((str(path), exc.reason))
    return result
