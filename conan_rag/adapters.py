"""One vocabulary for every adapter (LangChain, LlamaIndex, Chroma), and how they hold an encoder.

Every adapter takes the same option names for the same things (:data:`VOCABULARY`), also
accepts its ecosystem's customary names (:data:`ECOSYSTEM_NAMES`: ``model_name``,
``query_instruction``, ``normalize_embeddings``, ...) and translates the
``model_kwargs``/``encode_kwargs``/``query_encode_kwargs`` of sentence-transformers based
adapters (LangChain's ``HuggingFaceEmbeddings``) where they map onto an option; the rest is
refused with a message naming the equivalent.

:class:`SharedEncoderMixin` gives the pydantic adapters the same object behaviour: changing a
setting (assignment or ``model_copy(update=...)``) rebinds the shared encoder, so the vectors
always follow the settings; copies and pickles carry settings, never weights (an
:class:`~conan_rag.encoder.Encoder` pickles by its config).

Example:
    >>> translate_options({"model_name": "m", "model_kwargs": {"device": "cpu"}})
    {'model': 'm', 'device': 'cpu'}
    >>> translate_options({"encode_kwargs": {"normalize_embeddings": False, "batch_size": 64}})
    {'normalize': False, 'max_batch_size': 64}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from conan_rag.errors import ConanConfigError

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

_NO_OPS: dict[str, dict[str, Any]] = {  # accepted values that change nothing here
    "model_kwargs": {"trust_remote_code": False, "backend": "torch", "local_files_only": True},
    "encode_kwargs": {"convert_to_numpy": True, "precision": "float32"},
}
_REFUSED: dict[str, str] = {
    "trust_remote_code": "conan-rag never runs code from a model folder; use a model whose "
    "folder is plain sentence-transformers modules",
    "backend": "conan-rag runs torch; for speed see dtype, cpu_kernels and compile",
    "cache_folder": "pass the model folder itself as model, or set HF_HUB_CACHE",
    "token": "conan-rag never downloads; download the model first (huggingface-cli download)",
    "local_files_only": "models are always read from local files",
    "prompt_name": "pass the prompt text as query_prompt / document_prompt",
    "precision": "vectors are float32; quantize them in your vector store",
    "convert_to_numpy": "adapters return lists of floats",
    "convert_to_tensor": "adapters return lists of floats",
    "output_value": "adapters return sentence embeddings",
}


def _dtype_name(value: Any) -> str:
    return str(value).removeprefix("torch.")


# option -> (value, where it was given)
_Found = dict[str, tuple[Any, str]]


def _from_model_kwargs(kwargs: Mapping[str, Any]) -> _Found:
    out: _Found = {}
    for key, value in kwargs.items():
        where = f"model_kwargs[{key!r}]"
        if key in ("device", "revision", "truncate_dim"):
            out[key] = (value, where)
        elif key == "prompts" and isinstance(value, Mapping):
            for name, text in value.items():
                if name == "query":
                    out["query_prompt"] = (text, where)
                elif name in ("document", "passage"):
                    out["document_prompt"] = (text, where)
                else:
                    raise _refuse(
                        f"model_kwargs['prompts'][{name!r}]",
                        "only query and document prompts exist: query_prompt, document_prompt",
                    )
        elif key == "model_kwargs" and isinstance(value, Mapping):
            for inner, setting in value.items():
                if inner not in ("torch_dtype", "dtype"):
                    raise _refuse(
                        f"model_kwargs['model_kwargs'][{inner!r}]",
                        "only the dtype maps onto an option: dtype='float32'|'bfloat16'|'float16'",
                    )
                out["dtype"] = (_dtype_name(setting), where)
        elif _NO_OPS["model_kwargs"].get(key, object()) == value:
            continue
        else:
            raise _refuse(where, _REFUSED.get(key, ""))
    return out


_ENCODE_OPTIONS = {
    "normalize_embeddings": "normalize",
    "batch_size": "max_batch_size",
    "show_progress_bar": "show_progress",
    "truncate_dim": "truncate_dim",
}


def _from_encode_kwargs(kwargs: Mapping[str, Any], prompt_option: str, name: str) -> _Found:
    out: _Found = {}
    for key, value in kwargs.items():
        where = f"{name}[{key!r}]"
        option = prompt_option if key == "prompt" else _ENCODE_OPTIONS.get(key)
        if option is not None:
            out[option] = (value, where)
        elif _NO_OPS["encode_kwargs"].get(key, object()) != value:
            raise _refuse(where, _REFUSED.get(key, ""))
    return out


def _refuse(what: str, why: str) -> ConanConfigError:
    valid = ", ".join(VOCABULARY)
    because = f": {why}" if why else ""
    return ConanConfigError(
        f"{what} has no conan-rag equivalent{because}. The options are: {valid}.",
        setting=what,
        choices=VOCABULARY,
    )


def translate_options(
    data: Mapping[str, Any], rename: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Map an adapter's keyword arguments onto :data:`VOCABULARY` (then onto its field names).

    Args:
        data: the keyword arguments as given: our names, ecosystem names, and
            ``model_kwargs``/``encode_kwargs``/``query_encode_kwargs`` dicts.
        rename: vocabulary name -> this adapter's field name where they differ (LlamaIndex's
            field is ``model_name``).

    Returns:
        The arguments under the adapter's field names; unknown names pass through unchanged
        (the adapter's own validation reports them).

    Raises:
        ConanConfigError: a key of the kwargs dicts has no equivalent (the message says what to
            do instead), or two names for one option disagree.

    Example:
        >>> translate_options({"model": "m", "query_instruction": "q: "}, {"model": "model_name"})
        {'model_name': 'm', 'query_prompt': 'q: '}
    """
    out: dict[str, Any] = {}
    source: dict[str, str] = {}

    def put(option: str, value: Any, given_as: str) -> None:
        if option in out and out[option] != value:
            raise ConanConfigError(
                f"{source[option]}={out[option]!r} and {given_as}={value!r} set the same option "
                f"{option!r} differently; pass it once.",
                setting=option,
                value=value,
            )
        out[option] = value
        source[option] = given_as

    for key, value in data.items():
        if key not in KWARG_DICTS:
            put(ECOSYSTEM_NAMES.get(key, key), value, key)
    found = [
        _from_model_kwargs(data.get("model_kwargs") or {}),
        _from_encode_kwargs(data.get("encode_kwargs") or {}, "document_prompt", "encode_kwargs"),
        _from_encode_kwargs(
            data.get("query_encode_kwargs") or {}, "query_prompt", "query_encode_kwargs"
        ),
    ]
    for options in found:
        for option, (value, where) in options.items():
            put(option, value, where)
    rename = rename or {}
    return {rename.get(k, k): v for k, v in out.items()}


def with_positional_model(model: str | None, data: dict[str, Any]) -> dict[str, Any]:
    """Add a model given positionally to keyword arguments (refusing it given twice).

    Example:
        >>> with_positional_model("m", {"device": "cpu"})
        {'model': 'm', 'device': 'cpu'}
    """
    if model is None:
        return data
    given = [name for name in ("model", "model_name") if name in data]
    if given:
        raise ConanConfigError(
            f"The model was given both positionally ({model!r}) and as {given[0]}="
            f"{data[given[0]]!r}; pass it once.",
            setting="model",
            value=model,
        )
    return {"model": model, **data}


def open_encoder(settings: dict[str, Any]) -> Any:
    """The shared encoder for adapter settings: a local model, or a server's with ``endpoint``.

    Args:
        settings: :func:`~conan_rag.load_encoder` arguments, plus ``endpoint`` and ``api_key``.

    Returns:
        An :class:`~conan_rag.encoder.Encoder`, or a :class:`~conan_rag.remote.RemoteEncoder`.

    Raises:
        ConanConfigError: with an endpoint, a setting the server decides (device, dtype,
            prompts, ...) was given, or the model named is not the one the server runs.
    """
    settings = dict(settings)
    endpoint = settings.pop("endpoint", None)
    api_key = settings.pop("api_key", None)
    if not endpoint:
        from conan_rag.registry import load_encoder

        return load_encoder(settings.pop("model", None), **settings)
    from conan_rag.model.files import DEFAULT_MODEL
    from conan_rag.remote import remote_encoder

    local = [k for k, v in SERVER_DECIDES.items() if settings.get(k, v) != v]
    if local:
        raise ConanConfigError(
            f"{local} are decided by the server at {endpoint}; leave them out with an endpoint "
            "(set them with `conan-rag serve` flags), or drop endpoint to run the model here.",
            setting=local[0],
        )
    encoder = remote_encoder(endpoint, api_key=api_key, truncate_dim=settings.get("truncate_dim"))
    model = settings.get("model")
    if model not in (None, DEFAULT_MODEL, encoder.model_id):
        raise ConanConfigError(
            f"The server at {endpoint} runs {encoder.model_id!r}, not {model!r}; leave model out "
            "with an endpoint, or point at a server running that model.",
            setting="model",
            value=model,
        )
    return encoder


def model_alias(data: Mapping[str, Any], model: Any = None) -> dict[str, Any]:
    """``model`` given positionally, as ``model=`` or as ``model_name=``, once, as ``model``.

    Example:
        >>> model_alias({"model_name": "m", "top_n": 2})
        {'top_n': 2, 'model': 'm'}
    """
    out = dict(data)
    given: list[tuple[str, Any]] = [
        (name, out.pop(name)) for name in ("model", "model_name") if name in out
    ]
    if model is not None:
        given.insert(0, ("positionally", model))
    if len(given) > 1:
        ways = [
            f"positionally ({v!r})" if n == "positionally" else f"as {n}={v!r}" for n, v in given
        ]
        raise ConanConfigError(
            f"The model was given {ways[0]} and {ways[1]}; pass it once.",
            setting="model",
            value=given[1][1],
        )
    if given:
        out["model"] = given[0][1]
    return out


class RebindingMixin:
    """Settings that mean what they say, for pydantic adapters (put it before ``BaseModel``).

    Assigning a field that :meth:`_rebinds` re-runs :meth:`_bind` (which loads or reuses the
    shared model); a value it refuses raises and leaves the adapter as it was.
    ``model_copy(update=...)`` builds a validated new adapter with those settings.
    """

    BOUND_FIELDS: ClassVar[tuple[str, ...]] = ()

    def _bind(self) -> None:
        raise NotImplementedError

    def _rebinds(self, name: str) -> bool:
        return name in self.BOUND_FIELDS

    def _update_names(self, update: Mapping[str, Any]) -> Mapping[str, Any]:
        """The names ``model_copy(update=...)`` passes to the constructor."""
        return update

    def __setattr__(self, name: str, value: Any) -> None:
        if not self._rebinds(name):
            super().__setattr__(name, value)
            return
        old = getattr(self, name)
        super().__setattr__(name, value)  # pydantic validates the value
        try:
            self._bind()
        except BaseException:
            super().__setattr__(name, old)
            raise

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Any:
        """A copy; with ``update``, a new validated adapter bound to the updated settings."""
        if not update:
            return super().model_copy(deep=deep)  # type: ignore[misc]
        fields = type(self).model_fields  # type: ignore[attr-defined]
        values = {name: getattr(self, name) for name in fields}
        return type(self)(**{**values, **self._update_names(update)})


class SharedEncoderMixin(RebindingMixin):
    """Object behaviour shared by the pydantic embedding adapters (put it before ``BaseModel``).

    * Assigning a field in :attr:`ENCODER_FIELDS` rebinds the shared encoder (a view of the same
      weights when only prompts or sizes change); a value the encoder refuses raises and leaves
      the adapter as it was.
    * ``model_copy(update=...)`` builds a validated new adapter with those settings.
    * ``pickle``, ``copy`` and ``deepcopy`` carry settings; the encoder re-attaches to the shared
      one of the process that unpickles it.

    Subclasses call :meth:`_bind` at the end of ``__init__``; one whose field names differ from
    :data:`VOCABULARY` sets ``ENCODER_FIELDS`` (field name -> :func:`~conan_rag.load_encoder`
    argument).
    """

    ENCODER_FIELDS: ClassVar[dict[str, str]] = {option: option for option in ENCODER_OPTIONS}

    def encoder_settings(self) -> dict[str, Any]:
        """The :func:`~conan_rag.load_encoder` arguments these settings stand for."""
        settings = {arg: getattr(self, name) for name, arg in self.ENCODER_FIELDS.items()}
        key: Any = settings.get("api_key")
        if hasattr(key, "get_secret_value"):  # pydantic SecretStr
            settings["api_key"] = key.get_secret_value()
        return settings

    def _bind(self) -> None:
        self._encoder = open_encoder(self.encoder_settings())

    def _rebinds(self, name: str) -> bool:
        return name in self.ENCODER_FIELDS


class SharedRerankerMixin(RebindingMixin):
    """Object behaviour shared by the pydantic reranker adapters (put it before ``BaseModel``).

    The fields in :attr:`BOUND_FIELDS` pick the shared :class:`~conan_rag.reranking.Reranker`
    (:func:`~conan_rag.reranking.load_reranker`); assigning one rebinds it, and
    ``model_copy(update=...)`` accepts ``model_name`` for ``model``.
    """

    BOUND_FIELDS: ClassVar[tuple[str, ...]] = ("model", "revision", "device", "dtype", "max_length")

    @property
    def reranker(self) -> Any:
        """The shared :class:`~conan_rag.reranking.Reranker` doing the work."""
        return self._reranker

    def _bind(self) -> None:
        from conan_rag.reranking import load_reranker

        settings = {name: getattr(self, name) for name in self.BOUND_FIELDS}
        self._reranker = load_reranker(settings.pop("model"), **settings)

    def _update_names(self, update: Mapping[str, Any]) -> Mapping[str, Any]:
        return model_alias(update)
