"""Writing the JSON files of a test model folder.

Example:
    >>> import json, tempfile
    >>> from pathlib import Path
    >>> path = Path(tempfile.mkdtemp()) / "config.json"
    >>> write_json(path, {"a": 1})
    >>> json.loads(path.read_text())
    {'a': 1}
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["write_json"]


def write_json(path: Path, data: object) -> None:
    """Write ``data`` as indented JSON (UTF-8, trailing newline)."""
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
