"""Tokenizer vocabularies of the tiny test models: BERT-Chinese style and XLM-R (Unigram) style.

Example:
    >>> chinese_vocab(n_cjk=2)[:3]
    ['[PAD]', '[UNK]', '[CLS]']
"""

from __future__ import annotations

import string

__all__ = ["SPECIAL_TOKENS", "chinese_vocab", "xlmr_vocab"]

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def chinese_vocab(n_cjk: int = 20992) -> list[str]:
    """A BERT-Chinese-style vocab: specials, ASCII, punctuation, the first ``n_cjk`` CJK chars."""
    ascii_tokens = list(string.ascii_lowercase + string.digits + string.punctuation)
    cjk_punct = list("。！？；，、：“”‘’（）《》【】…—")
    cjk = [chr(0x4E00 + i) for i in range(n_cjk)]
    words = ["the", "of", "and", "to", "in", "is", "cat", "dog", "protein", "cell", "gene"]
    pieces = ["##" + c for c in string.ascii_lowercase + string.digits]
    seen: dict[str, None] = {}
    for token in SPECIAL_TOKENS + ascii_tokens + cjk_punct + cjk + words + pieces:
        seen.setdefault(token, None)
    return list(seen)


_WORDS = "the of and to in is was for on that with as by at from it cat dog protein cell gene"


def xlmr_vocab(n_cjk: int = 20992) -> list[tuple[str, float]]:
    """A small XLM-R-style Unigram vocab: ``<s> <pad> </s> <unk>``, pieces with scores, ``<mask>``.

    Whole English words (``▁the``) and a few Chinese words outscore their characters, so the
    Unigram model prefers them, as sentencepiece vocabularies do.

    Example:
        >>> vocab = xlmr_vocab(n_cjk=10)
        >>> [piece for piece, _ in vocab[:4]], vocab[-1][0]
        (['<s>', '<pad>', '</s>', '<unk>'], '<mask>')
    """
    pieces: dict[str, float] = {"▁": -4.0}
    for word in _WORDS.split():
        pieces["▁" + word] = -6.0
    for char in string.ascii_letters + string.digits + string.punctuation:
        pieces.setdefault(char, -10.0)
        pieces.setdefault("▁" + char, -11.0)
    for char in "。！？；，、：“”‘’（）《》【】…—":
        pieces.setdefault(char, -9.0)
    for i in range(n_cjk):
        pieces.setdefault(chr(0x4E00 + i), -9.0)
    for word in ("中国", "长城", "细胞", "蛋白质", "基因", "世界"):
        pieces.setdefault(word, -12.0)
    specials = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    return [*specials, *pieces.items(), ("<mask>", 0.0)]
