"""The ``conan-rag`` argument parser: every option says its default, ingest lists file types.

Example:
    >>> args = build_parser().parse_args(["query", "What is RAG?", "--k", "3"])
    >>> args.command, args.k, args.db
    ('query', 3, '.conan_rag')
"""

from __future__ import annotations

import argparse
import textwrap

from conan_rag import __version__
from conan_rag.config import DEFAULT_TOKEN_BUDGETS
from conan_rag.model.files import BUNDLED_MINILM, DEFAULT_MODEL
from conan_rag.rag.chunking import DEFAULT_OVERLAP
from conan_rag.rag.ingest.ray import RayEngine
from conan_rag.rag.pipeline import MODEL_ENV
from conan_rag.rag.search.retrieval import RETRIEVAL_MODES, RetrievalOptions
from conan_rag.rag.sources.documents import SUFFIXES
from conan_rag.rag.store import DEFAULT_COLLECTION, DEFAULT_DB, TOKEN_ENV
from conan_rag.remote import API_KEY_ENV
from conan_rag.server.settings import (
    DEFAULT_DRAIN_S,
    DEFAULT_HOST,
    DEFAULT_MAX_INPUTS,
    DEFAULT_MAX_K,
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_PORT,
    LOG_LEVELS,
    QUEUED_BUDGETS,
)

DESCRIPTION = (
    "Conan-embedding-v1 (or any sentence-transformers model) for retrieval-augmented "
    "generation: ingest documents into a Chroma collection, query it by exact cosine "
    "similarity, evaluate retrieval; or serve the model over HTTP."
)
_DEFAULTS = RetrievalOptions()
_CPU_QUEUE = QUEUED_BUDGETS * DEFAULT_TOKEN_BUDGETS["cpu"]
_GPU_QUEUE = QUEUED_BUDGETS * DEFAULT_TOKEN_BUDGETS["cuda"]
_MODEL_DEFAULT = (
    f"default: the model the collection records, else ${MODEL_ENV}, else {DEFAULT_MODEL}; "
    f"offline try {BUNDLED_MINILM}"
)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Adds ``(default: ...)`` to every option whose help does not state its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default is argparse.SUPPRESS or not action.option_strings:
            return text
        if isinstance(action, argparse._StoreTrueAction):
            return f"{text} (default: off)"
        return f"{text} (default: {action.default})"


def _store_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", default=DEFAULT_DB, help="folder of the embedded Chroma store")
    parser.add_argument(
        "--chroma-url",
        default=None,
        metavar="URL",
        help=f"http://HOST:PORT of a Chroma server instead of --db; token from ${TOKEN_ENV} "
        "(default: none, use --db)",
    )


def _output_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _common(parser: argparse.ArgumentParser, collection: str = DEFAULT_COLLECTION) -> None:
    _store_flags(parser)
    parser.add_argument("--model", default=None, help=f"model folder or hub id ({_MODEL_DEFAULT})")
    parser.add_argument(
        "--collection", default=None, help=f"collection name (default: {collection})"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16")
    parser.add_argument(
        "--endpoint",
        default=None,
        metavar="URL",
        help=f"embed on a `conan-rag serve` server at http://HOST:PORT; key from ${API_KEY_ENV} "
        "(default: none, load the model here)",
    )
    _output_flags(parser)


def _sub(
    sub: argparse._SubParsersAction, name: str, text: str, epilog: str = ""
) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    return sub.add_parser(  # type: ignore[no-any-return]
        name,
        help=text,
        description=text,
        epilog=textwrap.fill(epilog, 78),
        formatter_class=_Formatter,
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (for ``--help`` and tests)."""
    parser = argparse.ArgumentParser(
        prog="conan-rag", description=DESCRIPTION, formatter_class=_Formatter
    )
    parser.add_argument("--version", action="version", version=f"conan-rag {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    types = " ".join(SUFFIXES)
    ingest = _sub(
        sub,
        "ingest",
        "add or update files and folders in the collection",
        f"Supported file types: {types}. Folders are walked recursively; hidden files and "
        "folders (.git, .venv, ...) are skipped unless named. Re-running embeds only new or "
        "changed documents; Ctrl-C keeps what was written and a re-run resumes.",
    )
    ingest.add_argument("paths", nargs="+", metavar="PATH", help=f"files or folders ({types})")
    ingest.add_argument(
        "--prune",
        action="store_true",
        help="also delete stored documents whose files are gone from the given PATHs",
    )
    ingest.add_argument(
        "--chunk-tokens",
        type=int,
        default=None,
        metavar="N",
        help="tokens per chunk, prompt and special tokens included (default: the model's "
        "max_seq_length)",
    )
    ingest.add_argument(
        "--overlap",
        type=int,
        default=DEFAULT_OVERLAP,
        metavar="N",
        help="tokens shared by consecutive chunks",
    )
    _ray_flags(ingest)
    _common(ingest)

    load = _sub(
        sub,
        "load",
        "store an export made with `ingest --to-parquet DIR` in a collection",
        "Writes each document's chunks, then its chunk 0 (which marks it complete), then "
        "deletes stale chunks; a collection built with another model is refused. Loading "
        "again is harmless.",
    )
    load.add_argument("folder", metavar="DIR", help="the export folder")
    _store_flags(load)
    load.add_argument(
        "--collection", default=None, help="collection name (default: the one exported from)"
    )
    _output_flags(load)

    query = _sub(sub, "query", "retrieve passages for a question")
    query.add_argument("text", metavar="TEXT", help="the question")
    query.add_argument("--k", type=int, default=_DEFAULTS.k, help="passages to return")
    query.add_argument(
        "--fetch-k",
        type=int,
        default=None,
        metavar="N",
        help="candidates taken from the index before exact re-scoring (default: max(4k, 20))",
    )
    query.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="minimum cosine similarity in [-1, 1] (default: none)",
    )
    query.add_argument(
        "--retrieval",
        choices=RETRIEVAL_MODES,
        default=_DEFAULTS.retrieval,
        help="dense (vectors), lexical (BM25) or hybrid (both, reciprocal-rank fused)",
    )
    _rerank_flags(query)
    query.add_argument("--mmr", action="store_true", help="diversify the passages (MMR)")
    query.add_argument("--answer", action="store_true", help="print an extractive answer too")
    _common(query)

    ev = _sub(sub, "eval", "evaluate retrieval on a BEIR dataset (nDCG, MAP, MRR, recall)")
    ev.add_argument("--beir", required=True, metavar="DIR", help="BEIR dataset folder (required)")
    ev.add_argument("--split", default="test", help="qrels split")
    ev.add_argument(
        "--whole-documents",
        action="store_true",
        help='embed each document whole (title + " " + text, truncated), as MTEB does',
    )
    ev.add_argument(
        "--limit-docs", type=int, default=None, metavar="N", help="corpus subset (default: all)"
    )
    ev.add_argument(
        "--limit-queries", type=int, default=None, metavar="N", help="queries (default: all)"
    )
    ev.add_argument(
        "--retrieval",
        choices=RETRIEVAL_MODES,
        default=_DEFAULTS.retrieval,
        help="dense (vectors), lexical (BM25) or hybrid (both, reciprocal-rank fused)",
    )
    _rerank_flags(ev)
    ev.add_argument(
        "--thresholds",
        default=None,
        metavar="START:STOP:STEP",
        help="sweep precision/recall/F1 over cosine thresholds, e.g. 0.2:0.8:0.05 "
        "(default: no sweep)",
    )
    ev.add_argument(
        "--plot", default=None, metavar="PNG", help="write the sweep plot here (default: none)"
    )
    _common(ev, collection="eval-DATASET-MODE-FINGERPRINT, kept for re-runs")

    info = _sub(sub, "info", "show the collection, its model and counts")
    _common(info)

    demo = _sub(
        sub, "demo", "ingest the bundled demo corpus into a temporary store and answer questions"
    )
    demo.add_argument(
        "--model",
        default=None,
        help=f"model folder or hub id (default: ${MODEL_ENV}, else {BUNDLED_MINILM})",
    )
    warm = _sub(
        sub,
        "warm-up",
        "build the compiled CPU forward for a model once (for images and CI caches)",
        "Compiles the model's CPU forward (torch.compile, inductor), checks it against the eager "
        "forward and stores it in the cache ($XDG_CACHE_HOME/conan-rag, else "
        "~/.cache/conan-rag); later processes load it in about a second. A no-op off the CPU.",
    )
    warm.add_argument(
        "--model",
        default=None,
        help=f"model folder or hub id (default: ${MODEL_ENV}, else {DEFAULT_MODEL})",
    )
    warm.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    warm.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16")
    _serve(sub)
    return parser


def _ray_flags(parser: argparse.ArgumentParser) -> None:
    engine = RayEngine()
    parser.add_argument(
        "--ray",
        default=None,
        metavar="ADDRESS",
        help="cut and embed on Ray Data: local (a Ray runtime for this run), auto (the cluster "
        "this machine is in) or ray://HOST:PORT; needs conan-rag[ray] (default: this process)",
    )
    parser.add_argument(
        "--ray-encoders", type=int, default=engine.encoders, metavar="N", help="encoder actors"
    )
    parser.add_argument(
        "--ray-gpus-per-encoder",
        type=float,
        default=engine.gpus_per_encoder,
        metavar="G",
        help="GPUs per encoder actor (1 on a GPU cluster: one actor per GPU)",
    )
    parser.add_argument(
        "--ray-cpus-per-encoder",
        type=float,
        default=engine.cpus_per_encoder,
        metavar="C",
        help="CPUs per encoder actor",
    )
    parser.add_argument(
        "--ray-batch-rows",
        type=int,
        default=engine.batch_rows,
        metavar="N",
        help="chunks per batch sent to an encoder actor",
    )
    parser.add_argument(
        "--to-parquet",
        default=None,
        metavar="DIR",
        help="with --ray (default local): write ids, texts, metadata and vectors to Parquet in "
        "this new folder instead of the collection; store them later with `conan-rag load DIR` "
        "(default: write to the collection)",
    )


def _rerank_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rerank-model",
        default=None,
        metavar="MODEL",
        help="a cross-encoder folder or hub id (e.g. BAAI/bge-reranker-v2-m3) that re-orders "
        "the best candidates (default: none)",
    )
    parser.add_argument(
        "--rerank-top",
        type=int,
        default=_DEFAULTS.rerank_top,
        metavar="N",
        help="candidates the cross-encoder scores",
    )


def _served_collection(serve: argparse.ArgumentParser) -> None:
    """``serve``'s flags for the collection it searches on ``POST /v1/retrieve``."""
    serve.add_argument(
        "--collection",
        default=None,
        help="also search this collection on POST /v1/retrieve (its recorded model is served "
        "unless --model is given; default: embeddings only)",
    )
    serve.add_argument(
        "--db",
        default=None,
        help=f"folder of the embedded store holding --collection ({DEFAULT_DB})",
    )
    serve.add_argument(
        "--chroma-url", default=None, metavar="URL", help="a Chroma server holding --collection"
    )
    serve.add_argument(
        "--max-k",
        type=int,
        default=DEFAULT_MAX_K,
        metavar="N",
        help=f"most hits (and fetch_k) per search (more: 400) (default: {DEFAULT_MAX_K})",
    )


def _serve(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    serve = _sub(
        sub,
        "serve",
        "serve the model over HTTP (OpenAI /v1/embeddings, TEI /embed, Prometheus /metrics)",
        "Every client's requests share the model's batches. Without --api-key (or "
        f"${API_KEY_ENV}) anyone who can reach the port can use it: bind other hosts than "
        "127.0.0.1 only with a key, and put TLS in front (a reverse proxy). Ctrl-C or SIGTERM "
        "finishes the requests in flight, then exits 0. Needs `pip install 'conan-rag[serve]'`.",
    )
    serve.add_argument(
        "--model",
        default=None,
        help=f"model folder or hub id (default: ${MODEL_ENV}, else {DEFAULT_MODEL}; offline try "
        f"{BUNDLED_MINILM})",
    )
    serve.add_argument(
        "--revision", default=None, help="hub revision (default: the cached default branch)"
    )
    serve.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help="address to listen on (0.0.0.0: every interface; then use --api-key)",
    )
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help="TCP port (0: any free)")
    _served_collection(serve)
    serve.add_argument(
        "--api-key",
        default=None,
        metavar="KEY",
        help=f"key clients send as `Authorization: Bearer KEY` (default: ${API_KEY_ENV}, else "
        "none; prefer the variable: arguments are visible to other users)",
    )
    serve.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    serve.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16")
    serve.add_argument(
        "--max-inputs",
        type=int,
        default=DEFAULT_MAX_INPUTS,
        metavar="N",
        help="most texts per request (more: 413)",
    )
    serve.add_argument(
        "--max-request-bytes",
        type=int,
        default=DEFAULT_MAX_REQUEST_BYTES,
        metavar="N",
        help=f"largest request body read (more: 413) (default: {DEFAULT_MAX_REQUEST_BYTES})",
    )
    serve.add_argument(
        "--max-queued-tokens",
        type=int,
        default=None,
        metavar="N",
        help="most tokens waiting for the model (more: 429 with Retry-After) (default: "
        f"{QUEUED_BUDGETS}x the encoder's token budget: {_CPU_QUEUE} on cpu, {_GPU_QUEUE} on cuda)",
    )
    serve.add_argument(
        "--strict-model",
        action="store_true",
        help="answer 404 to requests naming another model (else serve them and log it)",
    )
    serve.add_argument(
        "--log-level",
        default="warning",
        choices=LOG_LEVELS,
        help="server log level; info logs every request",
    )
    serve.add_argument(
        "--drain-s",
        type=float,
        default=DEFAULT_DRAIN_S,
        metavar="S",
        help="on SIGTERM, the longest to wait for requests in flight; those still running are "
        f"answered 503 (default: {DEFAULT_DRAIN_S:g})",
    )
