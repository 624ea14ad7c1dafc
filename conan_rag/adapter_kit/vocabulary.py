"""The option names every conan-rag adapter shares, and the names other libraries use for them.

Example:
    >>> from conan_rag.adapter_kit import ECOSYSTEM_NAMES, VOCABULARY
    >>> ECOSYSTEM_NAMES["model_name"] in VOCABULARY
    True
"""

from __future__ import annotations

from typing import Any

# The options every adapter has, under these names.
VOCABULARY: tuple[str, ...] = (
    "model",
    "revision",
    "device",
    "dtype",
    "query_prompt",
    "document_prompt",
    "truncate_dim",
    "max_seq_length",
    "token_budget",
    "max_batch_size",
    "normalize",
    "endpoint",
    "api_key",
)
# A conan-rag server instead of a model in this process (conan_rag.remote).
REMOTE_OPTIONS: tuple[str, ...] = ("endpoint", "api_key")
# Options the server decides; with an endpoint they must keep their defaults.
SERVER_DECIDES: dict[str, Any] = {
    "revision": None,
    "device": "auto",
    "dtype": "auto",
    "query_prompt": None,
    "document_prompt": None,
    "max_seq_length": None,
    "token_budget": None,
}
# Options that pick the encoder (the rest, like ``normalize``, apply per call).
ENCODER_OPTIONS: tuple[str, ...] = tuple(o for o in VOCABULARY if o != "normalize")
# Names other libraries use for our options.
ECOSYSTEM_NAMES: dict[str, str] = {
    "model_name": "model",  # HuggingFaceEmbeddings, HuggingFaceEmbedding, Chroma's ST function
    "query_instruction": "query_prompt",  # LlamaIndex
    "text_instruction": "document_prompt",  # LlamaIndex
    "normalize_embeddings": "normalize",  # sentence-transformers, Chroma's ST function
    "max_length": "max_seq_length",  # LlamaIndex's HuggingFaceEmbedding
}
KWARG_DICTS: tuple[str, ...] = ("model_kwargs", "encode_kwargs", "query_encode_kwargs")
