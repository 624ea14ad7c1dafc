"""The runners' tokenization against transformers' ``tokenizer(...)``: time and event-loop stalls.

For the same texts and the same ids, it prints the median time of each path (of ``--runs``),
and the longest gap between ticks of an asyncio loop while each path runs in a worker thread
(what a server or an ``aembed_documents`` caller sees). Two inputs: 2,000 short CJK texts (32
characters, the shape of the LangChain event-loop test) and 2,000 SciFact abstracts. Wall-clock
figures: run it on a quiet machine.

    python benchmarks/tokenization.py                  # all-MiniLM-L6-v2
    python benchmarks/tokenization.py --runs 9
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import itertools
import json
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from conan_rag.model.files import resolve_model
from conan_rag.model.spec import read_model_spec
from conan_rag.runtime.backend import Backend

REPO = Path(__file__).resolve().parent.parent


def inputs(n: int) -> dict[str, list[str]]:
    rng = random.Random(0)
    short = ["".join(chr(0x4E00 + rng.randrange(3000)) for _ in range(32)) for _ in range(n)]
    abstracts: list[str] = []
    with gzip.open(REPO / "data" / "scifact" / "corpus.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            doc = json.loads(line)
            abstracts.append(f"{doc['title']} {doc['text']}")
            if len(abstracts) == n:
                break
    return {"short CJK": short, "SciFact abstracts": abstracts}


async def longest_gap(work: Callable[[], object]) -> float:
    """The longest time between 2 ms ticks of this loop while ``work`` runs in a thread."""
    stamps: list[float] = []

    async def tick() -> None:
        while True:
            await asyncio.sleep(0.002)
            stamps.append(time.perf_counter())

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.05)
    start = time.perf_counter()
    await asyncio.to_thread(work)
    end = time.perf_counter()
    ticker.cancel()
    points = [start, *[s for s in stamps if start < s < end], end]
    return max(b - a for a, b in itertools.pairwise(points))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    backend = Backend(read_model_spec(resolve_model(args.model)), "cpu", "float32", compile="off")
    limit = 256
    for name, texts in inputs(args.texts).items():
        paths = {
            "tokenizer(...)": lambda t=texts: backend.tokenizer(
                t, truncation=True, max_length=limit, return_attention_mask=False
            )["input_ids"],
            "runner": lambda t=texts: backend.tokenize(t, limit),
        }
        first, second = (fn() for fn in paths.values())
        assert first == second, "the ids differ"
        times: dict[str, list[float]] = {p: [] for p in paths}
        gaps: dict[str, list[float]] = {p: [] for p in paths}
        for _ in range(args.runs):
            for label, fn in paths.items():
                start = time.perf_counter()
                fn()
                times[label].append(time.perf_counter() - start)
                gaps[label].append(asyncio.run(longest_gap(fn)))
        old, new = (statistics.median(times[p]) for p in paths)
        print(
            f"{len(texts)} {name}: tokenizer(...) {old * 1000:.0f} ms, runner {new * 1000:.0f} ms "
            f"({old / new:.2f}x, median of {args.runs}); longest loop gap, median "
            f"{statistics.median(gaps['tokenizer(...)']) * 1000:.0f} ms vs "
            f"{statistics.median(gaps['runner']) * 1000:.0f} ms, max "
            f"{max(gaps['tokenizer(...)']) * 1000:.0f} ms vs {max(gaps['runner']) * 1000:.0f} ms"
        )


if __name__ == "__main__":
    main()
