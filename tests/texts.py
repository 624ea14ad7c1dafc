"""Varied real test texts: English and Chinese STS sentences, mixed, empty, over-long."""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "data"


def sts_english(n: int) -> list[str]:
    """First ``n`` distinct English sentences of the STS Benchmark test set."""
    out: dict[str, None] = {}
    for line in (DATA / "sts" / "stsbenchmark-test.csv").read_text(encoding="utf-8").splitlines():
        cols = line.split("\t")
        if len(cols) >= 7:
            out.setdefault(cols[5], None)
            out.setdefault(cols[6], None)
        if len(out) >= n:
            break
    return list(out)[:n]


def sts_chinese(n: int) -> list[str]:
    """First ``n`` distinct Chinese sentences of the Chinese STS-B test set."""
    out: dict[str, None] = {}
    for line in (DATA / "sts" / "stsb-zh.test.tsv").read_text(encoding="utf-8").splitlines():
        cols = line.split("\t")
        if len(cols) >= 2:
            out.setdefault(cols[0], None)
            out.setdefault(cols[1], None)
        if len(out) >= n:
            break
    return list(out)[:n]


def varied_texts(n_en: int = 260, n_zh: int = 200) -> list[str]:
    """At least ``n_en + n_zh + 40`` texts of every kind the encoder must handle."""
    en, zh = sts_english(n_en), sts_chinese(n_zh)
    mixed = [f"{a} {b}" for a, b in zip(en[:20], zh[:20])]
    long_texts = [" ".join(en[i : i + 40]) for i in range(0, 200, 20)]  # beyond 256 tokens
    long_texts += ["".join(zh[i : i + 40]) for i in range(0, 120, 20)]  # beyond 512 chars
    odd = ["", " ", "\n\n", "a", "中", "  leading and trailing  ", "ÀÉÎÕÜ ñ ç", "emoji 🙂 text"]
    return en + zh + mixed + long_texts + odd
