"""The Ray engine: the ingest's plan and row stream cut and embedded on Ray Data.

Needs the ``ray`` extra (``pip install 'conan-rag[ray]'``); Ray is imported only when a run
starts.

Example:
    >>> from conan_rag.rag.ingest.ray import RayEngine
    >>> RayEngine(encoders=2).to_dict()["encoders"]
    2
"""

from __future__ import annotations

from conan_rag.rag.ingest.ray.engine import RayEngine, RayRun
from conan_rag.rag.ingest.ray.runtime import (
    ADDRESSES,
    noting_sigint,
    ray_runtime,
    retryable_errors,
)

__all__ = ["ADDRESSES", "RayEngine", "RayRun", "noting_sigint", "ray_runtime", "retryable_errors"]
