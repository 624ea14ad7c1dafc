"""LlamaIndex reranker for conan-rag: any sentence-transformers CrossEncoder on plain torch.

``import llama_index.postprocessor.conan_rerank`` does not import torch; the first
``ConanRerank(...)`` does.

Example:
    >>> import tempfile
    >>> from conan_rag.testing import build_cross_encoder
    >>> from llama_index.postprocessor.conan_rerank import ConanRerank
    >>> folder = build_cross_encoder(tempfile.mkdtemp(), n_cjk=100)  # random weights
    >>> ConanRerank(folder, device="cpu").class_name()
    'ConanRerank'
"""

from __future__ import annotations

from llama_index.postprocessor.conan_rerank.base import ConanRerank

__all__ = ["ConanRerank"]
