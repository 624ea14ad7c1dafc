"""What every encoder (local or remote) accepts: a list of strings, for queries or documents.

Example:
    >>> check_texts(["a", "b"])
    ['a', 'b']
    >>> check_texts("a")
    Traceback (most recent call last):
    ...
    conan_rag.errors.ConanTypeError: encode() takes a list of strings, not a single string; ...
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from conan_rag.errors import ConanTypeError

Kind = Literal["query", "document"]
KINDS: tuple[str, ...] = ("query", "document")


def check_texts(texts: Sequence[str]) -> list[str]:
    """The texts as a list, refusing a bare string and non-string items (naming the index)."""
    if isinstance(texts, (str, bytes)):
        raise ConanTypeError(
            "encode() takes a list of strings, not a single string; wrap it: encode([text])."
        )
    items = list(texts)
    for index, text in enumerate(items):
        if not isinstance(text, str):
            raise ConanTypeError(
                f"texts[{index}] is {type(text).__name__}, not str; convert or drop it "
                "(bytes: .decode('utf-8')).",
                index=index,
            )
    return items
