"""Adapter keyword arguments -> the shared vocabulary, refusing what has no equivalent.

Besides our names and the ecosystems' customary ones (:data:`ECOSYSTEM_NAMES`), the
``model_kwargs``/``encode_kwargs``/``query_encode_kwargs`` of sentence-transformers based
adapters (LangChain's ``HuggingFaceEmbeddings``) are translated where they map onto an option;
the rest is refused with a message naming the equivalent.

Example:
    >>> from conan_rag.adapter_kit import translate_options
    >>> translate_options({"encode_kwargs": {"normalize_embeddings": False, "batch_size": 64}})
    {'normalize': False, 'max_batch_size': 64}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from conan_rag.adapter_kit.vocabulary import ECOSYSTEM_NAMES, KWARG_DICTS, VOCABULARY
from conan_rag.errors import ConanConfigError

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
