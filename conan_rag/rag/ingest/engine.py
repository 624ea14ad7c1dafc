"""One ingest run: a plan, an engine that runs its row stream, and a sink that stores the rows.

Incremental, streaming and resumable, without any marker file:

* **Plan** (:mod:`~conan_rag.rag.ingest.planning`). Every document is read once and hashed
  (text, title, metadata, chunking settings). It is *unchanged* only when exactly its expected
  chunks are stored with that hash; chunk 0 records how many chunks the document has.
* **Embed** (an :class:`~conan_rag.rag.ingest.task.Engine`:
  :class:`~conan_rag.rag.ingest.local.LocalEngine` here, or
  :class:`~conan_rag.rag.ingest.ray.RayEngine` on Ray Data). Documents to (re)embed are read
  again and cut into rows (:mod:`~conan_rag.rag.ingest.rows`), embedded in token-budget batches
  and written through the sink (:mod:`~conan_rag.rag.ingest.sink`) while the next are cut.
* **Complete.** Once all other chunks of a document are written, its chunk 0 gets the count,
  then its stale chunks are deleted. A run killed at any point leaves documents that the next
  run sees as incomplete and finishes; already written chunks are not embedded again.
* **Prune** (optional) deletes stored documents that this run could check are gone: a file named
  or found under a walked folder that no longer exists, or a document no longer in a file (or a
  group of in-memory documents) that was read completely. Documents of files that could not be
  read, of folders that could not be listed, or outside the named paths are never deleted.

Ctrl-C (``KeyboardInterrupt``) lets the batch in flight finish and be written, then raises
:class:`~conan_rag.rag.ingest.report.IngestInterrupted`, which carries the report of what was
committed.

Example:
    >>> import tempfile
    >>> from conan_rag import load_encoder
    >>> from conan_rag.rag.chunking import Chunker
    >>> from conan_rag.rag.sources import Document
    >>> from conan_rag.rag.store import ChromaStore, open_client
    >>> encoder = load_encoder("sentence-transformers/all-MiniLM-L6-v2")
    >>> store = ChromaStore.open(open_client(tempfile.mkdtemp()), "docs", encoder)
    >>> from conan_rag.rag.ingest import IngestTask
    >>> task = IngestTask(store, encoder, Chunker(encoder))
    >>> run_ingest(task, [Document("paris", "Paris is the capital of France.", "facts")]).added
    1
"""

from __future__ import annotations

from collections.abc import Iterable

from conan_rag.rag.ingest.local import LocalEngine
from conan_rag.rag.ingest.planning import Input
from conan_rag.rag.ingest.report import IngestInterrupted, IngestReport
from conan_rag.rag.ingest.task import Engine, IngestTask

__all__ = ["run_ingest"]


def run_ingest(
    task: IngestTask,
    inputs: Iterable[Input],
    *,
    prune: bool = False,
    engine: Engine | None = None,
) -> IngestReport:
    """Ingest files, folders and documents with ``engine`` (default: this process).

    Raises:
        InputPathError: a named path does not exist (nothing is read, written or deleted).
        IngestInterrupted: Ctrl-C; its ``report`` says what was committed (a re-run resumes).
    """
    runner: Engine = engine or LocalEngine()
    try:
        runner.run(task, list(inputs), prune)
    except KeyboardInterrupt:
        task.progress.close()
        task.out.abort()
        task.report.interrupted = True
        raise IngestInterrupted(task.report) from None
    except BaseException:
        task.progress.close()
        task.out.abort()
        raise
    task.out.finish(task.report)
    task.progress.close()
    return task.report
