"""Ingest overhead: the whole pipeline (load, chunk, embed, upsert) vs encoding the same chunks.

    python benchmarks/ingest_overhead.py --limit 500
    python benchmarks/ingest_overhead.py --model /path/to/Conan-embedding-v1 --limit 0  # all

Prints both times and their ratio (target <= 1.2x). The encoder is warmed up first; the
pipeline writes into a fresh temporary embedded Chroma store.
"""

from __future__ import annotations

import argparse
import gzip
import json
import tempfile
import time
from pathlib import Path

from conan_rag import load_encoder
from conan_rag.rag.chunking import Chunker
from conan_rag.rag.pipeline import Pipeline
from conan_rag.rag.sources.documents import read_file

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--corpus", default=str(REPO / "data/scifact/corpus.jsonl.gz"))
    parser.add_argument("--limit", type=int, default=500, help="documents (0 = all)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    args = parser.parse_args()

    encoder = load_encoder(args.model, device=args.device, dtype=args.dtype)
    encoder.encode(["warm up"] * 8)
    with tempfile.TemporaryDirectory() as folder:
        corpus = Path(folder) / "corpus.jsonl"
        with gzip.open(args.corpus, "rt", encoding="utf-8") as fh:
            lines = fh.read().splitlines()
        corpus.write_text("\n".join(lines[: args.limit or None]) + "\n", encoding="utf-8")
        n_docs = min(len(lines), args.limit or len(lines))

        # Encoding alone: the exact texts the pipeline embeds, chunked beforehand (untimed).
        chunker = Chunker(encoder)
        texts = [c.embed_text for d in read_file(corpus) for c in chunker.chunk(d)]

        def encode_only() -> float:
            start = time.perf_counter()
            encoder.encode(texts)
            return time.perf_counter() - start

        # Interleave (encode, pipeline, encode) so a busy machine skews both sides alike.
        before = encode_only()
        pipe = Pipeline(encoder, db=Path(folder) / "db", collection="bench")
        start = time.perf_counter()
        report = pipe.ingest([corpus])
        pipeline_s = time.perf_counter() - start
        encode_s = (before + encode_only()) / 2

    ratio = pipeline_s / encode_s
    print(
        json.dumps(
            {
                "model": encoder.model_id,
                "device": encoder.device,
                "dtype": encoder.dtype,
                "documents": n_docs,
                "chunks": len(texts),
                "chunks_embedded": report.chunks_embedded,
                "pipeline_s": round(pipeline_s, 2),
                "encode_only_s": round(encode_s, 2),
                "ratio": round(ratio, 3),
                "target": "<= 1.2",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
