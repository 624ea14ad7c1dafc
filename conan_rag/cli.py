"""The ``conan-rag`` command: ingest, query, eval and info over a Chroma collection.

Every command takes ``--db`` (embedded store folder), ``--chroma-url`` (a ``chroma run`` server;
its token comes only from ``CONAN_RAG_CHROMA_TOKEN``), ``--model`` and ``--collection``. Without
``--model`` a command uses the model the collection records (then ``$CONAN_RAG_MODEL``, then the
default); a ``--model`` different from the recorded one is refused.

Example:
    >>> main(["ingest", "examples/corpus", "--json"])  # doctest: +SKIP
    0
    >>> main(["query", "What is Conan-embedding?", "--k", "3"])  # doctest: +SKIP
    0
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from collections.abc import Sequence
from typing import Any

from conan_rag.chunking import ChunkConfig, ChunkMode
from conan_rag.errors import ConanRagError
from conan_rag.pipeline import MODEL_ENV
from conan_rag.store import DEFAULT_COLLECTION, DEFAULT_DB


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", default=DEFAULT_DB, help="embedded store folder (./.conan_rag)")
    parser.add_argument(
        "--chroma-url",
        default=None,
        help="http://HOST:PORT of a Chroma server (token: $CONAN_RAG_CHROMA_TOKEN)",
    )
    parser.add_argument("--model", default=None, help="model folder or hub id")
    parser.add_argument("--collection", default=None, help=f"default {DEFAULT_COLLECTION!r}")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    parser.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float16")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (for ``--help`` and tests)."""
    parser = argparse.ArgumentParser(prog="conan-rag", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    ingest = sub.add_parser("ingest", help="add/update files and folders in the collection")
    ingest.add_argument("paths", nargs="+", metavar="PATH")
    ingest.add_argument("--prune", action="store_true", help="delete documents not in PATHs")
    ingest.add_argument("--chunk-tokens", type=int, default=None, help="tokens per chunk")
    ingest.add_argument("--overlap", type=int, default=32, help="overlap tokens (default 32)")
    _common(ingest)

    query = sub.add_parser("query", help="retrieve passages for a question")
    query.add_argument("text", metavar="TEXT")
    query.add_argument("--k", type=int, default=5)
    query.add_argument("--fetch-k", type=int, default=None)
    query.add_argument("--threshold", type=float, default=None, help="min cosine in [-1, 1]")
    query.add_argument("--mmr", action="store_true", help="diversify hits (MMR)")
    query.add_argument("--answer", action="store_true", help="print an extractive answer too")
    _common(query)

    ev = sub.add_parser("eval", help="evaluate retrieval on a BEIR dataset")
    ev.add_argument("--beir", required=True, metavar="DIR", help="BEIR dataset folder")
    ev.add_argument("--split", default="test")
    whole_help = 'embed each document whole (title + " " + text, truncated), as MTEB does'
    ev.add_argument("--whole-documents", action="store_true", help=whole_help)
    ev.add_argument("--limit-docs", type=int, default=None)
    ev.add_argument("--limit-queries", type=int, default=None)
    sweep_help = "sweep precision/recall/F1 over cosine thresholds, e.g. 0.2:0.8:0.05"
    ev.add_argument("--thresholds", default=None, metavar="START:STOP:STEP", help=sweep_help)
    ev.add_argument("--plot", default=None, metavar="PNG", help="write the sweep plot here")
    _common(ev)

    info = sub.add_parser("info", help="show the collection, its model and counts")
    _common(info)
    return parser


def _pipeline(args: argparse.Namespace, *, create: bool, **kwargs: Any) -> Any:
    from conan_rag.encoder import load_encoder
    from conan_rag.pipeline import Pipeline

    encoder = None
    if args.model is not None:
        encoder = load_encoder(args.model, device=args.device, dtype=args.dtype)
    return Pipeline(
        encoder,
        db=args.db,
        url=args.chroma_url,
        collection=kwargs.pop("collection", None) or args.collection or DEFAULT_COLLECTION,
        create=create,
        **kwargs,
    )


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def cmd_ingest(args: argparse.Namespace) -> int:
    """``conan-rag ingest PATH... [--prune] [--json]``."""
    chunking = ChunkConfig(max_tokens=args.chunk_tokens, overlap_tokens=args.overlap)
    pipe = _pipeline(args, create=True, chunking=chunking)
    start = time.perf_counter()
    report = pipe.ingest(args.paths, prune=args.prune, show_progress=not args.no_progress)
    data = report.to_dict()
    if args.json:
        _print_json(data)
    else:
        print(
            f"{pipe.name}: {report.added} added, {report.updated} updated, {report.unchanged} "
            f"unchanged, {report.deleted} deleted ({report.chunks_embedded} chunks embedded, "
            f"{report.chunks_deleted} deleted) in {time.perf_counter() - start:.1f}s"
        )
        for path, reason in report.skipped:
            print(f"skipped {path}: {reason}")
    return 1 if report.skipped and not (report.added or report.updated or report.unchanged) else 0


def cmd_query(args: argparse.Namespace) -> int:
    """``conan-rag query TEXT [--k --threshold --json]``."""
    pipe = _pipeline(args, create=False)
    options = {"k": args.k, "fetch_k": args.fetch_k, "threshold": args.threshold, "mmr": args.mmr}
    if args.answer:
        answer = pipe.answer(args.text, **options)
        hits = answer.hits
    else:
        hits = pipe.retrieve(args.text, **options)
    if args.json:
        rows = [
            {"id": h.id, "score": h.score, "text": h.text, "metadata": h.metadata} for h in hits
        ]
        _print_json(
            {"query": args.text, "hits": rows, **({"answer": answer.text} if args.answer else {})}
        )
        return 0
    if not hits:
        print(
            "No hits" + (f" with cosine >= {args.threshold}" if args.threshold is not None else "")
        )
    for n, hit in enumerate(hits, 1):
        meta = hit.metadata
        where = meta.get("title") or meta.get("doc_id")
        print(f"[{n}] cosine {hit.score:.4f}  {where}  (chunk {meta.get('chunk_index')})")
        print("    " + " ".join(hit.text.split())[:300])
    if args.answer:
        print("\n" + answer.text)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """``conan-rag info``."""
    info = _pipeline(args, create=False).info()
    if args.json:
        _print_json(info)
    else:
        for key, value in info.items():
            print(f"{key:>15}: {value}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """``conan-rag eval --beir DIR [...]``: metrics, and the threshold sweep when asked."""
    from conan_rag import evaluation
    from conan_rag.encoder import load_encoder

    progress = not args.no_progress
    data = evaluation.load_beir(args.beir, args.split)
    if args.limit_docs or args.limit_queries:
        data = evaluation.subset(data, args.limit_docs, args.limit_queries)
    mode: ChunkMode = "whole" if args.whole_documents else "tokens"
    model = args.model or os.environ.get(MODEL_ENV) or None
    encoder = load_encoder(model, device=args.device, dtype=args.dtype)
    name = args.collection or re.sub(
        r"[^a-zA-Z0-9._-]", "-", f"eval-{data.name}-{mode}-{encoder.fingerprint[:10]}"
    )
    pipe = _pipeline(args, create=True, collection=name, chunking=ChunkConfig(mode=mode))
    start = time.perf_counter()
    report = pipe.sync(evaluation.beir_documents(data), show_progress=progress)
    ingest_s = time.perf_counter() - start
    start = time.perf_counter()
    run = evaluation.beir_run(pipe, data, show_progress=progress)
    metrics = evaluation.evaluate(data.qrels, run)
    result: dict[str, Any] = {
        "dataset": data.name,
        "split": args.split,
        "model": encoder.model_id,
        "mode": mode,
        "documents": len(data.corpus),
        "queries": len(data.queries),
        "chunks": pipe.collection.count(),
        "chunks_embedded": report.chunks_embedded,
        "ingest_seconds": round(ingest_s, 2),
        "search_seconds": round(time.perf_counter() - start, 2),
        "metrics": metrics,
    }
    if args.thresholds:
        rows = evaluation.threshold_sweep(data.qrels, run, evaluation.parse_range(args.thresholds))
        result["sweep"] = [  # undefined precision/F1 (nothing kept) is null in JSON
            {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
            for row in rows
        ]
        if args.plot:
            title = f"{data.name} ({mode}) {encoder.model_id.split('/')[-1]}"
            result["plot"] = str(evaluation.plot_sweep(rows, args.plot, title))
    if args.json:
        _print_json(result)
        return 0
    print(
        f"{data.name}/{args.split} {mode}: {result['documents']} docs ({result['chunks']} chunks), "
        f"{result['queries']} queries, model {encoder.model_id}"
    )
    for key, value in metrics.items():
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
    return 0


COMMANDS = {"ingest": cmd_ingest, "query": cmd_query, "eval": cmd_eval, "info": cmd_info}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for a usage or data error)."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ConanRagError, ImportError) as exc:
        print(f"conan-rag {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
