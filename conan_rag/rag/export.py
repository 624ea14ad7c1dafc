"""Two-phase ingest: embed to Parquet files on Ray, load them into Chroma later.

For when the database is the bottleneck or far away. ``conan-rag ingest --to-parquet DIR`` writes
``DIR/chunks/*.parquet`` with Ray Data (ids, texts, metadata as JSON, and vectors as a
fixed-size list of float32) and then ``DIR/conan_rag_export.json``, the manifest: the encoder's
model, dimension, fingerprint and config, the collection's metadata, the chunk ids to delete
(pruned or emptied documents), and the counts. The manifest is written last, so a folder without
one is an unfinished export and is refused.

``conan-rag load DIR`` (:func:`load_export`) writes the chunks in the single-process order:
every document's other chunks, then its chunk 0 with the count (which marks it complete), then
the stale chunks are deleted. It refuses a collection whose fingerprint differs from the
export's. Loading twice is harmless: every write is an upsert of the same ids.

Example:
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp()) / "export"
    >>> check_export_folder(folder) == folder.resolve()
    True
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from conan_rag.config import EncoderConfig
from conan_rag.errors import CollectionMismatchError, StoreError
from conan_rag.rag.progress import Progress
from conan_rag.rag.ray_stages import EMBEDDED, Batch, upsert_records, with_retries
from conan_rag.rag.report import IngestReport
from conan_rag.rag.store import (
    check_recorded,
    collection_metadata,
    find_collection,
    open_collection,
)

if TYPE_CHECKING:
    import pyarrow as pa
    import ray.data
    from chromadb.api import ClientAPI

    from conan_rag.protocols import EncoderLike
    from conan_rag.rag.ingest import Plan

MANIFEST = "conan_rag_export.json"
CHUNKS = "chunks"
FORMAT = 1
_COLUMNS = ("kind", "id", "text", "meta", "key", "n", "stale", "added")


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


def write_export(
    ds: ray.data.Dataset | None, folder: Path, encoder: EncoderLike, plan: Plan, collection: str
) -> dict[str, Any]:
    """Write the dataset's rows as Parquet, then the manifest; return the manifest."""
    chunks = folder / CHUNKS
    if ds is not None:
        ds.map_batches(to_arrow, batch_format="numpy", batch_size=None).write_parquet(str(chunks))
    counts: dict[str, Any] = {"chunks": 0, "documents": 0, "added": 0, "skipped": []}
    for batch in _scan(chunks, ["kind", "key", "added", "text"]):
        for kind, key, added, text in zip(
            batch["kind"], batch["key"], batch["added"], batch["text"]
        ):
            if kind in EMBEDDED:
                counts["chunks"] += 1
            if kind in ("first", "done"):
                counts["documents"] += 1
                counts["added"] += bool(added)
            if kind == "skip":
                counts["skipped"].append([key, text])
    manifest = {
        "format": FORMAT,
        "collection": collection,
        "model_id": encoder.model_id,
        "dim": encoder.dim,
        "fingerprint": encoder.fingerprint,
        "encoder_config": encoder.config.replace(device="auto", dtype="auto").to_dict(),
        "collection_metadata": collection_metadata(encoder),
        "deletions": plan.deletions,
        "counts": counts,
    }
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, folder / MANIFEST)
    return manifest


def report_of(manifest: dict[str, Any], report: IngestReport) -> IngestReport:
    """An ingest report (what the plan found) with the export's counts."""
    counts = manifest["counts"]
    report.chunks_embedded = counts["chunks"]
    report.added = counts["added"]
    report.updated = counts["documents"] - counts["added"]
    report.skipped.extend((str(a), str(b)) for a, b in counts["skipped"])
    return report


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """An export's manifest.

    Raises:
        StoreError: no manifest (not an export, or an unfinished one), or an unknown format.
    """
    path = Path(folder).expanduser().resolve()
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
    return manifest


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


def _open_target(client: ClientAPI, name: str, manifest: dict[str, Any]) -> Any:
    """The collection to load into: checked against the export, or created from its config."""
    existing = find_collection(client, name)
    if existing is not None:
        check_recorded(
            existing.metadata,
            name,
            str(manifest["model_id"]),
            int(manifest["dim"]),
            str(manifest["fingerprint"]),
            fix="The export was embedded with that "
            "model: load it into another collection (--collection NAME).",
        )
        return existing
    from conan_rag.registry import load_encoder

    config = EncoderConfig.from_dict(manifest["encoder_config"]).replace(device="cpu")
    encoder = load_encoder(config=config)  # the collection records its embedding function
    if encoder.fingerprint != manifest["fingerprint"]:
        raise CollectionMismatchError(
            f"The model files here ({encoder.model_id!r}, fingerprint {encoder.fingerprint[:12]})"
            f" differ from the export's (fingerprint {manifest['fingerprint'][:12]}); install "
            "the same model revision to create the collection.",
            collection=name,
            recorded_model=str(manifest["model_id"]),
            offered_model=encoder.model_id,
        )
    return open_collection(client, name, encoder)


def load_export(
    folder: str | Path,
    client: ClientAPI,
    collection: str,
    *,
    write_batch: int = 1000,
    progress: Progress | None = None,
) -> IngestReport:
    """Load an export into a collection: chunks, then each document's chunk 0, then deletions.

    Raises:
        StoreError: the folder is not a finished export.
        CollectionMismatchError: the collection records another model than the export's.
    """
    path = Path(folder).expanduser().resolve()
    manifest = read_manifest(path)
    target = _open_target(client, collection, manifest)
    progress = progress or Progress()
    report = report_of(manifest, IngestReport())
    loaded = {"chunk": 0, "first": 0}
    columns = ["kind", "id", "text", "meta", "vector"]
    stale: list[str] = list(manifest["deletions"])
    total = int(manifest["counts"]["chunks"])
    for kind, phase in (("chunk", "loading"), ("first", "loading chunk 0")):
        progress.phase(phase, total=total, unit="chunk")
        for batch in _scan(path / CHUNKS, columns, kind):
            metas = [json.loads(m) for m in batch["meta"]]
            upsert_records(target, batch["id"], batch["vector"], batch["text"], metas, write_batch)
            loaded[kind] += len(metas)
            progress.advance(len(metas))
    report.chunks_embedded = loaded["chunk"] + loaded["first"]  # written (embedded at export)
    report.completed = loaded["first"]
    for batch in _scan(path / CHUNKS, ["kind", "stale"]):
        for kind, stale_json in zip(batch["kind"], batch["stale"]):
            if kind in ("first", "done"):
                stale.extend(json.loads(stale_json))
    progress.phase("deleting", total=len(stale), unit="chunk")
    for start in range(0, len(stale), write_batch):
        part_ids = stale[start : start + write_batch]
        with_retries(functools.partial(target.delete, ids=part_ids), f"deletion of {len(part_ids)}")
        progress.advance(len(part_ids))
    report.chunks_deleted = len(stale)
    progress.close()
    return report
