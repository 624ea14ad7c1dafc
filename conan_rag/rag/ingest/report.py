"""What an ingest did, and the interruption that carries it.

Example:
    >>> report = IngestReport(files=2, unsupported={".docx": 3})
    >>> print(report.explain())  # doctest: +NORMALIZE_WHITESPACE
    Nothing to embed: found 2 supported files holding 0 documents; 3 files of other types
    were left out (.docx ×3).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from conan_rag.rag.sources.documents import SUFFIXES

EMPTY_EXAMPLES = 20  # empty documents listed by name (the rest are counted)


@dataclass
class IngestReport:
    """What an ingest did, counted in documents (and chunks where said).

    Attributes:
        added: documents stored for the first time.
        updated: documents whose stored chunks were replaced.
        unchanged: documents already stored exactly.
        deleted: stored documents removed by pruning.
        empty: documents with no text to embed.
        chunks_embedded: chunks embedded and written.
        chunks_deleted: stale or pruned chunks deleted.
        skipped: ``(path, reason)`` of every file or folder that could not be read.
        files: supported files found.
        documents: documents read.
        unsupported: files of unsupported types left out, by suffix.
        hidden: hidden files and folders left out.
        empty_documents: the first few empty documents.
        completed: documents whose last chunk was written this run.
        interrupted: the run was stopped by Ctrl-C.
    """

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    empty: int = 0
    chunks_embedded: int = 0
    chunks_deleted: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    files: int = 0
    documents: int = 0
    unsupported: dict[str, int] = field(default_factory=dict)
    hidden: int = 0
    empty_documents: list[str] = field(default_factory=list)
    completed: int = 0
    interrupted: bool = False

    def note_empty(self, key: str) -> None:
        """Count an empty document (and name it, among the first few)."""
        self.empty += 1
        if len(self.empty_documents) < EMPTY_EXAMPLES:
            self.empty_documents.append(key)

    @property
    def stored_nothing(self) -> bool:
        """No document is stored (or kept) as a result of this run."""
        return not (self.added or self.updated or self.unchanged)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (skipped as ``[{"path": ..., "reason": ...}]``)."""
        data = asdict(self)
        data["skipped"] = [{"path": p, "reason": r} for p, r in self.skipped]
        return data

    def explain(self) -> str:
        """Why nothing was added, in a sentence or two (``""`` when something was stored)."""
        if not self.stored_nothing:
            return ""
        found = (
            f"found {self.files} supported file{'s' * (self.files != 1)} holding "
            f"{self.documents} document{'s' * (self.documents != 1)}"
        )
        parts = [f"Nothing to embed: {found}"]
        if self.empty:
            names = ", ".join(self.empty_documents[:3]) + (", ..." if self.empty > 3 else "")
            parts.append(f"{self.empty} had no text ({names})")
        if self.skipped:
            parts.append(f"{len(self.skipped)} could not be read (listed as skipped)")
        if self.unsupported:
            kinds = ", ".join(f"{k} ×{n}" for k, n in sorted(self.unsupported.items()))
            total = sum(self.unsupported.values())
            parts.append(f"{total} files of other types were left out ({kinds})")
        if self.hidden:
            parts.append(
                f"{self.hidden} hidden files or folders were left out (name them to use them)"
            )
        if not self.files and not self.documents:
            parts.append(f"supported types are {' '.join(SUFFIXES)}")
        return "; ".join(parts) + "."


class IngestInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped an ingest; what was committed is kept and a re-run resumes from there.

    Attributes:
        report: the :class:`IngestReport` of what was done before the interruption.
    """

    def __init__(self, report: IngestReport) -> None:
        super().__init__(
            f"Ingest interrupted: {report.chunks_embedded} chunks written "
            f"({report.completed} documents completed)."
        )
        self.report = report
