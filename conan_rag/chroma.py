"""ConanEmbeddingFunction: a Chroma embedding function on the shared encoder, saved as config.

Chroma stores ``name()`` and ``get_config()`` with a collection; importing this module registers
the class, so another process that imports it reopens the collection with the same encoder
rebuilt by :meth:`ConanEmbeddingFunction.build_from_config`.

Example:
    >>> import chromadb
    >>> from conan_rag.chroma import ConanEmbeddingFunction
    >>> ef = ConanEmbeddingFunction("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    >>> col = chromadb.EphemeralClient().create_collection("facts", embedding_function=ef)
    >>> col.add(ids=["1", "2"], documents=["Paris is in France.", "Bananas are yellow."])
    >>> col.query(query_texts=["French capital"], n_results=1)["ids"]
    [['1']]
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

try:
    from chromadb.api.types import (
        Documents,
        EmbeddingFunction,
        Embeddings,
        Space,
        validate_embeddings,
    )
    from chromadb.utils.embedding_functions import register_embedding_function
except ImportError as exc:  # pragma: no cover - exercised only without the extra installed
    raise ImportError(
        "conan_rag.chroma needs chromadb; install it with `pip install 'conan-rag[rag]'`."
    ) from exc

from conan_rag.config import EncoderConfig
from conan_rag.encoder import Encoder, Kind
from conan_rag.errors import ConanConfigError
from conan_rag.registry import load_encoder

NAME = "conan-rag"
# Settings that change the vectors; a collection's embedding function may not change them.
VECTOR_SETTINGS = (
    "model",
    "revision",
    "query_prompt",
    "document_prompt",
    "truncate_dim",
    "max_seq_length",
)
_PRIMITIVES = (str, int, float, bool, type(None))


@register_embedding_function
class ConanEmbeddingFunction(EmbeddingFunction[Documents]):
    """Chroma embedding function backed by the process-wide shared :class:`Encoder`.

    Documents get the document prompt, query texts (``collection.query(query_texts=...)``) the
    query prompt. Vectors are L2-normalized, so ``"cosine"`` (the default space), ``"ip"`` and
    ``"l2"`` rank results identically.

    Args:
        model: model folder, hub id from the local cache, or
            ``"sentence-transformers/all-MiniLM-L6-v2"``; default Conan-embedding-v1.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
        dtype: ``"auto"``, ``"float32"``, ``"bfloat16"`` or ``"float16"``.
        config: a whole :class:`EncoderConfig`; the other arguments override its fields.
        **settings: other :class:`EncoderConfig` fields (``query_prompt``, ``truncate_dim``, ...).

    Example:
        >>> ef = ConanEmbeddingFunction("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
        >>> ConanEmbeddingFunction.build_from_config(ef.get_config()).encoder is ef.encoder
        True
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str = "auto",
        dtype: str = "auto",
        config: EncoderConfig | None = None,
        **settings: Any,
    ) -> None:
        self._encoder = load_encoder(model, device=device, dtype=dtype, config=config, **settings)

    @classmethod
    def from_encoder(cls, encoder: Encoder) -> ConanEmbeddingFunction:
        """Wrap an encoder you already hold (same settings, same shared instance).

        Example:
            >>> from conan_rag import load_encoder
            >>> enc = load_encoder("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
            >>> ConanEmbeddingFunction.from_encoder(enc).encoder is enc
            True
        """
        return cls(config=encoder.config)

    @property
    def encoder(self) -> Encoder:
        """The shared encoder doing the work."""
        return self._encoder

    def __repr__(self) -> str:
        return f"ConanEmbeddingFunction({self._encoder!r})"

    def _embed(self, texts: Documents, kind: Kind) -> Embeddings:
        if isinstance(texts, str):
            texts = [texts]
        vectors = self._encoder.encode(list(texts), kind=kind)
        return list(np.ascontiguousarray(vectors))

    def __call__(self, input: Documents) -> Embeddings:  # Chroma passes input=...
        """Embed documents (with the document prompt): one float32 vector per document."""
        return self._embed(input, "document")

    def embed_query(self, input: Documents) -> Embeddings:  # Chroma passes input=...
        """Embed query texts (with the query prompt): one float32 vector per query."""
        return validate_embeddings(self._embed(input, "query"))

    @staticmethod
    def name() -> str:
        """The name Chroma stores with a collection and looks this class up by."""
        return NAME

    def default_space(self) -> Space:
        """``"cosine"``: the vectors are normalized and the models are trained for it."""
        return "cosine"

    def supported_spaces(self) -> list[Space]:
        """All three of Chroma's spaces rank normalized vectors the same way."""
        return ["cosine", "ip", "l2"]

    def get_config(self) -> dict[str, Any]:
        """The :class:`EncoderConfig` as JSON primitives (a local model as an absolute path)."""
        config = self._encoder.config.to_dict()
        config["model"] = self._encoder.model_id
        return config

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> ConanEmbeddingFunction:
        """Rebuild from :meth:`get_config` output (reusing the shared encoder when loaded).

        Raises:
            ConanConfigError: an unknown key or a value of the wrong type.
        """
        ConanEmbeddingFunction.validate_config(config)
        return ConanEmbeddingFunction(config=EncoderConfig.from_dict(config))

    @staticmethod
    def validate_config(config: dict[str, Any]) -> None:
        """Check a stored config: known keys only, JSON primitives, valid values.

        Raises:
            ConanConfigError: names the offending key(s) and lists the valid ones.

        Example:
            >>> ConanEmbeddingFunction.validate_config({"model": "x", "colour": "red"})
            Traceback (most recent call last):
            ...
            conan_rag.errors.ConanConfigError: Unknown encoder setting(s) ['colour']; ...
        """
        if not isinstance(config, dict):
            raise ConanConfigError(
                f"A {NAME} embedding function config must be a dict, not {type(config).__name__}.",
                setting="config",
            )
        valid = {f.name for f in dataclasses.fields(EncoderConfig)}
        unknown = sorted(set(config) - valid)
        if unknown:
            raise ConanConfigError(
                f"Unknown encoder setting(s) {unknown}; valid settings are {sorted(valid)}. "
                "Remove them from the collection's embedding_function config.",
                setting=unknown[0],
                choices=sorted(valid),
            )
        for key, value in config.items():
            if not isinstance(value, _PRIMITIVES):
                raise ConanConfigError(
                    f"Encoder setting {key!r} is a {type(value).__name__}; stored settings must "
                    "be str, int, float, bool or None.",
                    setting=key,
                    value=value,
                )
        EncoderConfig.from_dict(config)  # value checks (positive sizes, ...)

    def validate_config_update(
        self, old_config: dict[str, Any], new_config: dict[str, Any]
    ) -> None:
        """Allow changing how vectors are computed (device, dtype, batching), not what they are.

        Raises:
            ConanConfigError: a setting in :data:`VECTOR_SETTINGS` changed; the message names
                it. Vectors already stored would no longer match new ones: re-embed into a new
                collection instead.
        """
        self.validate_config(new_config)
        defaults = EncoderConfig().to_dict()
        changed = [
            key
            for key in VECTOR_SETTINGS
            if old_config.get(key, defaults[key]) != new_config.get(key, defaults[key])
        ]
        if changed:
            raise ConanConfigError(
                f"Changing {changed} would make new vectors incomparable with the ones stored; "
                "create a new collection with this embedding function and re-add the documents.",
                setting=changed[0],
            )
