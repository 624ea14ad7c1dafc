"""Tiny random-weight models for tests, notebooks and benchmarks.

The real weights cannot be downloaded everywhere, so these builders write folders with
Conan-embedding-v1's exact layout (:mod:`~conan_rag.testing.embedding`) and sentence-transformers
``CrossEncoder`` folders (:mod:`~conan_rag.testing.cross_encoder`), with the vocabularies they
use (:mod:`~conan_rag.testing.vocab`), and a probe that an event loop stays free
(:mod:`~conan_rag.testing.event_loop`), and a ``conan-rag serve`` process for benchmarks
(:mod:`~conan_rag.testing.server_process`).

Example:
    >>> import tempfile
    >>> from conan_rag.testing import build_conan_layout_model, build_cross_encoder
    >>> build_conan_layout_model(tempfile.mkdtemp(), hidden_size=32, num_layers=1).is_dir()
    True
    >>> build_cross_encoder(tempfile.mkdtemp(), n_cjk=10).is_dir()
    True
"""

from __future__ import annotations

from conan_rag.testing.cross_encoder import build_cross_encoder
from conan_rag.testing.embedding import build_conan_layout_model
from conan_rag.testing.event_loop import LoopProbe
from conan_rag.testing.files import write_json
from conan_rag.testing.server_process import start_serve_process
from conan_rag.testing.vocab import SPECIAL_TOKENS, chinese_vocab, xlmr_vocab

__all__ = [
    "SPECIAL_TOKENS",
    "LoopProbe",
    "build_conan_layout_model",
    "build_cross_encoder",
    "chinese_vocab",
    "start_serve_process",
    "write_json",
    "xlmr_vocab",
]
