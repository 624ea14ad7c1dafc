"""Serving many callers from one model: batch planning and the coalescing queue.

This layer knows nothing of the model: the queue runs batches through the small
:class:`~conan_rag.batching.requests.BatchRunner` protocol, whose rows are opaque (token ids
for the encoder, a tokenized pair with its segment ids for the reranker); only the runner
reads them.

Example:
    >>> from conan_rag.batching import plan_batches
    >>> plan_batches([3, 10, 4, 9], token_budget=20)
    [[1, 3], [2, 0]]
"""

from __future__ import annotations

from conan_rag.batching.planning import padded_cost, plan_batches
from conan_rag.batching.queue import BatchQueue
from conan_rag.batching.requests import BatchRunner, Request
from conan_rag.batching.waiting import await_result, wait_result

__all__ = [
    "BatchQueue",
    "BatchRunner",
    "Request",
    "await_result",
    "padded_cost",
    "plan_batches",
    "wait_result",
]
