"""On-disk cache of compiled models: one folder per (model, dtype, torch, CPU), checked on load.

An entry lives under ``$XDG_CACHE_HOME/conan_rag/compiled/`` (default ``~/.cache``) in a folder
named ``<model fingerprint>-<dtype>-<environment hash>``, where the environment hash covers the
torch version, the CPU's model and flags, and the compiled shapes. It holds the artefact files
and ``manifest.json`` (the key, each file's sha256, the parity result).

Writing is safe against crashes and other processes: an entry is built in a temporary
``.build-*`` folder (never read as an entry), its manifest written last, and the folder renamed
into place, so a reader sees a whole entry or none; builders of one entry take a file lock
(``.<name>.lock``), so a second process waits for the first one's build and then uses it, and
the lock's holder clears what killed builds left behind. Reading has no side effects: a
missing or changed file, or a manifest for another key, makes the entry absent; the next build
replaces it. A cache that cannot be written is found before a build starts
(:func:`require_writable` raises :class:`CacheNotWritableError`). Entries for the same model
and dtype under another environment (a torch upgrade, another CPU on a shared home) are stale:
:func:`stale_entries` finds them.

Example:
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> def build(folder: Path) -> dict[str, object]:
    ...     _ = (folder / "a.bin").write_bytes(b"compiled")
    ...     return {"parity_ok": True}
    >>> entry = write_entry(root, "m-float32-e", {"k": 1}, build)
    >>> read_entry(root, "m-float32-e", {"k": 1})["parity_ok"]
    True
    >>> _ = (entry / "a.bin").write_bytes(b"corrupt!")
    >>> check_entry(root, "m-float32-e", {"k": 1})
    (None, 'corrupt (a.bin missing or changed)')
    >>> read_entry(root, "m-float32-e", {"k": 1}) is None   # detected, removed
    True
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import os
import platform
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from conan_rag.errors import ConanRagError

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = 1  # bump when the layout or the meaning of an entry changes
CACHE_ENV = "XDG_CACHE_HOME"


class CacheNotWritableError(ConanRagError, PermissionError):
    """The compiled-model cache folder cannot be written, so no entry can be built there.

    Attributes:
        folder: the cache folder (``$XDG_CACHE_HOME/conan_rag/compiled``).
        reason: the operating system's words (``Permission denied``, ``Read-only file system``).
    """

    def __init__(self, folder: str | Path, reason: str) -> None:
        super().__init__(
            f"The compiled-model cache {folder} is not writable ({reason}), so the compiled "
            f"CPU forward cannot be built there. Set {CACHE_ENV} to a writable folder (entries "
            f"go to ${CACHE_ENV}/conan_rag/compiled) or make {folder} writable; compile='auto' "
            "runs eager meanwhile, compile='off' skips the cache."
        )
        self.folder = Path(folder)
        self.reason = reason


def cache_root() -> Path:
    """Where compiled entries live: ``$XDG_CACHE_HOME/conan_rag/compiled`` (``~/.cache``).

    Example:
        >>> cache_root().parts[-2:]
        ('conan_rag', 'compiled')
    """
    base = os.environ.get(CACHE_ENV) or str(Path.home() / ".cache")
    return Path(base) / "conan_rag" / "compiled"


@functools.cache
def cpu_signature() -> str:
    """The CPU's model name and flags (what generated code may depend on), as one string.

    Example:
        >>> isinstance(cpu_signature(), str)
        True
    """
    model, flags = platform.processor() or platform.machine(), ""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        if line.startswith("model name") and model in ("", platform.machine()):
            model = line.split(":", 1)[1].strip()
        if line.startswith(("flags", "Features")) and not flags:
            flags = " ".join(sorted(line.split(":", 1)[1].split()))
    return f"{model}|{flags}"


def short_hash(data: Any) -> str:
    """16 hex digits of the sha256 of ``data`` as sorted JSON.

    Example:
        >>> short_hash({"a": 1}) == short_hash({"a": 1})
        True
    """
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _os_reason(exc: OSError) -> str:
    words = exc.strerror or type(exc).__name__
    return f"{words}: {exc.filename}" if exc.filename else words


def write_problem(root: Path) -> str | None:
    """Why an entry cannot be written under ``root`` (``None``: it can), found by trying.

    It creates ``root`` if missing and a probe folder in it (removed at once): permission bits,
    a read-only mount and a missing capability all show, as they would to a build.

    Example:
        >>> write_problem(Path("/proc/conan_rag/compiled")) is not None
        True
    """
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return _os_reason(exc)  # names the folder it could not create
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".probe-", dir=root))
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None


def require_writable(root: Path) -> None:
    """Raise :class:`CacheNotWritableError` unless an entry can be written under ``root``."""
    problem = write_problem(root)
    if problem is not None:
        raise CacheNotWritableError(root, problem)


def remove_entry(folder: Path, reason: str) -> bool:
    """Delete an entry (moved aside first, so no reader sees half of it), logging why.

    Returns:
        Whether the entry is gone (``False``: it could not be removed; the warning says so).
    """
    if not folder.exists():
        return True
    trash = folder.with_name(f".trash-{folder.name}-{os.getpid()}")
    try:
        os.replace(folder, trash)
    except OSError as exc:
        logger.warning(
            "Compiled cache entry %s is %s and could not be removed (%s)",
            folder,
            reason,
            _os_reason(exc),
        )
        return False
    shutil.rmtree(trash, ignore_errors=True)  # leftovers are cleared by the next builder
    logger.warning("Compiled cache entry %s is %s: removed", folder, reason)
    return True


def check_entry(
    root: Path, name: str, key: dict[str, Any]
) -> tuple[dict[str, Any] | None, str | None]:
    """``(manifest, None)`` for a whole, unchanged entry for ``key``, else ``(None, problem)``.

    ``problem`` is ``None`` when there is no entry and a few words (``"corrupt (...)"``,
    ``"stale (...)"``) for one that must not be used. Nothing is changed on disk.
    """
    folder = root / name
    if not folder.is_dir():
        return None, None
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, "corrupt (unreadable manifest)"
    if not isinstance(manifest, dict) or manifest.get("key") != {**key, "format": FORMAT}:
        return None, "stale (built for another model, torch or CPU)"
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        return None, "corrupt (no file list)"
    for filename, digest in files.items():
        path = folder / str(filename)
        try:
            same = path.is_file() and _sha256(path) == digest
        except OSError:
            same = False
        if not same:
            return None, f"corrupt ({filename} missing or changed)"
    manifest["folder"] = str(folder)
    return manifest, None


def read_entry(root: Path, name: str, key: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest of a whole, unchanged entry for ``key``; ``None`` when there is none.

    An entry :func:`check_entry` rejects is removed (with a warning) and reported as absent.
    """
    manifest, problem = check_entry(root, name, key)
    if problem is not None:
        remove_entry(root / name, problem)
    return manifest


@contextlib.contextmanager
def build_lock(root: Path, name: str) -> Iterator[None]:
    """Hold ``root/.<name>.lock`` (waiting, with a warning, while another process builds)."""
    path = root / f".{name}.lock"
    with path.open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.warning("Waiting for another process building %s (lock %s)", name, path)
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield  # released when the file is closed (also when the process dies)


def _clear_leftovers(root: Path, name: str) -> None:
    """Remove what killed builds and removals of ``name`` left (the lock is held)."""
    for pattern in (f".build-{name}-*", f".trash-{name}-*"):
        for folder in root.glob(pattern):
            shutil.rmtree(folder, ignore_errors=True)


def write_entry(
    root: Path, name: str, key: dict[str, Any], build: Callable[[Path], dict[str, Any]]
) -> Path:
    """Build an entry atomically: ``build(tmp)`` writes files and returns manifest fields.

    Under the entry's lock: an entry another process finished meanwhile is kept (``build`` is
    not called); else ``build`` runs in a temporary folder, every file it leaves there is
    checksummed into the manifest, and the folder is renamed into place, replacing a corrupt
    or stale entry of the same name. A failed or interrupted build leaves no entry.

    Returns:
        The entry's folder.

    Raises:
        CacheNotWritableError: ``root`` cannot be written (found before ``build`` runs).
    """
    require_writable(root)
    final = root / name
    with build_lock(root, name):
        manifest, problem = check_entry(root, name, key)
        if manifest is not None:
            return final
        _clear_leftovers(root, name)
        if problem is not None and not remove_entry(final, problem):
            raise CacheNotWritableError(root, f"cannot remove {final}")
        tmp = Path(tempfile.mkdtemp(prefix=f".build-{name}-", dir=root))
        try:
            fields = build(tmp)
            files = {p.name: _sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
            manifest = {**fields, "key": {**key, "format": FORMAT}, "files": files}
            text = json.dumps(manifest, indent=2) + "\n"
            try:
                (tmp / MANIFEST).write_text(text, encoding="utf-8")
                os.replace(tmp, final)
            except OSError as exc:  # a full disk, a cache made read-only meanwhile
                raise CacheNotWritableError(root, _os_reason(exc)) from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def stale_entries(root: Path, prefix: str, keep: str) -> list[Path]:
    """Entries whose name starts with ``prefix`` other than ``keep`` (other torch, CPU, ...).

    Example:
        >>> stale_entries(Path("/nonexistent"), "m-float32-", "m-float32-e")
        []
    """
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob(f"{prefix}*") if p.is_dir() and p.name != keep)
