"""Pure batch planning: order texts by length and cut batches by a padded-token budget.

A batch of right-padded sequences costs ``len(batch) * longest`` token slots, so sorting by
length and filling each batch up to a token budget keeps padding small and batches as large as
the hardware allows: many short queries go in one batch, long documents go a few at a time.

Example:
    >>> plan_batches([3, 10, 4, 9], token_budget=20)
    [[1, 3], [2, 0]]
"""

from __future__ import annotations

from collections.abc import Sequence

from conan_rag.config import DEFAULT_MAX_BATCH_SIZE
from conan_rag.errors import ConanConfigError


def plan_batches(
    lengths: Sequence[int], token_budget: int, max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
) -> list[list[int]]:
    """Group indices into batches, longest first, each within ``token_budget`` padded tokens.

    Args:
        lengths: token count of each text (after truncation).
        token_budget: the most ``batch_size * longest_in_batch`` one batch may cost. A text
            longer than the budget gets a batch of its own.
        max_batch_size: the most texts in one batch, whatever their length.

    Returns:
        Lists of indices into ``lengths``; every index appears exactly once.

    Raises:
        ConanConfigError: ``token_budget`` or ``max_batch_size`` is not positive.
    """
    if token_budget < 1 or max_batch_size < 1:
        raise ConanConfigError(
            f"token_budget ({token_budget}) and max_batch_size ({max_batch_size}) must be >= 1.",
            setting="token_budget" if token_budget < 1 else "max_batch_size",
        )
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for index in order:
        length = max(1, lengths[index])
        if current and (
            (len(current) + 1) * max(longest, length) > token_budget
            or len(current) >= max_batch_size
        ):
            batches.append(current)
            current, longest = [], 0
        current.append(index)
        longest = max(longest, length)
    if current:
        batches.append(current)
    return batches


def padded_cost(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> int:
    """Token slots the plan computes, padding included (for benchmarks and tests)."""
    return sum(len(b) * max(lengths[i] for i in b) for b in batches if b)
