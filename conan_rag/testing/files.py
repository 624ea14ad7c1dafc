"""Writing the files of a test model folder: its JSON files and its weights.

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
from typing import Any

__all__ = ["save_weights", "write_json"]


def write_json(path: Path, data: object) -> None:
    """Write ``data`` as indented JSON (UTF-8, trailing newline)."""
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def save_weights(model: Any, root: Path, weights: str) -> None:
    """Save a transformers model's weights: ``"safetensors"``, ``"bin"`` or ``"both"``."""
    import torch

    if weights in ("safetensors", "both"):
        model.save_pretrained(str(root), safe_serialization=True)
    if weights in ("bin", "both"):
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        torch.save(state, root / "pytorch_model.bin")
