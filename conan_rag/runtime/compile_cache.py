"""On-disk cache of compiled models: one folder per (model, dtype, torch, CPU), checked on load.

An entry lives under ``$XDG_CACHE_HOME/conan_rag/compiled/`` (default ``~/.cache``) in a folder
named ``<model fingerprint>-<dtype>-<environment hash>``, where the environment hash covers the
torch version, the CPU's model and flags, and the compiled shapes. It holds the artefact files
and ``manifest.json`` (the key, each file's sha256, the parity result). Entries are written into
a temporary folder and renamed into place, so a reader sees a whole entry or none; a reader
that finds a file missing or changed, or a manifest for another key, removes the entry.
Entries for the same model and dtype under another environment (a torch upgrade, another CPU
on a shared home) are stale: :func:`stale_entries` finds them.

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
    >>> read_entry(root, "m-float32-e", {"k": 1}) is None   # detected, removed
    True
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import platform
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = 1  # bump when the layout or the meaning of an entry changes


def cache_root() -> Path:
    """Where compiled entries live: ``$XDG_CACHE_HOME/conan_rag/compiled`` (``~/.cache``).

    Example:
        >>> cache_root().parts[-2:]
        ('conan_rag', 'compiled')
    """
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
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


def remove_entry(folder: Path, reason: str) -> None:
    """Delete an entry (moved aside first, so no reader sees half of it), logging why."""
    if not folder.exists():
        return
    logger.warning("Compiled cache entry %s is %s: removed (it will be rebuilt)", folder, reason)
    trash = folder.with_name(f".trash-{folder.name}-{os.getpid()}")
    try:
        os.replace(folder, trash)
    except OSError:
        trash = folder
    shutil.rmtree(trash, ignore_errors=True)


def read_entry(root: Path, name: str, key: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest of a whole, unchanged entry for ``key``; ``None`` when there is none.

    An entry with an unreadable manifest, another key, or a missing or changed file is
    removed (with a warning) and reported as absent: it is never used.
    """
    folder = root / name
    if not folder.is_dir():
        return None
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        remove_entry(folder, "corrupt (unreadable manifest)")
        return None
    if not isinstance(manifest, dict) or manifest.get("key") != {**key, "format": FORMAT}:
        remove_entry(folder, "stale (built for another model, torch or CPU)")
        return None
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        remove_entry(folder, "corrupt (no file list)")
        return None
    for filename, digest in files.items():
        path = folder / str(filename)
        if not path.is_file() or _sha256(path) != digest:
            remove_entry(folder, f"corrupt ({filename} missing or changed)")
            return None
    manifest["folder"] = str(folder)
    return manifest


def write_entry(
    root: Path, name: str, key: dict[str, Any], build: Callable[[Path], dict[str, Any]]
) -> Path:
    """Build an entry atomically: ``build(tmp)`` writes files and returns manifest fields.

    Every file ``build`` leaves in the folder is checksummed into the manifest; the folder is
    then renamed into place (replacing any entry of the same name).

    Returns:
        The entry's folder.
    """
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".build-{name}-", dir=root))
    try:
        fields = build(tmp)
        files = {p.name: _sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        manifest = {**fields, "key": {**key, "format": FORMAT}, "files": files}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        final = root / name
        if final.exists():  # an older (or concurrently built) entry: the new one replaces it
            trash = Path(tempfile.mkdtemp(prefix=f".trash-{name}-", dir=root))
            with contextlib.suppress(OSError):
                os.replace(final, trash / name)
            shutil.rmtree(trash, ignore_errors=True)
        try:
            os.replace(tmp, final)
        except OSError:  # another process renamed its build into place first: keep that one
            if not (final / MANIFEST).is_file():
                raise
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def stale_entries(root: Path, prefix: str, keep: str) -> list[Path]:
    """Entries whose name starts with ``prefix`` other than ``keep`` (other torch, CPU, ...).

    Example:
        >>> stale_entries(Path("/nonexistent"), "m-float32-", "m-float32-e")
        []
    """
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob(f"{prefix}*") if p.is_dir() and p.name != keep)
