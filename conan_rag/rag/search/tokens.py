"""Words for BM25 in Chinese and English: jieba for CJK runs, stop words and a stemmer for Latin.

One pass over mixed text: it is NFKC-normalised (full-width letters and digits become
half-width) and lower-cased; each run of CJK characters is cut by jieba in search mode (words
and their shorter sub-words, as search engines index Chinese), and each Latin word that is not an
English stop word is reduced by the Snowball stemmer (PyStemmer). bm25s's own default pattern
would turn a whole run of Chinese characters into a single token, and LlamaIndex's
``BM25Retriever`` ignores its tokenizer argument; this is why conan-rag tokenizes itself.

Example:
    >>> lexical_tokens("Running the ＢＭ２５ index")
    ['run', 'bm25', 'index']
    >>> "北京" in lexical_tokens("我们去北京大学")
    True
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from functools import lru_cache
from typing import Any

__all__ = ["TOKENIZER_VERSION", "lexical_tokens", "lexical_tokens_many"]

TOKENIZER_VERSION = 2  # bump when the tokens change: stored lexical indexes are rebuilt
_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
_RUNS = re.compile(rf"[{_CJK}]+|[^\W_{_CJK}]+")
_IS_CJK = re.compile(rf"[{_CJK}]")
_jieba_lock = threading.Lock()


@lru_cache(maxsize=1)
def _stop_words() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN

    return frozenset(STOPWORDS_EN)


@lru_cache(maxsize=1)
def _stemmer() -> Any:
    import Stemmer

    return Stemmer.Stemmer("english")


@lru_cache(maxsize=1)
def _jieba() -> Any:
    import jieba

    jieba.setLogLevel(logging.WARNING)  # no "Building prefix dict" chatter on stderr
    with _jieba_lock:
        jieba.initialize()
    return jieba


def lexical_tokens(text: str) -> list[str]:
    """The BM25 tokens of one text (queries and documents alike).

    Args:
        text: any mix of Chinese, English and other scripts.

    Returns:
        Tokens in text order: jieba search-mode words for CJK runs, stemmed non-stop words for
        the rest; punctuation and spaces dropped.
    """
    normal = unicodedata.normalize("NFKC", text).lower()
    tokens: list[str] = []
    latin: list[str] = []
    stop = _stop_words()

    def flush() -> None:
        if latin:
            tokens.extend(_stemmer().stemWords(latin))
            latin.clear()

    for match in _RUNS.finditer(normal):
        run = match.group()
        if _IS_CJK.match(run):
            flush()
            tokens.extend(w for w in _jieba().cut_for_search(run) if w.strip())
        elif run not in stop:
            latin.append(run)
    flush()
    return tokens


def lexical_tokens_many(texts: list[str]) -> list[list[str]]:
    """:func:`lexical_tokens` of each text.

    Example:
        >>> lexical_tokens_many(["cats", "dogs"])
        [['cat'], ['dog']]
    """
    return [lexical_tokens(t) for t in texts]
