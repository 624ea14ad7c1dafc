"""Two-phase ingest: embed to Parquet files (a sink), load them into the store later.

For when the database is the bottleneck or far away. ``conan-rag ingest --to-parquet DIR`` writes
through :class:`ParquetExport` instead of the store: ``DIR/chunks/*.parquet`` (ids, texts,
metadata as JSON, and vectors as a fixed-size list of float32; on Ray with Ray Data's own
Parquet sink) and then ``DIR/conan_rag_export.json``, the manifest: the encoder's
model, dimension, fingerprint and config, the collection's metadata, the chunk ids to delete
(pruned or emptied documents), and the counts. The manifest is written last, so a folder without
one is an unfinished export and is refused.

``conan-rag load DIR`` (:func:`load_export`) writes the chunks through the one write path
(:class:`~conan_rag.rag.ingest.sink.StoreSink`, which marks the collection changed for its
lexical index): every document's other chunks, then its chunk 0 with the count (which marks it
complete), then the stale chunks are deleted. It refuses a collection whose fingerprint differs
from the export's. Loading twice is harmless: every write is an upsert of the same ids.

Example:
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp()) / "export"
    >>> check_export_folder(folder) == folder.resolve()
    True
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from conan_rag.errors import StoreError
from conan_rag.rag.ingest.progress import Progress
from conan_rag.rag.ingest.report import IngestReport
from conan_rag.rag.ingest.rows import EMBEDDED, Batch, summary
from conan_rag.rag.ingest.sink import StoreSink
from conan_rag.rag.store import collection_metadata, open_export_target

if TYPE_CHECKING:
    import pyarrow as pa
    import ray.data

    from conan_rag.protocols import EncoderLike

MANIFEST = "conan_rag_export.json"
CHUNKS = "chunks"
FORMAT = 1
_COLUMNS = ("kind", "id", "text", "meta", "key", "n", "stale", "added")
__all__ = [
    "CHUNKS",
    "MANIFEST",
    "ParquetExport",
    "check_export_folder",
    "load_export",
    "read_manifest",
]


def _error(folder: Path, problem: str, fix: str) -> StoreError:
    return StoreError(f"{folder}: {problem}; {fix}.", location=str(folder), problem=problem)


def check_export_folder(folder: str | Path) -> Path:
    """An export folder: new, or an empty folder (an export never mixes with other files).

    Raises:
        StoreError: it is a file, or a folder that is not empty.
    """
    path = Path(folder).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise _error(path, "it is a file", "pass a new folder for the export")
    if path.is_dir() and any(path.iterdir()):
        raise _error(path, "the folder is not empty", "pass a new or empty folder")
    return path


def to_arrow(batch: Batch) -> pa.Table:
    """A numpy batch as an Arrow table with a fixed-size-list float32 ``vector`` column."""
    import pyarrow as pa

    vectors = np.ascontiguousarray(batch["vector"], dtype=np.float32)
    dim = vectors.shape[1]
    columns = {name: batch[name].tolist() for name in _COLUMNS}
    table = pa.table(columns)
    flat = pa.array(vectors.reshape(-1), type=pa.float32())
    return table.append_column("vector", pa.FixedSizeListArray.from_arrays(flat, dim))


class ParquetExport:
    """A sink that writes the rows to Parquet files and, when the run succeeds, the manifest.

    Args:
        folder: a new or empty folder (:func:`check_export_folder`).
        encoder: the encoder the rows are embedded with (recorded in the manifest).
        collection: the collection the export is meant for (recorded in the manifest).
    """

    def __init__(self, folder: str | Path, encoder: EncoderLike, collection: str) -> None:
        self.folder = check_export_folder(folder)
        self.encoder = encoder
        self.collection = collection
        self.deletions: list[str] = []
        self._parts = 0

    @property
    def chunks(self) -> Path:
        """The folder of Parquet files."""
        return self.folder / CHUNKS

    def write_dataset(self, ds: ray.data.Dataset | None, progress: Progress) -> None:
        """Write a Ray dataset with Ray Data's Parquet sink (``None``: nothing to embed)."""
        if ds is not None:
            import ray.data

            context = ray.data.DataContext.get_current()
            context.enable_progress_bars = progress.show
            ds.map_batches(to_arrow, batch_format="numpy", batch_size=None).write_parquet(
                str(self.chunks)
            )

    def write(self, batch: Batch) -> Batch:
        """Write one batch as a Parquet file (the single-process engine); return its summary."""
        import pyarrow.parquet as pq

        self.chunks.mkdir(parents=True, exist_ok=True)
        pq.write_table(to_arrow(batch), self.chunks / f"part-{self._parts:06d}.parquet")
        self._parts += 1
        return summary(batch)

    def complete(self, counts: Sequence[tuple[str, int]]) -> None:
        """Nothing to do: the rows carry the counts, and ``conan-rag load`` completes."""

    def delete(self, ids: Sequence[str]) -> None:
        """Record chunk ids for the load to delete (after it stored everything else)."""
        self.deletions.extend(ids)

    def finish(self, report: IngestReport) -> None:
        """Count the rows written, then write the manifest (last: it marks the export done)."""
        counts: dict[str, Any] = {"chunks": 0, "documents": 0, "added": 0, "skipped": []}
        for batch in _scan(self.chunks, ["kind", "key", "added", "text"]):
            for kind, key, added, text in zip(
                batch["kind"], batch["key"], batch["added"], batch["text"]
            ):
                counts["chunks"] += kind in EMBEDDED
                if kind in ("first", "done"):
                    counts["documents"] += 1
                    counts["added"] += bool(added)
                if kind == "skip":
                    counts["skipped"].append([key, text])
        manifest = {
            "format": FORMAT,
            "collection": self.collection,
            "model_id": self.encoder.model_id,
            "dim": self.encoder.dim,
            "fingerprint": self.encoder.fingerprint,
            "encoder_config": self.encoder.config.replace(device="auto", dtype="auto").to_dict(),
            "collection_metadata": collection_metadata(self.encoder),
            "deletions": list(dict.fromkeys(self.deletions)),
            "counts": counts,
            "files": _file_rows(self.folder),  # what a load checks before it stores anything
        }
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(manifest, indent=1, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, self.folder / MANIFEST)
        report_of(manifest, report)

    def abort(self) -> None:
        """Remove the Parquet files (the folder was empty): an unfinished export leaves none."""
        shutil.rmtree(self.chunks, ignore_errors=True)


def report_of(manifest: dict[str, Any], report: IngestReport) -> IngestReport:
    """An ingest report (what the plan found) with the export's counts."""
    counts = manifest["counts"]
    report.chunks_embedded = counts["chunks"]
    report.added = counts["added"]
    report.updated = counts["documents"] - counts["added"]
    report.completed = 0  # a document is completed when the export is loaded
    for key, text in counts["skipped"]:
        if (str(key), str(text)) not in report.skipped:
            report.skipped.append((str(key), str(text)))
    return report


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """An export's manifest.

    Raises:
        StoreError: no manifest (not an export, or an unfinished one), or an unknown format.
    """
    path = Path(folder).expanduser().resolve()
    if not path.is_dir():
        what = "it is a file" if path.exists() else "no such folder"
        raise _error(path, what, "pass the folder `conan-rag ingest ... --to-parquet DIR` wrote")
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _error(
            path,
            f"no {MANIFEST} (not a conan-rag export, or one that did not finish)",
            "run `conan-rag ingest ... --to-parquet DIR` again into a new folder",
        ) from None
    except (OSError, ValueError) as exc:
        raise _error(path, f"{MANIFEST} cannot be read ({exc})", "export again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise _error(path, f"{MANIFEST} is not export format {FORMAT}", "export again")
    _check_files(path, manifest)
    return manifest


def _file_rows(path: Path) -> dict[str, int]:
    """Each Parquet file's name and row count in export ``path``, read from its footer.

    Raises:
        StoreError: a file is truncated or unreadable (named).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows: dict[str, int] = {}
    for file in sorted((path / CHUNKS).glob("*.parquet")):
        try:
            rows[file.name] = pq.read_metadata(file).num_rows
        except (pa.ArrowException, OSError) as exc:
            problem = f"{CHUNKS}/{file.name} is damaged ({str(exc).split('. ')[0]})"
            raise _error(path, problem, "export again") from None
    return rows


def _check_files(path: Path, manifest: dict[str, Any]) -> None:
    """Every Parquet file whole (footer readable) and, where recorded, present with its rows.

    Costs one footer read per file, not a read of the rows.

    Raises:
        StoreError: a file is truncated or unreadable, missing, or holds other rows.
    """
    found = _file_rows(path)
    for name, rows in dict(manifest.get("files") or {}).items():
        if name not in found:
            raise _error(path, f"{CHUNKS}/{name} is missing", "export again")
        if found[name] != rows:
            problem = f"{CHUNKS}/{name} holds {found[name]} rows, not {rows}"
            raise _error(path, problem, "export again")


def _scan(chunks: Path, columns: list[str], kind: str | None = None) -> Iterator[Batch]:
    """Record batches of the export's Parquet files as numpy columns (memory-bounded)."""
    if not chunks.is_dir():
        return
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    dataset = pads.dataset(str(chunks), format="parquet")
    where = None if kind is None else pc.field("kind") == kind
    for record_batch in dataset.to_batches(columns=columns, filter=where, batch_size=1000):
        out: Batch = {}
        for name in columns:
            column = record_batch.column(name)
            if name == "vector":
                dim = column.type.list_size
                out[name] = column.flatten().to_numpy().reshape(-1, dim).astype(np.float32)
            else:
                out[name] = np.asarray(column.to_pylist(), dtype=object)
        if len(record_batch):
            yield out


def load_export(
    folder: str | Path,
    client: Any,
    collection: str,
    *,
    write_batch: int = 1000,
    progress: Progress | None = None,
    manifest: dict[str, Any] | None = None,
) -> IngestReport:
    """Load an export into a collection: chunks, then each document's chunk 0, then deletions.

    Args:
        folder: the export.
        client: a Chroma client (:func:`~conan_rag.rag.store.open_client`).
        collection: the collection to load into (created from the export's config if missing).
        write_batch: most records per write.
        progress: reports the loading phases.
        manifest: what :func:`read_manifest` returned for ``folder`` (read here when omitted).

    Raises:
        StoreError: the folder is not a finished export.
        CollectionMismatchError: the collection records another model than the export's.
    """
    path = Path(folder).expanduser().resolve()
    manifest = manifest or read_manifest(path)
    sink = StoreSink(open_export_target(client, collection, manifest), write_batch)
    progress = progress or Progress()
    report = report_of(manifest, IngestReport())
    columns = ["kind", "id", "text", "meta", "vector"]
    total = int(manifest["counts"]["chunks"])
    loaded = {"chunk": 0, "first": 0}
    for kind, phase in (("chunk", "loading"), ("first", "loading chunk 0")):
        progress.phase(phase, total=total, unit="chunk")
        for batch in _scan(path / CHUNKS, columns, kind):
            metas = [json.loads(m) for m in batch["meta"]]  # chunk 0's with its count
            sink.upsert(batch["id"], batch["vector"], batch["text"], metas)
            loaded[kind] += len(metas)
            progress.advance(len(metas))
    report.chunks_embedded = loaded["chunk"] + loaded["first"]  # written (embedded at export)
    report.completed = loaded["first"]
    stale = _stale(path, manifest)
    progress.phase("deleting", total=len(stale), unit="chunk")
    sink.delete(stale)
    progress.advance(len(stale))
    report.chunks_deleted = len(stale)
    sink.finish(report)
    progress.close()
    return report


def _stale(path: Path, manifest: dict[str, Any]) -> list[str]:
    """The chunk ids to delete: the manifest's, and every exported document's stale chunks."""
    stale: list[str] = list(manifest["deletions"])
    for batch in _scan(path / CHUNKS, ["kind", "stale"]):
        for kind, stale_json in zip(batch["kind"], batch["stale"]):
            if kind in ("first", "done"):
                stale.extend(json.loads(stale_json))
    return list(dict.fromkeys(stale))
