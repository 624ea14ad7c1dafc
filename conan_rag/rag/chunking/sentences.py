"""Text rules shared by the chunker and the answer: sentence ends, paragraphs, CJK characters.

One place for each rule: the chunker prefers cuts after a sentence end and the extractive answer
splits passages into sentences, with the same characters.

Example:
    >>> split_sentences("Hi there. 你好。再见！")
    ['Hi there.', '你好。', '再见！']
    >>> is_cjk("猫"), is_cjk("a")
    (True, False)
"""

from __future__ import annotations

import re

CJK_SENTENCE_ENDS = "。！？；"
LATIN_SENTENCE_ENDS = ".!?"
# Closing quotes and brackets that may follow a sentence end ("He left." / 他走了。」).
CLOSERS = "\"'”’)]）】」』》"
PARAGRAPH = re.compile(r"\n[ \t\r\f\v]*\n")
_SENTENCE = re.compile(rf"(?<=[{CJK_SENTENCE_ENDS}])|(?<=[{re.escape(LATIN_SENTENCE_ENDS)}])\s+")


def is_cjk(char: str) -> bool:
    """True for a CJK ideograph or CJK punctuation (each is a word of its own for cutting)."""
    code = ord(char)
    return 0x3000 <= code <= 0x9FFF or 0xF900 <= code <= 0xFAFF or 0x20000 <= code <= 0x2FA1F


def ends_sentence(token_text: str, gap: str) -> bool:
    """Whether a token ending in ``token_text``, followed by ``gap``, ends a sentence.

    A Chinese sentence end needs no space after it; an English one needs whitespace.

    Example:
        >>> ends_sentence("首都。", ""), ends_sentence("3.5", ""), ends_sentence("end.", " ")
        (True, False, True)
    """
    tail = token_text.rstrip(CLOSERS)
    if not tail:
        return False
    if tail[-1] in CJK_SENTENCE_ENDS:
        return True
    return tail[-1] in LATIN_SENTENCE_ENDS and bool(gap) and gap[0].isspace()


def split_sentences(text: str) -> list[str]:
    r"""Sentences of a text, whitespace collapsed; markdown headings are left out.

    Example:
        >>> split_sentences("# Title\n\nOne. Two!")
        ['One.', 'Two!']
    """
    sentences: list[str] = []
    for paragraph in PARAGRAPH.split(text):
        if paragraph.lstrip().startswith("#"):  # a markdown heading is not an answer
            continue
        sentences.extend(" ".join(s.split()) for s in _SENTENCE.split(paragraph) if s.strip())
    return sentences
