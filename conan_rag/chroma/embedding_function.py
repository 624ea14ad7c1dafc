"""ConanEmbeddingFunction: a Chroma embedding function on the shared encoder, saved as config.

Chroma stores ``name()`` and ``get_config()`` with a collection and rebuilds the function with
:meth:`ConanEmbeddingFunction.build_from_config` when the collection is opened by name alone.
Device and dtype are chosen by the machine that opens it (``"auto"``), or by the
``CONAN_RAG_DEVICE`` and ``CONAN_RAG_DTYPE`` environment variables; ``CONAN_RAG_ENDPOINT``
embeds on a ``conan-rag serve`` server instead.

Example:
    >>> from conan_rag.chroma import ConanEmbeddingFunction
    >>> ef = ConanEmbeddingFunction("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    >>> ef(["Paris is in France."])[0].shape
    (384,)
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any

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

from conan_rag.adapter_kit import open_encoder, translate_options, with_positional_model
from conan_rag.config import EncoderConfig
from conan_rag.errors import CollectionMismatchError, ConanConfigError
from conan_rag.registry import load_encoder

if TYPE_CHECKING:
    from conan_rag.inputs import Kind
    from conan_rag.protocols import EncoderLike

NAME = "conan-rag"
DEVICE_ENV = "CONAN_RAG_DEVICE"
DTYPE_ENV = "CONAN_RAG_DTYPE"
ENDPOINT_ENV = "CONAN_RAG_ENDPOINT"
# Settings that change the vectors: what a collection records, and may not change.
VECTOR_SETTINGS = (
    "model",
    "revision",
    "query_prompt",
    "document_prompt",
    "truncate_dim",
    "max_seq_length",
    "normalize",
)
FINGERPRINT = "fingerprint"
_ENCODER_FIELDS = frozenset(f.name for f in dataclasses.fields(EncoderConfig))
# Keys a stored config may hold: today's, plus the full EncoderConfig that 0.2 recorded
# (its device, dtype and batching keys are ignored when rebuilding).
_STORED_KEYS = frozenset({*VECTOR_SETTINGS, FINGERPRINT, *_ENCODER_FIELDS})
_PRIMITIVES = (str, int, float, bool, type(None))


@register_embedding_function
class ConanEmbeddingFunction(EmbeddingFunction[Documents]):
    """Chroma embedding function backed by the process-wide shared :class:`Encoder`.

    Documents get the document prompt, query texts (``collection.query(query_texts=...)``) the
    query prompt. Vectors are L2-normalized, so ``"cosine"`` (the default space), ``"ip"`` and
    ``"l2"`` rank results identically. It pickles and copies by its settings.

    Args:
        model: model folder, hub id from the local cache, or
            ``"sentence-transformers/all-MiniLM-L6-v2"``; default Conan-embedding-v1
            (``model_name=`` is accepted too, as in Chroma's sentence-transformers function).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
        dtype: ``"auto"``, ``"float32"``, ``"bfloat16"`` or ``"float16"``.
        config: a whole :class:`EncoderConfig`; the other arguments override its fields.
        **settings: the other options every conan-rag adapter shares (``revision``,
            ``query_prompt``, ``document_prompt``, ``truncate_dim``, ``max_seq_length``,
            ``token_budget``, ``max_batch_size``, ``normalize``), under those names or their
            ecosystem names (``normalize_embeddings``, ...).

    Example:
        >>> ef = ConanEmbeddingFunction("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
        >>> ConanEmbeddingFunction.build_from_config(ef.get_config()).encoder is ef.encoder
        True
    """

    def __init__(
        self,
        model: str | None = None,
        /,
        *,
        device: str = "auto",
        dtype: str = "auto",
        config: EncoderConfig | None = None,
        **settings: Any,
    ) -> None:
        options = translate_options(with_positional_model(model, settings))
        if options.get("endpoint"):  # a conan-rag server's encoder
            if config is not None or device != "auto" or dtype != "auto":
                raise ConanConfigError(
                    "config, device and dtype are decided by the server; leave them out with an "
                    "endpoint.",
                    setting="endpoint",
                )
            self._normalize = _check_normalize(options.pop("normalize", True))
            self._encoder = open_encoder(options)
            return
        options.pop("endpoint", None)
        options.pop("api_key", None)
        model = options.pop("model", None)
        self._normalize = _check_normalize(options.pop("normalize", True))
        self._encoder = load_encoder(model, device=device, dtype=dtype, config=config, **options)

    @classmethod
    def from_encoder(
        cls, encoder: EncoderLike, *, normalize: bool = True
    ) -> ConanEmbeddingFunction:
        """Wrap an encoder you already hold (same settings, same shared instance).

        Example:
            >>> from conan_rag import load_encoder
            >>> enc = load_encoder("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
            >>> ConanEmbeddingFunction.from_encoder(enc).encoder is enc
            True
        """
        ef = cls.__new__(cls)  # the encoder is held already: nothing to load or connect
        ef._encoder = encoder
        ef._normalize = _check_normalize(normalize)
        return ef

    @property
    def encoder(self) -> EncoderLike:
        """The shared encoder doing the work."""
        return self._encoder

    @property
    def normalize(self) -> bool:
        """Whether the vectors are L2-normalized."""
        return self._normalize

    def __repr__(self) -> str:
        return f"ConanEmbeddingFunction({self._encoder!r}, normalize={self._normalize})"

    def _embed(self, texts: Documents, kind: Kind) -> Embeddings:
        if isinstance(texts, str):
            texts = [texts]
        vectors = self._encoder.encode(list(texts), kind=kind, normalize=self._normalize)
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
        """What changes the vectors, as JSON primitives; no device, dtype or batch sizes.

        Example:
            >>> ef = ConanEmbeddingFunction("sentence-transformers/all-MiniLM-L6-v2")
            >>> sorted(ef.get_config())  # doctest: +NORMALIZE_WHITESPACE
            ['document_prompt', 'fingerprint', 'max_seq_length', 'model', 'normalize',
             'query_prompt', 'revision', 'truncate_dim']
        """
        config = self._encoder.config
        return {
            "model": self._encoder.model_id,
            "revision": config.revision,
            "query_prompt": config.query_prompt,
            "document_prompt": config.document_prompt,
            "truncate_dim": config.truncate_dim,
            "max_seq_length": config.max_seq_length,
            "normalize": self._normalize,
            FINGERPRINT: self._encoder.fingerprint,
        }

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> ConanEmbeddingFunction:
        """Rebuild from :meth:`get_config` output on this machine's device and dtype.

        Device and dtype are ``"auto"`` unless ``CONAN_RAG_DEVICE`` / ``CONAN_RAG_DTYPE`` are
        set; with ``CONAN_RAG_ENDPOINT`` set, a server embeds (its fingerprint is checked).
        Device, dtype and batch settings a 0.2 collection recorded are ignored. The shared
        encoder is reused when it is loaded.

        Raises:
            ConanConfigError: an unknown key or a value of the wrong type.
            CollectionMismatchError: the model files here differ from the ones the collection
                was built with (their fingerprints differ).

        Example:
            >>> stored = {"model": "sentence-transformers/all-MiniLM-L6-v2", "device": "cuda"}
            >>> ConanEmbeddingFunction.build_from_config(stored).encoder.device
            'cpu'
        """
        ConanEmbeddingFunction.validate_config(config)
        settings = {k: v for k, v in config.items() if k in VECTOR_SETTINGS}
        endpoint = os.environ.get(ENDPOINT_ENV, "").strip()
        if endpoint:  # embed on a conan-rag server (its key from CONAN_RAG_API_KEY)
            ef = ConanEmbeddingFunction(endpoint=endpoint, **settings)
        else:
            ef = ConanEmbeddingFunction(
                device=os.environ.get(DEVICE_ENV, "").strip() or "auto",
                dtype=os.environ.get(DTYPE_ENV, "").strip() or "auto",
                **settings,
            )
        recorded = config.get(FINGERPRINT)
        if recorded is not None and recorded != ef.encoder.fingerprint:
            raise CollectionMismatchError(
                f"The collection's vectors were made from other model files than those of "
                f"{ef.encoder.model_id!r} here (fingerprint {str(recorded)[:12]} recorded, "
                f"{ef.encoder.fingerprint[:12]} here); use the model files it was built with, "
                "or re-embed into a new collection.",
                collection=None,
                recorded_model=str(config.get("model")),
                offered_model=ef.encoder.model_id,
            )
        return ef

    @staticmethod
    def validate_config(config: dict[str, Any]) -> None:
        """Check a stored config: known keys only, JSON primitives, valid values.

        Raises:
            ConanConfigError: names the offending key(s) and lists the valid ones.

        Example:
            >>> ConanEmbeddingFunction.validate_config({"model": "x", "colour": "red"})
            Traceback (most recent call last):
            ...
            conan_rag.errors.ConanConfigError: Unknown setting(s) ['colour'] in a conan-rag ...
        """
        if not isinstance(config, dict):
            raise ConanConfigError(
                f"A {NAME} embedding function config must be a dict, not {type(config).__name__}.",
                setting="config",
            )
        unknown = sorted(set(config) - _STORED_KEYS)
        if unknown:
            raise ConanConfigError(
                f"Unknown setting(s) {unknown} in a {NAME} embedding function config; valid "
                f"settings are {sorted(_STORED_KEYS)}. Remove them from the collection's "
                "embedding_function config.",
                setting=unknown[0],
                choices=sorted(_STORED_KEYS),
            )
        for key, value in config.items():
            if not isinstance(value, _PRIMITIVES):
                raise ConanConfigError(
                    f"Setting {key!r} is a {type(value).__name__}; stored settings must be str, "
                    "int, float, bool or None.",
                    setting=key,
                    value=value,
                )
        EncoderConfig.from_dict({k: v for k, v in config.items() if k in _ENCODER_FIELDS})

    def validate_config_update(
        self, old_config: dict[str, Any], new_config: dict[str, Any]
    ) -> None:
        """Refuse a change of what the vectors are (model, prompts, sizes, normalization).

        Chroma calls this when a collection's embedding function is replaced; conan-rag also
        calls it when a collection is opened with a function (see :func:`check_reopen`).

        Raises:
            ConanConfigError: a setting in :data:`VECTOR_SETTINGS` (or the model files'
                fingerprint) differs; the message names it. Vectors already stored would no
                longer match new ones: re-embed into a new collection instead.
        """
        self.validate_config(new_config)
        changed = _changed_settings(old_config, new_config)
        if changed:
            raise ConanConfigError(
                "This collection's vectors were made with "
                + ", ".join(f"{k}={old_config.get(k, _default(k))!r}" for k in changed)
                + "; the embedding function offered has "
                + ", ".join(f"{k}={new_config.get(k, _default(k))!r}" for k in changed)
                + ". Open the collection without an embedding function (it rebuilds the "
                "recorded one), or create a new collection and re-add the documents.",
                setting=changed[0],
            )


def _check_normalize(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConanConfigError(
            f"normalize must be True or False, not {value!r}.",
            setting="normalize",
            value=value,
            choices=(True, False),
        )
    return value


def _default(key: str) -> Any:
    """The value a setting has when a stored config does not name it."""
    if key == "normalize":
        return True
    return getattr(EncoderConfig(), key, None)


def _changed_settings(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    changed = [k for k in VECTOR_SETTINGS if old.get(k, _default(k)) != new.get(k, _default(k))]
    # The fingerprint covers the settings too: on its own it means other model files.
    if not changed and old.get(FINGERPRINT) and new.get(FINGERPRINT) != old[FINGERPRINT]:
        changed.append(FINGERPRINT)
    return changed
