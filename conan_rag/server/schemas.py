"""Request bodies: OpenAI's ``/v1/embeddings`` and TEI's ``/embed``, and checking their texts.

The text field (``input``, ``inputs``) is checked here rather than by pydantic, so that every
refusal names the field and the index at fault, and token-id arrays get their own advice.
Unknown fields are ignored, as OpenAI and TEI do, so clients sending extras keep working.

Example:
    >>> texts_of(["a", "b"], "input", max_inputs=8)
    ['a', 'b']
    >>> texts_of(["a", 3], "input", max_inputs=8)
    Traceback (most recent call last):
    ...
    conan_rag.server.errors.ApiError: input[1] is a number, not a string; ...
    >>> EmbeddingsRequest.model_validate({"input": "hi"}).encoding_format
    'float'
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from conan_rag.server.errors import ApiError

TOKEN_IDS_MESSAGE = (
    "{field} holds token ids (lists of integers); this server embeds text only: token ids from "
    "another tokenizer (tiktoken's, as LangChain's OpenAIEmbeddings sends by default) are not "
    "this model's vocabulary. Send the texts as strings; with LangChain's OpenAIEmbeddings pass "
    "check_embedding_ctx_length=False."
)


class EmbeddingsRequest(BaseModel):
    """``POST /v1/embeddings`` (and ``/embeddings``): OpenAI's request shape."""

    model_config = ConfigDict(extra="ignore")

    input: Any = Field(description="a string or a list of strings")
    """The texts: a string or a list of strings (token ids are refused)."""
    model: str | None = None
    """The model asked for; another than the served one is served and logged (or 404)."""
    encoding_format: Literal["float", "base64"] = "float"
    """``float`` lists, or base64 of little-endian float32 (the openai SDK's default)."""
    dimensions: int | None = Field(default=None, ge=1)
    """Keep the first N dimensions, then re-normalize; at most the model's dimension."""
    input_type: Literal["query", "document"] | None = None
    """Which of the model's prompts to prepend; ``None``: ``document``."""
    user: str | None = None
    """An end-user id (ignored)."""


class EmbedRequest(BaseModel):
    """``POST /embed``: text-embeddings-inference's request shape."""

    model_config = ConfigDict(extra="ignore")

    inputs: Any = Field(description="a string or a list of strings")
    """The texts: a string or a list of strings."""
    normalize: bool = True
    """L2-normalize; ``False`` gives the model's own output (first ``dimensions`` of it)."""
    truncate: bool = True
    """Cut texts over the model's max_seq_length; ``False`` refuses them with 413."""
    truncation_direction: Literal["right", "Right", "left", "Left"] = "right"
    """Only ``right`` (keep the start of the text) is supported."""
    prompt_name: Literal["query", "document"] | None = None
    """Which of the model's prompts to prepend; ``None``: ``document``."""
    dimensions: int | None = Field(default=None, ge=1)
    """Keep the first N dimensions; at most the model's dimension."""


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, with its article (for messages).

    Example:
        >>> json_type(None), json_type([1]), json_type(True)
        ('null', 'an array', 'a boolean')
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "a string" if isinstance(value, str) else type(value).__name__


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _token_ids(items: list[Any]) -> bool:
    """Whether a list is token ids: integers, or lists of integers."""
    if all(_is_int(x) for x in items):
        return True
    return all(isinstance(x, list) and x and all(_is_int(t) for t in x) for x in items)


def texts_of(value: Any, field: str, *, max_inputs: int) -> list[str]:
    """The texts of a request's text field, or the :class:`ApiError` that refuses them.

    Args:
        value: the parsed field (``input`` or ``inputs``).
        field: its name, for the messages.
        max_inputs: the most texts one request may hold.

    Raises:
        ApiError: 400 for anything but a string or a non-empty list of strings (naming the
            index of the first non-string, or the LangChain setting for token ids); 413 for
            more than ``max_inputs`` texts.
    """
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise ApiError(
            400,
            f"{field} must be a string or a list of strings, not {json_type(value)}.",
            param=field,
        )
    if not value:
        raise ApiError(400, f"{field} is an empty list; send at least one string.", param=field)
    if len(value) > max_inputs:
        raise ApiError(
            413,
            f"{field} holds {len(value)} texts; this server takes at most {max_inputs} per "
            "request. Send them in several requests.",
            param=field,
            code="too_many_inputs",
        )
    if _token_ids(value):
        raise ApiError(
            400, TOKEN_IDS_MESSAGE.format(field=field), param=field, code="token_ids_not_supported"
        )
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise ApiError(
                400,
                f"{field}[{index}] is {json_type(item)}, not a string; every item of {field} "
                "must be a string.",
                param=field,
            )
    return value
