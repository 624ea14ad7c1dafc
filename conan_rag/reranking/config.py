"""RerankerConfig now lives in :mod:`conan_rag.config` beside EncoderConfig (one settings base).

Example:
    >>> from conan_rag.config import RerankerConfig as Core
    >>> RerankerConfig is Core
    True
"""

from __future__ import annotations

from conan_rag.config import DEFAULT_RERANKER, RerankerConfig

__all__ = ["DEFAULT_RERANKER", "RerankerConfig"]
