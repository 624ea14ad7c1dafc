"""Serving one request in slices, so a large one holds little of the queue and others get through.

A request's token ids are cut into consecutive parts of at most half the admission's
:attr:`~conan_rag.server.admission.Admission.slice_tokens` and at most ``ASYNC_TEXTS`` texts
(cancelling the request drops their rows in the batching queue). Parts run while those in
flight hold at most ``slice_tokens`` (two at a time: the queue has the next one ready when it
finishes one); each is admitted when it starts and released when it is answered. A request of
one part is admitted as before.

Example:
    >>> slices([3, 3, 3, 3, 3], most_tokens=6, most_texts=4)
    [range(0, 2), range(2, 4), range(4, 5)]
    >>> slices([10, 1], most_tokens=4, most_texts=8)  # a text over the bound is a part alone
    [range(0, 1), range(1, 2)]
"""

from __future__ import annotations

import asyncio

import numpy as np

from conan_rag.encoder import ASYNC_TEXTS
from conan_rag.inputs import Kind
from conan_rag.server.admission import Admission
from conan_rag.server.service import EmbeddingService


def slices(tokens: list[int], *, most_tokens: int, most_texts: int) -> list[range]:
    """Consecutive ranges of texts, each of <= ``most_tokens`` (or one text) and ``most_texts``."""
    out: list[range] = []
    start, held = 0, 0
    for i, n in enumerate(tokens):
        if i > start and (held + n > most_tokens or i - start >= most_texts):
            out.append(range(start, i))
            start, held = i, 0
        held += n
    out.append(range(start, len(tokens)))
    return out


async def embed_in_slices(
    service: EmbeddingService,
    admission: Admission,
    ids: list[list[int]],
    kind: Kind,
    *,
    dimensions: int | None,
    normalize: bool,
) -> np.ndarray:
    """The vectors of ``ids`` (a request's token ids, truncated), admitted part by part.

    Raises:
        ApiError: 429 when the first part does not fit the queue; any part's own error.
    """
    window = admission.slice_tokens
    tokens = [len(x) for x in ids]
    parts = slices(tokens, most_tokens=max(1, window // 2), most_texts=ASYNC_TEXTS)
    cost = [sum(tokens[p.start : p.stop]) for p in parts]
    embed_ids = service.embed_ids
    if len(parts) == 1:
        with admission.hold(cost[0]):
            return await embed_ids(ids, kind, dimensions=dimensions, normalize=normalize)
    out: list[np.ndarray | None] = [None] * len(parts)
    running: dict[asyncio.Future[np.ndarray], int] = {}
    held, following = 0, 0
    try:
        while following < len(parts) or running:
            while following < len(parts) and (not running or held + cost[following] <= window):
                k = following
                admission.admit(cost[k], continuing=k > 0)
                held += cost[k]
                part = ids[parts[k].start : parts[k].stop]
                embed = embed_ids(part, kind, dimensions=dimensions, normalize=normalize)
                running[asyncio.ensure_future(embed)] = k
                following += 1
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                k = running.pop(task)
                held -= cost[k]
                failed = task.cancelled() or task.exception() is not None
                admission.release(cost[k], answered=not failed)
                out[k] = task.result()
    finally:
        for task, k in running.items():  # an error, or the request was cancelled (drain limit)
            task.cancel()
            admission.release(cost[k], answered=False)
    return np.concatenate([v for v in out if v is not None])
