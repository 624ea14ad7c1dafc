"""A stable fingerprint of a model's files plus the settings that change its vectors.

Two encoders with the same fingerprint produce interchangeable vectors (up to float rounding),
whatever device or dtype they run on; a vector collection records it and refuses another.

Example:
    >>> from pathlib import Path
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp()); _ = (d / "a.json").write_text("{}")
    >>> file_digest(d / "a.json")[:12]
    '44136fa355b3'
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from pathlib import Path
from typing import Any

from conan_rag.forking import after_fork_in_child
from conan_rag.model.files import DEFINING_FILES, PYTORCH_BIN, SAFETENSORS

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_cache: dict[tuple[str, int, int], str] = {}
_cache_lock = threading.Lock()


def _new_lock_after_fork() -> None:
    """In a forked child: a fresh lock (a parent thread may have held it, hashing a file)."""
    global _cache_lock
    _cache_lock = threading.Lock()


after_fork_in_child(_new_lock_after_fork)


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, read from the Hugging Face cache's blob name when it is one."""
    real = Path(os.path.realpath(path))
    if real.parent.name == "blobs" and _HEX64.match(real.name):
        return real.name  # the hub stores LFS files under their sha256
    stat = real.stat()
    key = (str(real), stat.st_size, stat.st_mtime_ns)
    with _cache_lock:
        if key in _cache:
            return _cache[key]
    digest = hashlib.sha256()
    with real.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    with _cache_lock:
        _cache[key] = digest.hexdigest()
    return _cache[key]


def model_fingerprint(files_root: Path, module_dirs: list[Path], settings: dict[str, Any]) -> str:
    """Hash the files that define a model (weights, configs, tokenizer) and ``settings``.

    When a folder holds both ``model.safetensors`` and ``pytorch_model.bin``, only the one that
    is loaded (safetensors) is hashed.

    Args:
        files_root: the model folder.
        module_dirs: sub-folders of Pooling/Dense modules.
        settings: JSON-serializable settings that change the vectors (prompts, truncation, ...).

    Returns:
        A 16-hex-digit fingerprint.
    """
    parts: dict[str, Any] = {"settings": settings, "files": {}}
    for folder in [files_root, *module_dirs]:
        names = [n for n in DEFINING_FILES if (folder / n).is_file()]
        if SAFETENSORS in names and PYTORCH_BIN in names:
            names.remove(PYTORCH_BIN)
        for name in names:
            rel = str((folder / name).relative_to(files_root))
            parts["files"][rel] = file_digest(folder / name)
        config = folder / "config.json"
        if folder != files_root and config.is_file():
            parts["files"][str(config.relative_to(files_root))] = file_digest(config)
    blob = json.dumps(parts, sort_keys=True).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]
