"""Peak memory and time of `conan-rag ingest` on one big text file, by file size.

Builds plain-text files of the requested sizes from SciFact abstracts (paragraphs separated by
blank lines, deterministic), ingests each with the real command in a fresh process into a fresh
store, and prints the child's peak RSS (``getrusage``), wall time, chunks and throughput. A
10 kB file gives the baseline (model, Chroma and Python loaded). Memory should not grow with the
file: text is hashed and chunked in windows, and chunks are written in bounded groups.

    python benchmarks/ingest_memory.py --mb 20                # the issue's 20 MB case, MiniLM
    python benchmarks/ingest_memory.py --mb 5 20 50 --dtype float32
    python benchmarks/ingest_memory.py --smoke                # 0.2 MB, for the test suite
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "data" / "scifact" / "corpus.jsonl.gz"
CHILD = (
    "import json, resource, subprocess, sys, time\n"
    "start = time.perf_counter()\n"
    "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "print(json.dumps({'rc': done.returncode, 'seconds': time.perf_counter() - start,\n"
    "    'peak_kb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,\n"
    "    'stdout': done.stdout, 'stderr': done.stderr[-2000:]}))\n"
)


def write_text(path: Path, size: int) -> None:
    """``size`` bytes of abstracts, paragraphs separated by blank lines."""
    with gzip.open(CORPUS, "rt", encoding="utf-8") as fh:
        paragraphs = [
            f"{row['title']}. {row['text']}".strip()
            for row in map(json.loads, fh)
            if row.get("text")
        ]
    written = 0
    with path.open("w", encoding="utf-8") as out:
        for paragraph in itertools.cycle(paragraphs):
            data = paragraph + "\n\n"
            out.write(data)
            written += len(data.encode("utf-8"))
            if written >= size:
                return


def measure(path: Path, model: str, dtype: str, folder: Path) -> dict:
    """Ingest ``path`` with the real CLI in a fresh process; its peak RSS and time."""
    command = [
        str(Path(sys.executable).with_name("conan-rag")),
        "ingest",
        str(path),
        "--db",
        str(folder / f"db-{path.stem}"),
        "--model",
        model,
        "--dtype",
        dtype,
        "--device",
        "cpu",
        "--json",
        "--no-progress",
    ]
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *command], capture_output=True, text=True, check=True
    )
    result = json.loads(done.stdout)
    if result["rc"] != 0:
        raise SystemExit(f"ingest failed ({result['rc']}): {result['stderr']}")
    report = json.loads(result["stdout"])
    return {
        "mb": path.stat().st_size / 1e6,
        "chunks": report["chunks_embedded"],
        "seconds": result["seconds"],
        "peak_mb": result["peak_kb"] / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=float, nargs="+", default=[20.0], help="file sizes in MB")
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--smoke", action="store_true", help="one 0.2 MB file (tests)")
    args = parser.parse_args()
    sizes = [0.2] if args.smoke else args.mb
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows = []
    with tempfile.TemporaryDirectory(prefix="conan-rag-mem-") as tmp:
        folder = Path(tmp)
        for mb in [0.01, *sizes]:
            path = folder / f"text-{mb:g}mb.txt"
            write_text(path, int(mb * 1e6))
            row = measure(path, args.model, args.dtype, folder)
            rows.append(row)
            print(
                f"{row['mb']:>8.2f} MB  {row['chunks']:>7d} chunks  {row['seconds']:>8.1f} s  "
                f"peak RSS {row['peak_mb']:>7.0f} MB  ({row['mb'] / row['seconds']:.3f} MB/s)",
                flush=True,
            )
    base = rows[0]["peak_mb"]
    growth = max(r["peak_mb"] for r in rows[1:]) - base
    print(
        f"model {args.model}, dtype {args.dtype}: baseline {base:.0f} MB, largest growth "
        f"over it {growth:.0f} MB"
    )


if __name__ == "__main__":
    main()
