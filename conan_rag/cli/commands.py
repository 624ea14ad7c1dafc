"""The ``conan-rag`` commands: ingest, load, query, eval, info, demo and serve.

Each command checks what it cheaply can first (paths, options, the store folder), then loads the
model, then opens the store, so a failure leaves nothing behind. Library errors are turned into
advice about flags by :mod:`conan_rag.cli.advice`.

Example:
    >>> import tempfile
    >>> from conan_rag.cli.parser import build_parser
    >>> from conan_rag.demo import CORPUS
    >>> args = build_parser().parse_args(["ingest", str(CORPUS), "--db", tempfile.mkdtemp(),
    ...     "--model", "sentence-transformers/all-MiniLM-L6-v2", "--json", "--no-progress"])
    >>> cmd_ingest(args)  # doctest: +ELLIPSIS
    {
      "added": 6,
    ...
    0
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from conan_rag.adapter_kit import open_encoder
from conan_rag.encoder import Encoder
from conan_rag.errors import ConanConfigError, InputPathError
from conan_rag.model.files import DEFAULT_MODEL
from conan_rag.protocols import EncoderLike
from conan_rag.rag.chunking import ChunkConfig, Chunker, ChunkMode
from conan_rag.rag.ingest.export import check_export_folder
from conan_rag.rag.ingest.ray import RayEngine
from conan_rag.rag.ingest.report import IngestReport
from conan_rag.rag.pipeline import MODEL_ENV, Pipeline
from conan_rag.rag.search.retrieval import RetrievalOptions, check_query
from conan_rag.rag.store import (
    DEFAULT_COLLECTION,
    batch_size,
    check_location,
    open_client,
    recorded_config,
)
from conan_rag.registry import load_encoder
from conan_rag.remote import API_KEY_ENV


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def _encoder(args: argparse.Namespace, model: str | None) -> EncoderLike:
    if args.endpoint:  # the server's model; a --model naming another one is refused
        settings = {"model": model, "device": args.device, "dtype": args.dtype}
        return open_encoder({**settings, "endpoint": args.endpoint})  # type: ignore[no-any-return]
    return load_encoder(model, device=args.device, dtype=args.dtype)


def _collection(args: argparse.Namespace) -> str:
    return str(args.collection or DEFAULT_COLLECTION)


def _open(
    args: argparse.Namespace, *, write: bool, chunking: ChunkConfig | None = None
) -> Pipeline:
    """Check the store, load the model, check the chunking, then open (or create) the store.

    The model is --model, else the collection's recorded one (with --device/--dtype), else, to
    create a collection, the default. The store is only read before the model has loaded, so a
    failure leaves nothing behind; the client opened to read it is the pipeline's.
    """
    if args.chroma_url is None:
        check_location(args.db, write=write)  # before loading a model or creating anything
    default = os.environ.get(MODEL_ENV) or None
    client = None
    encoder: EncoderLike | None = None
    if args.model is not None:
        encoder = _encoder(args, args.model)
    elif args.chroma_url is None and not Path(args.db).expanduser().exists():
        encoder = _encoder(args, default) if write else None  # (reading: opening says why)
    else:
        client = open_client(args.db, args.chroma_url, write=False)
        recorded = recorded_config(client, _collection(args))
        if recorded is not None and args.endpoint:
            encoder = _encoder(args, None)  # the guard compares the server's fingerprint
        elif recorded is not None:
            encoder = load_encoder(config=recorded.replace(device=args.device, dtype=args.dtype))
        elif write:
            encoder = _encoder(args, default)
    if encoder is not None and chunking is not None:
        Chunker(encoder, chunking)  # sizes checked against the model before anything is created
    return Pipeline(
        encoder,
        db=args.db,
        url=args.chroma_url,
        client=client,
        collection=_collection(args),
        create=write,
        chunking=chunking,
    )


def _summary(name: str, report: IngestReport, seconds: float) -> str:
    return (
        f"{name}: {report.added} added, {report.updated} updated, {report.unchanged} "
        f"unchanged, {report.deleted} deleted, {report.empty} empty ({report.chunks_embedded} "
        f"chunks embedded, {report.chunks_deleted} deleted) in {seconds:.1f}s"
    )


def _export_summary(folder: str, report: IngestReport, seconds: float) -> str:
    """What ``--to-parquet`` did: nothing was added to a collection, the vectors were written."""
    documents = report.added + report.updated
    return (
        f"exported {documents} documents ({report.chunks_embedded} chunks) to {folder} in "
        f"{seconds:.1f}s; `conan-rag load {folder}` stores them"
    )


def cmd_ingest(args: argparse.Namespace) -> int:
    """``conan-rag ingest PATH... [--prune] [--json]``: exit 1 when nothing could be stored."""
    missing = [p for p in args.paths if not Path(p).expanduser().exists()]
    if missing:
        raise InputPathError(missing)
    chunking = ChunkConfig(max_tokens=args.chunk_tokens, overlap_tokens=args.overlap)
    engine = _ray_engine(args)  # checked before the model loads
    if args.to_parquet is not None:
        check_export_folder(args.to_parquet)
    pipe = _open(args, write=True, chunking=chunking)
    start = time.perf_counter()
    report = pipe.ingest(
        args.paths,
        prune=args.prune,
        show_progress=not args.no_progress,
        engine=engine,
        to_parquet=args.to_parquet,
    )
    if args.json:
        _print_json(report.to_dict())
    else:
        seconds = time.perf_counter() - start
        if args.to_parquet is not None:
            print(_export_summary(args.to_parquet, report, seconds))
        else:
            print(_summary(pipe.name, report, seconds))
        for path, reason in report.skipped:
            print(f"skipped {path}: {reason}")
        if report.explain():
            print(report.explain())
    return 1 if report.stored_nothing and not report.deleted else 0


def _ray_engine(args: argparse.Namespace) -> RayEngine | None:
    if args.ray is None and args.to_parquet is None:
        return None
    if args.endpoint:
        raise ConanConfigError(
            "--ray and --to-parquet embed with Ray Data's encoder actors, which load the model; "
            "they cannot use --endpoint. Drop one of them.",
            setting="endpoint",
        )
    return RayEngine(
        address=args.ray or "local",
        encoders=args.ray_encoders,
        gpus_per_encoder=args.ray_gpus_per_encoder,
        cpus_per_encoder=args.ray_cpus_per_encoder,
        batch_rows=args.ray_batch_rows,
    )


def cmd_load(args: argparse.Namespace) -> int:
    """``conan-rag load DIR [--db | --chroma-url] [--collection]``: store a Parquet export."""
    from conan_rag.rag.ingest.export import load_export, read_manifest
    from conan_rag.rag.ingest.progress import Progress

    manifest = read_manifest(args.folder)  # before touching the store
    name = args.collection or str(manifest["collection"])
    client = open_client(args.db, args.chroma_url, write=True)
    start = time.perf_counter()
    report = load_export(
        args.folder,
        client,
        name,
        write_batch=batch_size(client, None),
        progress=Progress(None, not args.no_progress),
        manifest=manifest,
    )
    if args.json:
        _print_json(report.to_dict())
    else:
        print(
            f"{name}: loaded {report.chunks_embedded} chunks ({report.completed} documents "
            f"completed, {report.chunks_deleted} chunks deleted) in "
            f"{time.perf_counter() - start:.1f}s"
        )
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    """``conan-rag query TEXT [--k --fetch-k --threshold --mmr --answer --json]``."""
    check_query(args.text)
    options = RetrievalOptions(
        k=args.k,
        fetch_k=args.fetch_k,
        threshold=args.threshold,
        mmr=args.mmr,
        retrieval=args.retrieval,
        reranker=args.rerank_model,
        rerank_top=args.rerank_top,
    )
    pipe = _open(args, write=False)
    answer = pipe.answer(args.text, options=options) if args.answer else None
    hits = answer.hits if answer is not None else pipe.retrieve(args.text, options)
    if args.json:
        rows = [
            {
                "id": h.id,
                "score": h.score,
                "lexical_score": h.lexical_score,
                "fused_score": h.fused_score,
                "rerank_score": h.rerank_score,
                "text": h.text,
                "metadata": h.metadata,
            }
            for h in hits
        ]
        extra = {} if answer is None else {"answer": answer.text}
        _print_json({"query": args.text, "hits": rows, **extra})
        return 0
    if not hits:
        cut = "" if args.threshold is None else f" with cosine >= {args.threshold}"
        print(f"No hits{cut}.")
    for n, hit in enumerate(hits, 1):
        meta = hit.metadata
        where = meta.get("title") or meta.get("doc_id")
        bm25 = "" if hit.lexical_score is None else f"  bm25 {hit.lexical_score:.2f}"
        if hit.rerank_score is not None:
            bm25 += f"  rerank {hit.rerank_score:.4f}"
        print(f"[{n}] cosine {hit.score:.4f}{bm25}  {where}  (chunk {meta.get('chunk_index')})")
        print("    " + " ".join(hit.text.split())[:300])
    if answer is not None:
        print("\n" + answer.text)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """``conan-rag info``: read from the store alone (no model is loaded)."""
    from conan_rag.rag import collection_info

    if args.chroma_url is None:
        check_location(args.db, write=False)
    info = collection_info(db=args.db, url=args.chroma_url, collection=_collection(args))
    if args.json:
        _print_json(info)
    else:
        for key, value in info.items():
            print(f"{key:>15}: {value}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """``conan-rag eval --beir DIR [...]``: metrics, and the threshold sweep when asked."""
    from conan_rag.rag import evaluation

    thresholds = evaluation.parse_range(args.thresholds) if args.thresholds else None
    data = evaluation.load_beir(args.beir, args.split)
    if args.limit_docs or args.limit_queries:
        data = evaluation.subset(data, args.limit_docs, args.limit_queries)
    mode: ChunkMode = "whole" if args.whole_documents else "tokens"
    if args.chroma_url is None:
        check_location(args.db, write=True)
    encoder = _encoder(args, args.model or os.environ.get(MODEL_ENV) or None)
    name = args.collection or re.sub(
        r"[^a-zA-Z0-9._-]", "-", f"eval-{data.name}-{mode}-{encoder.fingerprint[:10]}"
    )
    pipe = Pipeline(
        encoder, db=args.db, url=args.chroma_url, collection=name, chunking=ChunkConfig(mode=mode)
    )
    progress = not args.no_progress
    start = time.perf_counter()
    report = pipe.sync(evaluation.beir_documents(data), show_progress=progress)
    ingest_s = time.perf_counter() - start
    start = time.perf_counter()
    run = evaluation.beir_run(
        pipe,
        data,
        show_progress=progress,
        retrieval=args.retrieval,
        reranker=args.rerank_model,
        rerank_top=args.rerank_top,
    )
    metrics = evaluation.evaluate(data.qrels, run)
    result: dict[str, Any] = {
        "dataset": data.name,
        "split": args.split,
        "model": encoder.model_id,
        "mode": mode,
        "retrieval": args.retrieval,
        "documents": len(data.corpus),
        "queries": len(data.queries),
        "chunks": pipe.collection.count(),
        "chunks_embedded": report.chunks_embedded,
        "ingest_seconds": round(ingest_s, 2),
        "search_seconds": round(time.perf_counter() - start, 2),
        "metrics": metrics,
    }
    if thresholds:
        rows = evaluation.threshold_sweep(data.qrels, run, thresholds)
        result["sweep"] = evaluation.sweep_json(rows)
        about = {k: result[k] for k in ("dataset", "split", "model", "mode", "retrieval")}
        evaluation.record_sweep(pipe.store, rows, about)  # `conan-rag serve`'s page draws it
        if args.plot:
            title = f"{data.name} ({mode}) {encoder.model_id.split('/')[-1]}"
            result["plot"] = str(evaluation.plot_sweep(rows, args.plot, title))
    if args.json:
        _print_json(result)
    else:
        _print_eval(result, args.split)
    return 0


def _print_eval(result: dict[str, Any], split: str) -> None:
    print(
        f"{result['dataset']}/{split} {result['mode']}, {result['retrieval']} retrieval: "
        f"{result['documents']} docs "
        f"({result['chunks']} chunks), {result['queries']} queries, model {result['model']}"
    )
    for key, value in result["metrics"].items():
        print(f"{key:>11}: {value:.5f}")
    if "sweep" in result:
        print(f"\n{'threshold':>9} {'precision':>9} {'recall':>7} {'f1':>6} {'retrieved':>9}")
        for row in result["sweep"]:
            precision, f1 = (
                "-" if row[k] is None else f"{row[k]:.4f}" for k in ("precision", "f1")
            )
            print(
                f"{row['threshold']:>9.3f} {precision:>9} {row['recall']:>7.4f} "
                f"{f1:>6} {int(row['retrieved']):>9d}"
            )
        if "plot" in result:
            print(f"plot: {result['plot']}")


def cmd_demo(args: argparse.Namespace) -> int:
    """``conan-rag demo``: the bundled corpus, a temporary store, cited answers."""
    from conan_rag import demo

    demo.main(model=args.model)
    return 0


def cmd_warm_up(args: argparse.Namespace) -> int:
    """``conan-rag warm-up``: build (or find) the compiled CPU forward; one line says which."""
    from conan_rag.runtime.compile_cache import cache_root

    start = time.perf_counter()
    encoder = load_encoder(
        args.model or os.environ.get(MODEL_ENV) or DEFAULT_MODEL,
        device=args.device,
        dtype=args.dtype,
    )
    forward = encoder.warm_up()
    took = time.perf_counter() - start
    on = f"{encoder.model_id} ({encoder.dtype}, {encoder.device})"
    if encoder.device != "cpu":
        forward += " (nothing to build off the CPU)"
    else:
        forward += f"; cache {cache_root()}"
    print(f"conan-rag warm-up: {on}: {forward}; {took:.1f}s")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """``conan-rag serve``: one line when ready, one when stopped (SIGTERM, Ctrl-C: exit 0)."""
    from conan_rag.server import ServerSettings, serve  # needs the serve extra

    model = args.model or (None if args.collection else os.environ.get(MODEL_ENV) or DEFAULT_MODEL)
    settings = ServerSettings(
        model=model,  # None: the model the collection records
        revision=args.revision,
        device=args.device,
        dtype=args.dtype,
        host=args.host,
        port=args.port,
        api_key=args.api_key or os.environ.get(API_KEY_ENV) or None,
        max_inputs=args.max_inputs,
        max_k=args.max_k,
        max_request_bytes=args.max_request_bytes,
        max_queued_tokens=args.max_queued_tokens,
        strict_model=args.strict_model,
        log_level=args.log_level,
        drain_s=args.drain_s,
        collection=args.collection,
        db=args.db,
        chroma_url=args.chroma_url,
    )
    if not settings.loopback and not settings.api_key:
        print(
            f"conan-rag serve: warning: listening on {settings.host} without an API key: anyone "
            f"who can reach this port can use the model. Pass --api-key or set ${API_KEY_ENV}.",
            file=sys.stderr,
        )

    searching = f", searching collection {args.collection!r}," if args.collection else ""

    def ready(encoder: Encoder, url: str) -> None:
        print(
            f"conan-rag serve: {encoder.model_id} (dim {encoder.dim}, {encoder.dtype}, "
            f"{encoder.device}){searching} on {url}",  # the URL last: scripts read it there
            flush=True,
        )

    stopped = serve(settings, on_ready=ready)
    how = f"on {stopped.signal}" if stopped.signal else "(the server exited)"
    answered = "the requests in flight were answered"
    if stopped.cut:
        answered = (
            f"{stopped.cut} request(s) still running at the drain limit ({stopped.drain_s:g} s, "
            "--drain-s) were cut and answered 503; the others in flight were answered"
        )
    print(f"conan-rag serve: stopped {how}; {answered}.", flush=True)
    return 0


COMMANDS = {
    "ingest": cmd_ingest,
    "query": cmd_query,
    "eval": cmd_eval,
    "info": cmd_info,
    "load": cmd_load,
    "demo": cmd_demo,
    "serve": cmd_serve,
    "warm-up": cmd_warm_up,
}
