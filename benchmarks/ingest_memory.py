"""Peak memory and time of `conan-rag ingest`: many small files, or one big text file.

Each case runs the real command (the ``conan-rag`` console script) in a fresh process into a
fresh store, and samples the child's resident memory every 0.2 s (``psutil``, else
``/proc/PID/status``); the peak is the kernel's (``getrusage`` of the child).

* **Many small files** (``--files``, issue 23): N plain-text files of a couple of sentences each
  (distinct, deterministic: words recombined by the file's index, one chunk per file). Prints
  peak RSS, RSS at 25/50/75/100 % of the run's time, wall time and chunks per size, then the
  slope of peak RSS against chunks between the sizes (kB per chunk). Memory should be bounded by
  what is in flight, not grow with the files ingested (a 384-dim float32 vector is 1.5 kB).
* **One big file** (``--mb``): files of the requested sizes built from SciFact abstracts
  (paragraphs separated by blank lines). A 10 kB file gives the baseline (model, Chroma and
  Python loaded). Text is hashed and chunked in windows, and chunks are written in bounded
  groups, so memory should not grow with the file.

Usage::

    python benchmarks/ingest_memory.py                        # --files 5000 20000, MiniLM
    python benchmarks/ingest_memory.py --files 20000 --model PATH
    python benchmarks/ingest_memory.py --mb 20                # one 20 MB file
    python benchmarks/ingest_memory.py --mb 5 20 50 --dtype float32
    python benchmarks/ingest_memory.py --vectors 4000 20000   # Chroma alone: kB per vector
    python benchmarks/ingest_memory.py --smoke                # small sizes of each, for tests

``--env MALLOC_ARENA_MAX=2`` (repeatable) sets variables for the child, to tell allocator
fragmentation from memory in use.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "data" / "scifact" / "corpus.jsonl.gz"
SAMPLE_S = 0.2
WORD_TEXT = (
    "river stone garden signal winter copper lantern harbor meadow engine orbit velvet "
    "canyon ember falcon glacier hollow island jasmine kettle ladder marble needle orchard "
    "pepper quartz saddle timber umbrella valley willow yarrow zephyr anchor basket candle "
    "desert echo feather granite horizon ivory jungle kernel lemon mirror nectar oyster "
    "pillow quiver ribbon shadow thunder violet walnut cobalt dynamo fossil gravel hammer "
    "insect jigsaw kayak lizard magnet"
)
WORDS = WORD_TEXT.split()  # the words the small files recombine


def write_files(folder: Path, count: int) -> None:
    """``count`` small text files, two distinct sentences each (seeded by the file's index)."""
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        rng = random.Random(index)
        first = " ".join(rng.choice(WORDS) for _ in range(12))
        second = " ".join(rng.choice(WORDS) for _ in range(10))
        text = f"Note {index}: the {first}.\nIt mentions {second} and item {index * 7919}.\n"
        (folder / f"note-{index:06d}.txt").write_text(text, encoding="utf-8")


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


def rss_kb(pid: int) -> int:
    """Resident memory of ``pid`` in kB (0 once it is gone)."""
    try:
        import psutil

        return int(psutil.Process(pid).memory_info().rss // 1024)
    except ImportError:
        pass
    except Exception:  # noqa: BLE001 - the process ended between two samples
        return 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def measure(path: Path, args: argparse.Namespace, folder: Path) -> dict:
    """Ingest ``path`` with the real CLI in a fresh process, sampling its RSS; the figures."""
    command = [
        str(Path(sys.executable).with_name("conan-rag")),
        "ingest",
        str(path),
        "--db",
        str(folder / f"db-{path.name}"),
        "--model",
        args.model,
        "--dtype",
        args.dtype,
        "--device",
        "cpu",
        "--json",
        "--no-progress",
    ]
    env = {**os.environ, **dict(item.split("=", 1) for item in args.env)}
    out_path, err_path = folder / "stdout.json", folder / "stderr.txt"
    samples: list[tuple[float, int]] = []
    with out_path.open("w") as out, err_path.open("w") as err:
        start = time.perf_counter()
        child = subprocess.Popen(command, stdout=out, stderr=err, env=env)
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            samples.append((time.perf_counter() - start, rss_kb(child.pid)))
            time.sleep(SAMPLE_S)
        seconds = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"ingest failed ({child.returncode}): {err_path.read_text()[-2000:]}")
    report = json.loads(out_path.read_text())
    peak_kb = max(usage.ru_maxrss, *(kb for _, kb in samples))  # wait4: the child's own peak
    at = {}
    for share in (25, 50, 75, 100):
        before = [kb for t, kb in samples if t <= seconds * share / 100 and kb]
        at[share] = (before[-1] if before else 0) / 1024
    return {
        "chunks": int(report["chunks_embedded"]),
        "documents": int(report["documents"]),
        "seconds": seconds,
        "peak_mb": peak_kb / 1024,
        "at_mb": at,
    }


def slope_kb(rows: list[dict]) -> float | None:
    """Least-squares slope of peak RSS against chunks, in kB per chunk."""
    if len({r["chunks"] for r in rows}) < 2:
        return None
    xs, ys = [r["chunks"] for r in rows], [r["peak_mb"] * 1024 for r in rows]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    num = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    return num / sum((x - mx) ** 2 for x in xs)


def run_files(counts: list[int], args: argparse.Namespace, tmp: Path) -> None:
    """The many-small-files case, one fresh folder and store per count."""
    rows = []
    for count in counts:
        folder = tmp / f"files-{count}"
        write_files(folder, count)
        row = measure(folder, args, tmp)
        rows.append(row)
        at = " ".join(f"{share}%:{mb:.0f}" for share, mb in row["at_mb"].items())
        print(
            f"{count:>7d} files  {row['chunks']:>7d} chunks  {row['seconds']:>7.1f} s  "
            f"peak RSS {row['peak_mb']:>6.0f} MB  (RSS MB at {at})",
            flush=True,
        )
    slope = slope_kb(rows)
    fit = "n/a (one size)" if slope is None else f"{slope:.2f} kB per chunk"
    print(f"model {args.model}, dtype {args.dtype}: peak RSS slope {fit}")


def run_big(sizes: list[float], args: argparse.Namespace, tmp: Path) -> None:
    """The one-big-file case, with a 10 kB baseline first."""
    rows = []
    for mb in [0.01, *sizes]:
        path = tmp / f"text-{mb:g}mb.txt"
        write_text(path, int(mb * 1e6))
        row = measure(path, args, tmp)
        row["mb"] = path.stat().st_size / 1e6
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


# Chroma alone: random unit vectors upserted with the pipeline's metadata shape, RSS noted.
STORE_CHILD = """
import sys, tempfile, numpy as np, chromadb
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
marks = sorted(int(n) for n in sys.argv[1:])
col = chromadb.PersistentClient(path=tempfile.mkdtemp()).get_or_create_collection(
    "memory", embedding_function=None, metadata={"hnsw:space": "cosine"})
rng, n, step = np.random.default_rng(0), 0, 500
while n < marks[-1]:
    v = rng.standard_normal((step, 384)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    ids = [f"c{n + i}" for i in range(step)]
    meta = [{"source": f"/data/f{n + i}.txt", "doc_id": f"/data/f{n + i}.txt", "chunk": 0,
             "hash": "ab" * 16, "chunks": 1} for i in range(step)]
    col.upsert(ids=ids, embeddings=v, metadatas=meta,
               documents=[f"Chunk {n + i} of a small file about genes." for i in range(step)])
    n += step
    if n in marks:
        print(n, rss(), flush=True)
"""


def run_store(counts: list[int]) -> None:
    """RSS of Chroma alone at each vector count (a fresh process), and its kB per vector."""
    marks = [max(500, round(c / 500) * 500) for c in counts]
    out = subprocess.run(
        [sys.executable, "-c", STORE_CHILD, *map(str, marks)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [tuple(int(x) for x in line.split()) for line in out.splitlines() if line.strip()]
    for n, kb in rows:
        print(f"  Chroma alone, {n:>6} vectors: RSS {kb / 1024:7.0f} MB", flush=True)
    if len(rows) >= 2:
        (n0, kb0), (n1, kb1) = rows[0], rows[-1]
        print(f"Chroma alone: {(kb1 - kb0) / (n1 - n0):.2f} kB per 384-d vector", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--files", type=int, nargs="+", help="small-file counts (default 5000 20000 without --mb)"
    )
    parser.add_argument("--mb", type=float, nargs="+", help="one big file of these sizes in MB")
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the child")
    parser.add_argument(
        "--vectors", type=int, nargs="+", help="Chroma alone: RSS at these vector counts"
    )
    parser.add_argument("--smoke", action="store_true", help="40/80 files and 0.2 MB (tests)")
    args = parser.parse_args()
    counts, sizes, vectors = args.files, args.mb, args.vectors
    if args.smoke:
        counts, sizes, vectors = [40, 80], [0.2], [500, 1000]
    elif not counts and not sizes and not vectors:
        counts = [5000, 20000]
    if vectors:
        run_store(vectors)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="conan-rag-mem-") as tmp:
        if counts:
            run_files(counts, args, Path(tmp))
        if sizes:
            run_big(sizes, args, Path(tmp))


if __name__ == "__main__":
    main()
