"""Search load on `conan-rag serve --collection`: warm latency, 32 clients while another process
ingests, and the peer, one `conan-rag query` process per search.

Builds (or reuses) a collection of about 10,000 chunks: SciFact documents (``data/scifact``,
BEIR) ingested with :class:`~conan_rag.rag.pipeline.Pipeline` (all-MiniLM-L6-v2, cpu, float32,
default chunking) into a real ``chroma run`` server, so that a second process can write into the
collection while the conan-rag server searches it (embedded Chroma is not multi-process safe).
The documents the collection starts from are the qrels' relevant ones, then the corpus's first,
up to ``--docs``; the rest of the corpus (then synthetic documents of SciFact sentences, with
fresh ids) is what the writer adds. A reused store is reset to the start set by
``Pipeline.sync`` (unchanged documents are skipped, the writer's are pruned), so reuse costs a
hash of each document. Then it starts ``conan-rag serve --collection NAME --chroma-url URL
--device cpu --dtype float32`` as a process and measures, for each of ``--modes``:

* phase 1, warm single client: a few warm-up searches, then the SciFact test queries one at a
  time (``POST /v1/retrieve``, k=10); p50/p99 latency. Target: hybrid p50 <= 50 ms. Then this
  process ingests one document and times the next three searches (what a change costs: a
  lexical or hybrid search brings the BM25 index in step first).
* phase 1, embedded: the same on a copy of the collection in an embedded store (``conan-rag
  serve --collection NAME --db DIR``, how one process usually serves one machine's collection),
  where a search makes no round trips to a Chroma server. The hybrid target is checked on both.
* phase 2, load: ``--clients`` asyncio clients (one ``httpx.AsyncClient``) search for
  ``--seconds`` while another process (this script with ``--ingest-worker``) ingests new
  documents into the same collection through the Chroma server, ``--ingest-batch`` documents per
  ``Pipeline.ingest`` call (each its own write run), on ``--ingest-threads`` torch threads
  (default 1). The writer is started first and the phase begins once it has written a batch;
  during each phase it must be writing, and still running at its end, and the collection's chunk
  count must grow (printed before and after). Searches/s, p50, p99, max and errors (any
  non-200; the run must have 0).
* phase 3, the peer: ``conan-rag query --chroma-url URL --retrieval MODE --k 10`` as a fresh
  process per search, ``--process-runs`` times (its hits are checked against the server's);
  median wall seconds → searches/s, and the ratio server (phase 2) / peer. Target: >= 3x.

Consistency, checked at the end (the writer stopped): every hit any answer returned exists in
the collection with the same text, and each answer's hits are in the mode's order (cosine for
dense, fused score for lexical and hybrid); answers with fewer than k hits are counted. Phases 1
and 2 are repeated ``--runs`` times (default 1: one phase-2 window per mode) and each figure is
the median; the writer runs across all phase-2 runs. The server, the writer, Chroma and the
clients share the machine's cores. Exit status 1 when a check fails.

    python benchmarks/search_load.py --db /tmp/search_load   # builds once (minutes), then reuses
    python benchmarks/search_load.py --chroma-url http://127.0.0.1:8000   # a Chroma server's
    python benchmarks/search_load.py --smoke                 # about a minute: a few hundred chunks
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import numpy as np

from conan_rag import load_encoder
from conan_rag.rag.evaluation import BeirData, beir_documents, load_beir, subset
from conan_rag.rag.pipeline import Pipeline
from conan_rag.rag.sources.documents import Document
from conan_rag.testing import start_serve_process

REPO = Path(__file__).resolve().parent.parent
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
CLI = Path(sys.executable).with_name("conan-rag")
CHROMA = Path(sys.executable).with_name("chroma")
K = 10
CLIENT_TIMEOUT_S = 300  # a hang guard for one search
WARM_UP = 5
START_S = 300
FRESH_DOCS = 3000  # documents the writer may add (held-out SciFact, then synthetic)


# -- the corpus -----------------------------------------------------------------------------------
@dataclass
class Corpus:
    """The start set, the writer's documents (id, title, text) and the test queries."""

    source: str
    start: list[Document]
    fresh: list[dict[str, str]]
    queries: list[str]
    probes: list[dict[str, str]]  # one document per mode, ingested by this process
    fresh_ids: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.fresh_ids = {row["id"] for row in [*self.fresh, *self.probes]}


def synthetic(data: BeirData, count: int, tag: str, seed: int = 0) -> list[dict[str, str]]:
    """``count`` documents of eight SciFact sentences each, with fresh ids (``new-TAG-N``)."""
    rng = random.Random(seed)
    split = (re.split(r"(?<=\.)\s+", row["text"]) for row in data.corpus.values())
    pool = [s for sentences in split for s in sentences if len(s) > 20]
    return [
        {"id": f"new-{tag}-{n}", "title": f"Synthetic {n}", "text": " ".join(rng.sample(pool, 8))}
        for n in range(count)
    ]


def load_corpus(args: argparse.Namespace) -> Corpus:
    data = load_beir(args.beir)
    start = subset(data, args.docs, args.queries)
    held = [
        {"id": d, "title": row["title"], "text": row["text"]}
        for d, row in data.corpus.items()
        if d not in start.corpus
    ][:FRESH_DOCS]
    made = synthetic(data, FRESH_DOCS - len(held) + len(args.modes), tag=f"{time.time_ns():x}")
    probes, fresh = made[: len(args.modes)], held + made[len(args.modes) :]
    queries = list(start.queries.values())
    return Corpus(f"beir:{start.name}", beir_documents(start), fresh, queries, probes)


# -- the Chroma server and the collection ---------------------------------------------------------
def free_port(wanted: int = 0) -> int:
    """A port no one listens on (``wanted`` if so; a stopped server's lingering connections
    do not count, as for the servers, which bind with ``SO_REUSEADDR``)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", wanted))
        return int(sock.getsockname()[1])


def stable_port(folder: Path) -> int:
    """The port this folder's Chroma server had last time, if free (the lexical index is kept
    per host and port, so a reused store keeps its index); else a free one, remembered."""
    remembered = folder / "chroma.port"
    with contextlib.suppress(OSError, ValueError):
        return free_port(int(remembered.read_text()))
    port = free_port()
    remembered.write_text(str(port))
    return port


def wait_heartbeat(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Until Chroma answers its heartbeat (or has exited, or did not start in time)."""
    deadline = time.monotonic() + START_S
    while True:
        try:
            with urllib.request.urlopen(f"{url}/api/v2/heartbeat", timeout=2):
                return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"chroma run did not start; see {log}") from None
            time.sleep(0.3)


@contextlib.contextmanager
def chroma_server(folder: Path) -> Iterator[str]:
    """``chroma run`` on ``folder/chroma`` (as ``tests/pipeline_helpers.chroma_server``)."""
    folder.mkdir(parents=True, exist_ok=True)
    port = stable_port(folder)
    url = f"http://127.0.0.1:{port}"
    command = [str(CHROMA), "run", "--path", str(folder / "chroma"), "--port", str(port)]
    with (folder / "chroma.log").open("wb") as log:
        proc = subprocess.Popen([*command, "--host", "127.0.0.1"], stdout=log, stderr=log)
        try:
            wait_heartbeat(url, proc, folder / "chroma.log")
            yield url
        finally:
            stop(proc, 30)


def stop(proc: subprocess.Popen[Any], wait_s: float) -> int:
    """Terminate ``proc`` (killed after ``wait_s``); its exit status."""
    if proc.poll() is None:
        proc.terminate()
    try:
        return proc.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def build_collection(args: argparse.Namespace, url: str, corpus: Corpus) -> Pipeline:
    """The collection brought to the start set; prints what the sync did and the chunk count."""
    encoder = load_encoder(args.model, device="cpu", dtype="float32")
    pipe = Pipeline(encoder, url=url, collection=args.collection)
    start = time.perf_counter()
    report = pipe.sync(corpus.start, show_progress=not args.smoke)
    print(
        f"collection {args.collection} at {url}: {pipe.store.count():,} chunks from "
        f"{len(corpus.start):,} SciFact documents (sync {time.perf_counter() - start:.1f} s: "
        f"{report.added} added, {report.unchanged} unchanged, {report.deleted} pruned); "
        f"model={encoder.model_id} device={encoder.device} dtype={encoder.dtype} "
        f"cpus={os.cpu_count()}"
    )
    return pipe


# -- the writer: another process ingesting into the collection -----------------------------------
def ingest_worker(args: argparse.Namespace) -> None:
    """``--ingest-worker FILE``: ingest FILE's documents in batches until ``--stop-file`` exists.

    Prints a JSON line as each batch begins (``begin``: ``time.monotonic()``, one clock for the
    processes of a machine) and one as it ends (``t``, and the documents and chunks written so
    far).
    """
    import torch

    torch.set_num_threads(args.ingest_threads)
    rows = json.loads(Path(args.ingest_worker).read_text("utf-8"))
    encoder = load_encoder(args.model, device="cpu", dtype="float32")
    pipe = Pipeline(encoder, url=args.chroma_url, collection=args.collection, create=False)
    stop_file, docs, chunks = Path(args.stop_file), 0, 0
    print(json.dumps({"ready": True, "t": time.monotonic()}), flush=True)
    for first in range(0, len(rows), args.ingest_batch):
        if stop_file.exists():
            break
        batch = [
            Document(r["id"], r["text"], args.source, title=r["title"])
            for r in rows[first : first + args.ingest_batch]
        ]
        print(json.dumps({"begin": time.monotonic()}), flush=True)
        report = pipe.ingest(batch)
        docs, chunks = docs + len(batch), chunks + report.chunks_embedded
        print(json.dumps({"t": time.monotonic(), "docs": docs, "chunks": chunks}), flush=True)
    print(json.dumps({"done": not stop_file.exists(), "t": time.monotonic()}), flush=True)


class Writer:
    """The ingest worker process, and the batches it reported (read by a thread)."""

    def __init__(self, args: argparse.Namespace, url: str, corpus: Corpus, work: Path) -> None:
        (work / "fresh.json").write_text(json.dumps(corpus.fresh), "utf-8")
        self.stop_file = work / "stop"
        self.stop_file.unlink(missing_ok=True)
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            *("--ingest-worker", str(work / "fresh.json"), "--stop-file", str(self.stop_file)),
            *("--chroma-url", url, "--collection", args.collection, "--model", args.model),
            *("--source", corpus.source, "--ingest-batch", str(args.ingest_batch)),
            *("--ingest-threads", str(args.ingest_threads)),
        ]
        self.proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True)
        self.batches: list[dict[str, Any]] = []  # each as it ended
        self.begins: list[float] = []
        self._wrote = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            event = json.loads(line)
            if "begin" in event:
                self.begins.append(event["begin"])
            if "docs" in event:
                self.batches.append(event)
                self._wrote.set()

    def wait_first_batch(self, timeout_s: float = START_S) -> None:
        """Block until the writer has written a batch (it is then writing for sure)."""
        deadline = time.monotonic() + timeout_s
        while not self._wrote.wait(0.5):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the ingest worker wrote nothing (exited or timed out)")

    def busy(self, start: float, end: float) -> bool:
        """Whether a batch was being written at some moment between the two readings."""
        ends = [b["t"] for b in list(self.batches)]
        return any(
            began <= end and (n >= len(ends) or ends[n] >= start)
            for n, began in enumerate(list(self.begins))
        )

    def during(self, start: float, end: float) -> list[dict[str, Any]]:
        """The batches written between two ``time.monotonic()`` readings."""
        return [b for b in list(self.batches) if start <= b["t"] <= end]

    def chunks_by(self, when: float) -> int:
        """Chunks the writer had written by a ``time.monotonic()`` reading."""
        done = [b["chunks"] for b in list(self.batches) if b["t"] <= when]
        return int(done[-1]) if done else 0

    def finish(self) -> int:
        """Ask the writer to stop after its batch; its exit status."""
        self.stop_file.touch()
        try:
            return self.proc.wait(timeout=START_S)
        except subprocess.TimeoutExpired:
            return stop(self.proc, 10)


# -- what the answers must satisfy ----------------------------------------------------------------
@dataclass
class Seen:
    """Every hit returned (id → text), answers out of their mode's order, texts that varied."""

    texts: dict[str, str] = field(default_factory=dict)
    answers: int = 0
    misordered: int = 0
    varied: int = 0
    fresh_hits: int = 0  # hits of documents added during the run
    short: int = 0  # answers with fewer than K hits

    def add(self, hits: list[dict[str, Any]], mode: str, fresh: set[str]) -> None:
        self.answers += 1
        self.short += len(hits) < K
        key = "score" if mode == "dense" else "fused_score"
        scores = [h[key] for h in hits]
        if any(s is None for s in scores) or any(a < b for a, b in itertools.pairwise(scores)):
            self.misordered += 1
        for hit in hits:
            if self.texts.setdefault(hit["id"], hit["text"]) != hit["text"]:
                self.varied += 1
            self.fresh_hits += hit["metadata"].get("doc_id") in fresh


def missing_or_changed(pipe: Pipeline, texts: dict[str, str]) -> tuple[int, int]:
    """Hits whose chunk is no longer in the collection, and those whose text differs now."""
    ids = list(texts)
    missing = changed = 0
    for first in range(0, len(ids), 1000):
        some = ids[first : first + 1000]
        got = pipe.store.get(some, ("texts",))
        now = dict(zip(got.ids, got.texts or [], strict=True))
        missing += sum(i not in now for i in some)
        changed += sum(i in now and now[i] != texts[i] for i in some)
    return missing, changed


# -- the benchmark's state ------------------------------------------------------------------------
@dataclass
class Bench:
    """What the phases share: options, corpus, this process's pipeline, URLs, what was seen."""

    args: argparse.Namespace
    corpus: Corpus
    pipe: Pipeline
    chroma: str
    server: str = ""
    seen: Seen = field(default_factory=Seen)
    failures: list[str] = field(default_factory=list)


@dataclass
class Window:
    """One measured stretch of searches."""

    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    wall: float = 0.0
    start: float = field(default_factory=time.monotonic)

    def summary(self) -> dict[str, float]:
        ms = np.asarray(self.latencies or [0.0]) * 1000
        return {
            "rps": len(self.latencies) / max(self.wall, 1e-9),
            "p50": float(np.percentile(ms, 50)),
            "p99": float(np.percentile(ms, 99)),
            "max": float(ms.max()),
            "errors": float(len(self.errors)),
        }


# -- phases 1 and 2: HTTP clients -----------------------------------------------------------------
async def search(
    client: httpx.AsyncClient, bench: Bench, query: str, mode: str, window: Window
) -> float | None:
    """One ``POST /v1/retrieve`` (its hits checked into ``bench.seen``); seconds, or None.

    A failure (a non-200 answer or no answer) is noted in ``window.errors``.
    """
    body = {"query": query, "options": {"k": K, "retrieval": mode}}
    start = time.perf_counter()
    try:
        response = await client.post(f"{bench.server}/v1/retrieve", json=body)
    except httpx.HTTPError as exc:
        window.errors.append(f"{type(exc).__name__}: {exc}")
        return None
    if response.status_code != 200:
        window.errors.append(f"{response.status_code}: {response.text[:200]}")
        return None
    seconds = time.perf_counter() - start
    window.latencies.append(seconds)
    bench.seen.add(response.json()["data"][0]["hits"], mode, bench.corpus.fresh_ids)
    return seconds


async def one_by_one(client: httpx.AsyncClient, bench: Bench, mode: str) -> Window:
    """Phase 1: the queries one at a time."""
    window = Window()
    start = time.perf_counter()
    for query in bench.corpus.queries:
        await search(client, bench, query, mode, window)
    window.wall = time.perf_counter() - start
    return window


async def under_load(client: httpx.AsyncClient, bench: Bench, mode: str) -> Window:
    """Phase 2: ``--clients`` clients searching for ``--seconds`` (the queries cycled)."""
    window = Window()
    order = itertools.cycle(bench.corpus.queries)
    deadline = time.perf_counter() + bench.args.seconds

    async def one() -> None:
        while time.perf_counter() < deadline:
            await search(client, bench, next(order), mode, window)

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(bench.args.clients)))
    window.wall = time.perf_counter() - start
    return window


async def chunk_count(client: httpx.AsyncClient, bench: Bench) -> int:
    """The collection's chunks, as ``GET /v1/collections`` reports them."""
    response = await client.get(f"{bench.server}/v1/collections")
    response.raise_for_status()
    return int(response.json()["data"][0]["chunks"])


async def after_change(client: httpx.AsyncClient, bench: Bench, mode: str) -> str:
    """Ingest one document here (a conan-rag write), then time the next three searches."""
    row = bench.corpus.probes.pop()
    doc = Document(row["id"], row["text"], bench.corpus.source, title=row["title"])
    await asyncio.to_thread(bench.pipe.ingest, [doc])
    window = Window()
    for query in bench.corpus.queries[:3]:
        await search(client, bench, query, mode, window)
    bench.failures += [f"{mode}: {e}" for e in window.errors]
    return ", ".join(f"{s * 1000:.0f}" for s in window.latencies)


def line(label: str, r: dict[str, float]) -> str:
    return (
        f"  {label:<8} {r['rps']:7.1f} searches/s  p50 {r['p50']:7.1f} ms  "
        f"p99 {r['p99']:7.1f} ms  max {r['max']:7.1f} ms  errors {r['errors']:.0f}"
    )


def median(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


async def phase_one(client: httpx.AsyncClient, bench: Bench) -> None:
    queries = bench.corpus.queries
    print(f"phase 1: one client, {len(queries)} test queries one at a time, k={K}")
    for mode in bench.args.modes:
        warm = Window()
        cold = await search(client, bench, queries[0], mode, warm)  # hybrid: the index loads
        for query in queries[1:WARM_UP]:
            await search(client, bench, query, mode, warm)
        runs = [(await one_by_one(client, bench, mode)) for _ in range(bench.args.runs)]
        for window in [warm, *runs]:
            bench.failures += [f"{mode}: {e}" for e in window.errors[:5]]
        result = median([w.summary() for w in runs])
        print(line(mode, result) + f"  (first search {(cold or 0) * 1000:.0f} ms)")
        changed = await after_change(client, bench, mode)
        print(f"  {mode:<8} the 3 searches after a one-document ingest: {changed} ms")
        if mode == "hybrid":
            met = "met" if result["p50"] <= 50 else "MISSED"
            print(f"  hybrid p50 {result['p50']:.1f} ms (target <= 50 ms: {met})")


async def phase_two(
    client: httpx.AsyncClient, bench: Bench, writer: Writer
) -> dict[str, dict[str, float]]:
    args = bench.args
    print(f"phase 2: {args.clients} clients for {args.seconds:g} s per mode while a writer ingests")
    results = {}
    for mode in args.modes:
        runs = []
        for _ in range(args.runs):
            before = await chunk_count(client, bench)
            window = await under_load(client, bench, mode)
            end, alive = time.monotonic(), writer.proc.poll() is None
            after = await chunk_count(client, bench)
            busy = writer.busy(window.start, end)
            wrote = writer.during(window.start, end)
            chunks = writer.chunks_by(end) - writer.chunks_by(window.start)
            print(
                f"  {mode:<8} chunks {before:,} -> {after:,}; the writer finished {len(wrote)} "
                f"batches ({chunks} chunks) in the phase, was {'' if busy else 'NOT '}writing "
                f"during it and {'still running' if alive else 'NOT running'} at its end"
            )
            if after <= before or not busy or not alive:
                bench.failures.append(f"{mode}: the ingest did not overlap the phase")
            bench.failures += [f"{mode}: {e}" for e in window.errors[:5]]
            runs.append(window.summary())
        results[mode] = median(runs)
        print(line(mode, results[mode]))
    return results


async def measure(bench: Bench, start_writer: Callable[[], Writer]) -> dict[str, dict[str, float]]:
    """Phases 1 and 2; the writer is started between them."""
    clients = bench.args.clients
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=CLIENT_TIMEOUT_S) as client:
        await phase_one(client, bench)
        writer = start_writer()
        writer.wait_first_batch()
        return await phase_two(client, bench, writer)


# -- phase 3: one process per query ---------------------------------------------------------------
def process_query(bench: Bench, query: str, mode: str) -> tuple[float, list[str]]:
    """One ``conan-rag query`` process: its wall seconds and hit ids."""
    where = ["--chroma-url", bench.chroma, "--collection", bench.args.collection]
    options = ["--retrieval", mode, "--k", str(K), "--device", "cpu", "--dtype", "float32"]
    command = [str(CLI), "query", query, *where, *options, "--no-progress", "--json"]
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"conan-rag query failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return wall, [h["id"] for h in json.loads(proc.stdout)["hits"]]


def served_ids(bench: Bench, query: str, mode: str) -> list[str]:
    body = {"query": query, "options": {"k": K, "retrieval": mode}}
    answer = httpx.post(f"{bench.server}/v1/retrieve", json=body, timeout=300).json()
    return [h["id"] for h in answer["data"][0]["hits"]]


def phase_three(bench: Bench, loaded: dict[str, dict[str, float]]) -> None:
    args = bench.args
    print(f"phase 3: one `conan-rag query` process per search, {args.process_runs} runs per mode")
    for mode in args.modes:
        walls, same = [], 0
        for query in bench.corpus.queries[: args.process_runs]:
            wall, ids = process_query(bench, query, mode)
            walls.append(wall)
            same += ids == served_ids(bench, query, mode)
        wall = statistics.median(walls)
        ratio = loaded[mode]["rps"] * wall
        print(
            f"  {mode:<8} median {wall:.2f} s per process = {1 / wall:.3f} searches/s; hits "
            f"equal to the server's: {same}/{len(walls)}; server ({args.clients} clients) / one "
            f"process per query: {ratio:.0f}x (target >= 3x: {'met' if ratio >= 3 else 'MISSED'})"
        )
        if same != len(walls):
            bench.failures.append(f"{mode}: `conan-rag query` and the server answered differently")


# -- the run --------------------------------------------------------------------------------------
def check(bench: Bench, writer: Writer) -> None:
    """The consistency checks on every answer (the writer has stopped)."""
    seen = bench.seen
    missing, changed = missing_or_changed(bench.pipe, seen.texts)
    written = writer.batches[-1] if writer.batches else {"docs": 0, "chunks": 0}
    print(
        f"consistency: {seen.answers:,} answers, {len(seen.texts):,} distinct hits; missing now "
        f"{missing}, text changed {changed}, text varied between answers {seen.varied}, answers "
        f"out of order {seen.misordered}, answers with fewer than {K} hits {seen.short}; hits of "
        f"documents added during the run {seen.fresh_hits}; "
        f"the writer added {written['docs']} documents ({written['chunks']} chunks) in "
        f"{len(writer.batches)} batches; collection now {bench.pipe.store.count():,} chunks"
    )
    bad = {"missing": missing, "changed": changed, "varied": seen.varied}
    bad["out of order"] = seen.misordered
    bench.failures += [f"consistency: {n} {name}" for name, n in bad.items() if n]


SERVE_OPTIONS = ["--port", "0", "--device", "cpu", "--dtype", "float32", "--log-level", "warning"]


def embedded_copy(bench: Bench, folder: Path) -> Path:
    """The collection copied into an embedded store at ``folder`` (kept when already whole)."""
    from conan_rag.rag.ingest.sink import StoreSink
    from conan_rag.rag.store import ChromaStore, open_client

    store = ChromaStore.open(open_client(folder), bench.args.collection, bench.pipe.encoder)
    source = bench.pipe.store
    if store.count() != source.count():
        sink = StoreSink(store)
        for page in source.scan(fields=("texts", "metadatas", "vectors"), page=2000):
            sink.upsert(page.ids, page.vectors, page.texts, page.metadatas)
    return folder


def phase_one_embedded(bench: Bench, folder: Path) -> None:
    """Phase 1 again on an embedded copy (``serve --collection --db``): no Chroma round trips."""
    db = embedded_copy(bench, folder)
    serve = ["--collection", bench.args.collection, "--db", str(db), *SERVE_OPTIONS]
    proc, url = start_serve_process(serve, cwd=REPO, start_s=START_S)
    queries = bench.corpus.queries
    print(f"phase 1, embedded store ({db}): one client, {len(queries)} queries, k={K}")

    async def measure_modes() -> None:
        async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT_S) as client:
            embedded = Bench(bench.args, bench.corpus, bench.pipe, bench.chroma, server=url)
            for mode in bench.args.modes:
                for query in queries[:WARM_UP]:
                    await search(client, embedded, query, mode, Window())
                runs = [(await one_by_one(client, embedded, mode)) for _ in range(bench.args.runs)]
                bench.failures += [f"embedded {mode}: {e}" for w in runs for e in w.errors[:5]]
                result = median([w.summary() for w in runs])
                target = "  (target <= 50 ms: " + ("met)" if result["p50"] <= 50 else "MISSED)")
                print(line(mode, result) + (target if mode == "hybrid" else ""))

    try:
        asyncio.run(measure_modes())
    finally:
        stop(proc, 120)


def run(args: argparse.Namespace, chroma: str, work: Path) -> list[str]:
    """Every phase against the Chroma server at ``chroma``; the checks that failed."""
    corpus = load_corpus(args)
    bench = Bench(args, corpus, build_collection(args, chroma, corpus), chroma)
    phase_one_embedded(bench, (args.db or work) / "embedded")
    serve = ["--collection", args.collection, "--chroma-url", chroma, *SERVE_OPTIONS]
    proc, bench.server = start_serve_process(serve, cwd=REPO, start_s=START_S)
    writers: list[Writer] = []

    def start_writer() -> Writer:
        writers.append(Writer(args, chroma, corpus, work))
        return writers[-1]

    try:
        loaded = asyncio.run(measure(bench, start_writer))
        status = writers[0].finish()
        bench.failures += [f"the ingest worker exited with {status}"] if status else []
        check(bench, writers[0])
        phase_three(bench, loaded)
    finally:
        for writer in writers:
            stop(writer.proc, 10)
        stop(proc, 120)
    return bench.failures


def forget_lexical(chroma: str, collection: str) -> None:
    """Remove the lexical index a throw-away server's collection left in the user cache."""
    parsed = urlparse(chroma)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    folder = cache / "conan_rag" / "lexical" / f"{parsed.hostname}_{parsed.port}"
    for path in folder.glob(f"{collection}.*"):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    with contextlib.suppress(OSError):
        folder.rmdir()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=MINILM)
    parser.add_argument("--beir", default=str(REPO / "data/scifact"))
    parser.add_argument("--db", type=Path, help="folder for the Chroma server (kept, reused)")
    parser.add_argument("--chroma-url", help="a running Chroma server instead of --db")
    parser.add_argument("--collection", default="search_load")
    parser.add_argument("--docs", type=int, default=4950, help="SciFact documents to start from")
    parser.add_argument("--queries", type=int, default=None, help="test queries (default all)")
    parser.add_argument("--modes", nargs="+", default=["dense", "hybrid"])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--runs", type=int, default=1, help="phase 1 and 2 runs (median)")
    parser.add_argument("--process-runs", type=int, default=5)
    parser.add_argument("--ingest-batch", type=int, default=8, help="documents per ingest call")
    parser.add_argument("--ingest-threads", type=int, default=1, help="the writer's torch threads")
    parser.add_argument("--smoke", action="store_true", help="a few hundred chunks, seconds")
    hidden = argparse.SUPPRESS
    parser.add_argument("--ingest-worker", help=hidden)
    parser.add_argument("--stop-file", help=hidden)
    parser.add_argument("--source", help=hidden)
    args = parser.parse_args()
    if args.smoke:
        args.docs, args.queries, args.clients, args.seconds = 100, 20, 4, 3.0
        args.process_runs, args.runs, args.ingest_batch = 1, 1, 2
    return args


def main() -> None:
    args = parse_args()
    if args.ingest_worker:
        ingest_worker(args)
        return
    start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="conan-search-load-"))
    try:
        if args.chroma_url:
            failures = run(args, args.chroma_url, work)
        else:
            with chroma_server(args.db or work / "store") as chroma:
                failures = run(args, chroma, work)
                if args.db is None:
                    forget_lexical(chroma, args.collection)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"wall {time.perf_counter() - start:.0f} s")
    for failure in failures:
        print(f"FAILED {failure}")
    if failures:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
