"""The ``conan-rag`` command: ingest, load, query, eval, info, demo (on Chroma) and serve.

Every collection command takes ``--db`` (embedded store folder), ``--chroma-url`` (a ``chroma
run`` server; its token comes only from ``CONAN_RAG_CHROMA_TOKEN``), ``--model``,
``--collection`` and ``--endpoint`` (embed on a ``conan-rag serve`` server; its key comes only
from ``CONAN_RAG_API_KEY``). Without ``--model`` a command uses the model the collection records
(then ``$CONAN_RAG_MODEL``, then the default); a ``--model`` different from the recorded one is
refused. ``ingest --ray ADDRESS`` cuts and embeds on Ray Data (:mod:`conan_rag.rag.ingest.ray`);
``ingest --to-parquet DIR`` exports the vectors and ``load DIR`` stores them
(:mod:`conan_rag.rag.ingest.export`). ``serve`` runs the shared encoder over HTTP
(:mod:`conan_rag.server`).

Exit status: 0 done (``serve``: also when stopped by SIGTERM or Ctrl-C, after answering the
requests in flight); 1 ingest stored nothing; 2 a usage or data error (one line, naming the fix);
130 a collection command interrupted by Ctrl-C (what was written is kept; re-running resumes).

Example:
    >>> main(["query", "   "])  # prints "conan-rag query: error: The query is empty ..." on stderr
    2
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from conan_rag.cli.advice import advise
from conan_rag.cli.commands import COMMANDS
from conan_rag.cli.parser import build_parser
from conan_rag.errors import ConanRagError
from conan_rag.rag.ingest.report import IngestInterrupted

__all__ = ["build_parser", "main"]

INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except IngestInterrupted as stop:
        report = stop.report
        if report.chunks_embedded or report.chunks_deleted:
            done = (
                f"{report.chunks_embedded} chunks were written ({report.completed} documents "
                "completed) and are kept"
            )
        else:
            done = "nothing was written"
        print(
            f"\nconan-rag {args.command}: interrupted; {done}. Run the same command again to "
            "resume.",
            file=sys.stderr,
        )
        return INTERRUPTED
    except KeyboardInterrupt:
        print(f"\nconan-rag {args.command}: interrupted.", file=sys.stderr)
        return INTERRUPTED
    except (ConanRagError, ImportError) as exc:
        print(f"conan-rag {args.command}: error: {advise(exc)}", file=sys.stderr)
        return 2
