"""Ingest: one plan, two engines, one write path.

``planning`` diffs the inputs against the store; ``rows`` is the per-document row stream every
engine runs; ``local`` (this process) and ``ray`` (Ray Data) are the engines; ``sink`` is the one
write path into the store (and ``export`` the Parquet sink with its loader); ``task`` and ``engine``
tie a run together; ``report`` and ``progress`` say what happened.

Example:
    >>> from conan_rag.rag.ingest import LocalEngine, RayEngine
    >>> LocalEngine().name, RayEngine().name
    ('local', 'ray')
"""

from __future__ import annotations

from conan_rag.rag.ingest.engine import run_ingest
from conan_rag.rag.ingest.export import (
    ParquetExport,
    check_export_folder,
    load_export,
    read_manifest,
)
from conan_rag.rag.ingest.local import LocalEngine
from conan_rag.rag.ingest.planning import Input, Plan, Planner
from conan_rag.rag.ingest.progress import Progress, ProgressCallback, ProgressEvent
from conan_rag.rag.ingest.ray import RayEngine
from conan_rag.rag.ingest.report import IngestInterrupted, IngestReport
from conan_rag.rag.ingest.sink import Completer, Sink, StoreSink
from conan_rag.rag.ingest.task import Engine, IngestTask

__all__ = [
    "Completer",
    "Engine",
    "IngestInterrupted",
    "IngestReport",
    "IngestTask",
    "Input",
    "LocalEngine",
    "ParquetExport",
    "Plan",
    "Planner",
    "Progress",
    "ProgressCallback",
    "ProgressEvent",
    "RayEngine",
    "Sink",
    "StoreSink",
    "check_export_folder",
    "load_export",
    "read_manifest",
    "run_ingest",
]
