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
130 a collection command interrupted by Ctrl-C, 143 by SIGTERM (``docker stop``, systemd,
``timeout``): the same summary either way, what was written is kept and re-running resumes;
141 the reader of the output went away (``conan-rag query ... | head``).

Example:
    >>> main(["query", "   "])  # prints "conan-rag query: error: The query is empty ..." on stderr
    2
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from types import FrameType

from conan_rag.cli.advice import advise
from conan_rag.cli.commands import COMMANDS
from conan_rag.cli.parser import build_parser
from conan_rag.errors import ConanRagError
from conan_rag.rag.ingest.report import IngestInterrupted

__all__ = ["build_parser", "main"]

INTERRUPTED = 130
TERMINATED = 128 + signal.SIGTERM
BROKEN_PIPE = 128 + signal.SIGPIPE


class Terminated(KeyboardInterrupt):
    """SIGTERM, delivered as Ctrl-C is, so every command's interrupt path runs for it too."""


_SIGTERM_SEEN: list[bool] = []


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    _SIGTERM_SEEN.append(True)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a repeat must not cut the summary short
    raise Terminated


@contextlib.contextmanager
def _sigterm_as_interrupt(command: str) -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` in the main thread while a command runs.

    ``serve`` keeps its own handler (it drains the requests in flight); elsewhere, and outside
    the main thread, nothing changes.
    """
    if command == "serve" or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stopped() -> tuple[str, int]:
    """How the interrupted command was stopped: its words and exit status."""
    if _SIGTERM_SEEN:
        return "stopped by SIGTERM", TERMINATED
    return "interrupted", INTERRUPTED


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    _SIGTERM_SEEN.clear()
    try:
        with _sigterm_as_interrupt(args.command):
            status = COMMANDS[args.command](args)
        sys.stdout.flush()  # a closed pipe shows here, inside this try, not at exit
        return status
    except BrokenPipeError:  # the reader closed the pipe: say nothing more, write no more
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return BROKEN_PIPE
    except IngestInterrupted as stop:
        report = stop.report
        if report.chunks_embedded or report.chunks_deleted:
            done = (
                f"{report.chunks_embedded} chunks were written ({report.completed} documents "
                "completed) and are kept"
            )
        else:
            done = "nothing was written"
        how, status = _stopped()
        print(
            f"\nconan-rag {args.command}: {how}; {done}. Run the same command again to resume.",
            file=sys.stderr,
        )
        return status
    except KeyboardInterrupt:
        how, status = _stopped()
        print(f"\nconan-rag {args.command}: {how}.", file=sys.stderr)
        return status
    except (ConanRagError, ImportError) as exc:
        print(f"conan-rag {args.command}: error: {advise(exc, args)}", file=sys.stderr)
        return 2
