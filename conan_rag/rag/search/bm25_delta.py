"""BM25 by delta: the chunks written since the matrices were built, scored beside them.

Rebuilding bm25s's matrices costs time in proportion to the whole collection (every chunk's
tokens re-read and re-indexed). After a small write, :class:`Delta` keeps the built matrices
(the :class:`Segment`, memory-mapped from bm25s's own saved format) and adds what changed:

* chunks deleted or re-written since the build are masked out of the segment (bm25s's own
  ``weight_mask``), so they are never returned;
* chunks added or re-written are scored in numpy with bm25s's own BM25 formula (its ``method``
  and ``idf_method``, ``k1``, ``b``) and **the segment's statistics**: its document count, its
  mean chunk length and its document frequencies (a word the segment never saw counts the delta
  chunks holding it). Scores are then merged with the segment's, best first.

So a delta chunk scores exactly as it would inside the segment's own build (tested), and the
statistics drift only by what the delta changes. That drift is bounded rather than ignored: the
owner (:class:`~conan_rag.rag.search.lexical_index.LexicalIndex`) rebuilds the segment from
scratch once the delta exceeds :data:`DELTA_SHARE` of it (5 %: a word's IDF then moves by at most
about 5 % of its document count, and rebuilding after every 5 % of writes costs a constant
amount per written chunk, about 20 chunks' worth of indexing), and always below
:data:`DELTA_MIN_SEGMENT` chunks (2,000), where a rebuild takes a tenth of a second and scores
are then exact.

Example:
    >>> import bm25s
    >>> bm25 = bm25s.BM25()
    >>> bm25.index([["red", "cat"], ["blue", "dog"]], show_progress=False)
    >>> main = Segment(["a", "b"], bm25, version="v1", seq=0, avgdl=2.0)
    >>> delta = Delta(main, changed=["b", "c"], fresh={"c": ["red", "fox"]})
    >>> [(i, round(s, 4)) for i, s in delta.search(["red"], k=5)], len(delta)
    ([('a', 0.2773), ('c', 0.2773)], 2)
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["DELTA_MIN_SEGMENT", "DELTA_SHARE", "Delta", "Segment", "delta_limit"]

DELTA_SHARE = 0.05  # the most changed chunks, as a share of the segment, kept as a delta
DELTA_MIN_SEGMENT = 2_000  # below this many chunks, every change rebuilds (exact and cheap)
_UNSCORABLE = ("bm25l", "bm25+")  # methods with a non-occurrence term: no delta for them


def delta_limit(
    segment_size: int, share: float = DELTA_SHARE, floor: int = DELTA_MIN_SEGMENT
) -> int:
    """How many changed chunks a segment of this size takes as a delta (0: rebuild every time).

    Example:
        >>> delta_limit(1_000_000), delta_limit(1_000)
        (50000, 0)
    """
    return 0 if segment_size < floor else int(segment_size * share)


@dataclass
class Segment:
    """bm25s matrices built over ``ids`` (sorted), at one point of the index's change log.

    Attributes:
        ids: the chunk ids, in the matrices' row order (sorted, so positions are a bisect).
        bm25: the ``bm25s.BM25`` index (``None`` for no chunks).
        version: the store version its tokens were synced at.
        seq: the change-log position it was built at (later changes make the delta).
        avgdl: its mean chunk length in tokens (the BM25 length normalisation).
    """

    ids: list[str]
    bm25: Any
    version: str | None
    seq: int
    avgdl: float

    def position(self, chunk_id: str) -> int | None:
        """The row of ``chunk_id`` in the matrices (``None``: not in them)."""
        at = bisect.bisect_left(self.ids, chunk_id)
        return at if at < len(self.ids) and self.ids[at] == chunk_id else None

    @property
    def scorable(self) -> bool:
        """Whether a delta can be scored beside these matrices."""
        return self.bm25 is not None and self.bm25.method not in _UNSCORABLE

    def search(self, words: list[str], k: int, mask: np.ndarray | None) -> list[tuple[str, float]]:
        """The segment's ``k`` best live chunks for ``words`` (score > 0), best first."""
        if self.bm25 is None or not self.ids:
            return []
        found, scores = self.bm25.retrieve(
            [words], k=min(k, len(self.ids)), show_progress=False, weight_mask=mask
        )
        return [
            (self.ids[int(j)], float(s))
            for j, s in zip(found[0], scores[0], strict=True)
            if float(s) > 0.0 and np.isfinite(s)
        ]


class Delta:
    """A segment plus the chunks changed since it was built.

    Args:
        main: the built segment.
        changed: every chunk id written or deleted since ``main`` was built.
        fresh: the tokens of the changed chunks that exist now (added or re-written).
    """

    def __init__(
        self, main: Segment, changed: Iterable[str], fresh: Mapping[str, Sequence[str]]
    ) -> None:
        self.main = main
        dead = [p for p in (main.position(i) for i in changed) if p is not None]
        self.dead = len(dead)
        self.mask: np.ndarray | None = None
        if dead:
            self.mask = np.ones(len(main.ids), dtype=np.float32)
            self.mask[dead] = 0.0
        self.ids = list(fresh)
        self.lengths = np.array([len(fresh[i]) for i in self.ids], dtype=np.float64)
        postings: dict[str, tuple[list[int], list[int]]] = {}
        for row, chunk_id in enumerate(self.ids):
            for word, tf in Counter(fresh[chunk_id]).items():
                rows, tfs = postings.setdefault(word, ([], []))
                rows.append(row)
                tfs.append(tf)
        self.postings = {
            w: (np.array(r), np.array(t, dtype=np.float64)) for w, (r, t) in postings.items()
        }

    def __len__(self) -> int:
        """How many chunks are searched: the segment's live ones and the fresh ones."""
        return len(self.main.ids) - self.dead + len(self.ids)

    def _document_frequency(self, word: str) -> int:
        """The segment's document frequency of ``word`` (else the delta's)."""
        bm25 = self.main.bm25
        token = bm25.vocab_dict.get(word) if bm25 is not None else None
        if token is not None and token + 1 < len(bm25.scores["indptr"]):
            indptr = bm25.scores["indptr"]
            return int(indptr[token + 1] - indptr[token])
        return len(self.postings[word][0])

    def fresh_scores(self, words: list[str]) -> np.ndarray:
        """BM25 of each fresh chunk for ``words``, with the segment's statistics (float32)."""
        from bm25s.scoring import _select_idf_scorer, _select_tfc_scorer

        bm25 = self.main.bm25
        idf_of, tfc_of = _select_idf_scorer(bm25.idf_method), _select_tfc_scorer(bm25.method)
        n = int(bm25.scores["num_docs"])
        scores = np.zeros(len(self.ids), dtype=np.float32)
        for word in words:  # a repeated query word counts again, as in bm25s
            if word not in self.postings:
                continue
            rows, tf = self.postings[word]
            idf = idf_of(self._document_frequency(word), N=n)
            tfc = tfc_of(
                tf_array=tf, l_d=self.lengths[rows], l_avg=self.main.avgdl, k1=bm25.k1, b=bm25.b
            )
            scores[rows] += (idf * tfc).astype(np.float32)
        return scores

    def search(self, words: list[str], k: int) -> list[tuple[str, float]]:
        """The ``k`` best chunks among the segment's live ones and the fresh ones."""
        hits = self.main.search(words, k, self.mask)
        if not (self.ids and words):
            return hits
        scores = self.fresh_scores(words)
        fresh = [(self.ids[int(j)], float(scores[j])) for j in np.flatnonzero(scores > 0)]
        return sorted(hits + fresh, key=lambda hit: -hit[1])[:k]  # stable: ties keep bm25s's order
