"""``make demo``: embed a few sentences with the bundled all-MiniLM-L6-v2 and print similarities.

Example:
    >>> main()  # doctest: +SKIP
"""

from __future__ import annotations

import os

from conan_rag.encoder import load_encoder

SENTENCES = [
    "A man is playing a guitar.",
    "Someone plays an acoustic guitar on stage.",
    "The stock market fell sharply today.",
    "一个男人在弹吉他。",
]


def main() -> None:
    """Print the cosine-similarity matrix of a few sentences."""
    model = os.environ.get("CONAN_RAG_MODEL", "sentence-transformers/all-MiniLM-L6-v2")
    encoder = load_encoder(model)
    vectors = encoder.encode(SENTENCES)
    print(encoder)
    sims = vectors @ vectors.T
    for i, text in enumerate(SENTENCES):
        row = "  ".join(f"{s:+.3f}" for s in sims[i])
        print(f"{row}  {text}")


if __name__ == "__main__":
    main()
