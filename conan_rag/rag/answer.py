"""Answers from retrieved passages: a grounded prompt for any LLM, or an extractive fallback.

Passages are numbered ``[1]``, ``[2]``, ... in the prompt and in the answer's sources, so an
answer's citations point at :attr:`Answer.hits`.

Example:
    >>> print(build_prompt("Why?", []).splitlines()[0])
    Answer the question using only the numbered passages below. Cite passages as [n].
    >>> call_llm(lambda prompt: "Paris [1]", "...")
    'Paris [1]'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import takewhile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from conan_rag.errors import ConanTypeError
from conan_rag.rag.chunking.sentences import (
    CJK_SENTENCE_ENDS,
    CLOSERS,
    LATIN_SENTENCE_ENDS,
    split_sentences,
)
from conan_rag.rag.search.retrieval import Hit

if TYPE_CHECKING:
    from conan_rag.protocols import EncoderLike

NO_PASSAGE = "No stored passage is similar enough to the question to answer it."


@dataclass(frozen=True)
class Answer:
    """An answer with the hits it cites as ``[1]``, ``[2]``, ... and the prompt sent."""

    text: str
    hits: list[Hit]
    prompt: str


def _label(hit: Hit) -> str:
    title = str(hit.metadata.get("title") or "")
    source = str(hit.metadata.get("source") or "")
    name = Path(source).name if source else str(hit.metadata.get("doc_id", hit.id))
    return f"{title} ({name})" if title else name


def format_sources(hits: Sequence[Hit]) -> str:
    """``Sources:`` lines, one per cited hit, with its cosine score."""
    lines = [f"[{n}] {_label(h)} (cosine {h.score:.3f})" for n, h in enumerate(hits, 1)]
    return "Sources:\n" + "\n".join(lines)


def build_prompt(query: str, hits: Sequence[Hit]) -> str:
    """A grounded prompt listing the passages as ``[1]``, ``[2]``, ... to cite."""
    passages = "\n\n".join(f"[{n}] {_label(h)}\n{h.text}" for n, h in enumerate(hits, 1))
    return (
        "Answer the question using only the numbered passages below. Cite passages as [n].\n"
        "If they do not contain the answer, say so.\n\n"
        f"Passages:\n{passages or '(none)'}\n\nQuestion: {query}\nAnswer:"
    )


def call_llm(llm: Any, prompt: str) -> str:
    """Call a ``str -> str`` callable or a LangChain runnable and return its text.

    Raises:
        ConanTypeError: ``llm`` is neither, or returns something without text.
    """
    if hasattr(llm, "invoke"):
        output = llm.invoke(prompt)
    elif callable(llm):
        output = llm(prompt)
    else:
        raise ConanTypeError(
            f"llm must be a str -> str callable or a LangChain runnable (with .invoke), not "
            f"{type(llm).__name__}."
        )
    if isinstance(output, str):
        return output
    content = getattr(output, "content", None)
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # multi-part message content
        return "".join(p if isinstance(p, str) else str(p.get("text", "")) for p in content)
    raise ConanTypeError(
        f"The llm returned {type(output).__name__}; expected a str or a message with .content."
    )


def _is_sentence(text: str) -> bool:
    """Ends like a sentence (a heading or a page title does not)."""
    tail = text.rstrip(CLOSERS)
    return bool(tail) and tail[-1] in CJK_SENTENCE_ENDS + LATIN_SENTENCE_ENDS


def _joined(sentences: list[str]) -> str:
    """Sentences in a row: a space after an English one, none after a Chinese one."""
    text = sentences[0]
    for sentence in sentences[1:]:
        text += ("" if text[-1] in CJK_SENTENCE_ENDS else " ") + sentence
    return text


CLOSE_SENTENCE = 0.8  # a second sentence is quoted when it scores this share of the best one


def extractive_answer(encoder: EncoderLike, query: str, hits: Sequence[Hit], top: int = 3) -> str:
    """No LLM: the sentences of each top passage closest to the question, cited, then sources.

    Each passage gives its best sentence, and its runner-up too when that scores at least
    :data:`CLOSE_SENTENCE` of the best (a small model often ranks the sentence that names the
    topic just above the one that answers), in the passage's order. Passages far weaker than the
    best one (below half its score) are left out.
    """
    if not hits:
        return NO_PASSAGE
    picked: list[tuple[int, str]] = []
    q = encoder.encode([query], kind="query")[0]
    best_score = hits[0].score
    # A prefix of the hits (so [n] matches the prompt's numbering), dropping weak tails.
    chosen = [hits[0], *takewhile(lambda h: h.score >= 0.5 * best_score > 0, hits[1:top])]
    for number, hit in enumerate(chosen, 1):
        sentences = split_sentences(hit.text) or [hit.text]
        scores = encoder.encode(sentences, kind="document") @ q
        ranked = [int(i) for i in np.argsort(-scores, kind="stable")[:2]]
        close = len(ranked) == 2 and scores[ranked[1]] >= CLOSE_SENTENCE * scores[ranked[0]] > 0
        if close and _is_sentence(sentences[ranked[1]]):
            picked.append((number, _joined([sentences[i] for i in sorted(ranked)])))
        else:
            picked.append((number, sentences[ranked[0]]))
    lines = [f"{sentence} [{number}]" for number, sentence in picked]
    return "\n".join(lines) + "\n\n" + format_sources(chosen)
