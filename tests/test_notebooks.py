"""Every notebook in examples/ runs top to bottom; a failing cell fails the test."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
CELL_TIMEOUT_S = 900  # a hang guard per cell, not a speed check (speed lives in benchmarks)
# The tests run the notebooks on smaller subsets than their committed outputs show: what is
# checked is that every cell runs, not the figures.
SMALL = {"CONAN_RAG_NOTEBOOK_DOCS": "20", "CONAN_RAG_NOTEBOOK_QUERIES": "20"}


def test_the_example_notebooks_exist() -> None:
    names = [p.stem for p in NOTEBOOKS]
    for expected in (
        "01_encoder_quickstart",
        "02_langchain_rag",
        "03_llamaindex_rag",
        "04_threshold_tuning",
        "05_serving",
        "06_scale_out",
        "07_hybrid_chinese",
    ):
        assert expected in names


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    notebook = nbformat.read(path, as_version=4)
    committed = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(c.get("outputs") for c in committed[:1]), "commit notebooks with their outputs"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("CONAN_RAG_NOTEBOOK_TMP", str(tmp_path))
    for name, value in SMALL.items():
        monkeypatch.setenv(name, value)
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(EXAMPLES)}},
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    errors = [
        o
        for c in notebook.cells
        if c.cell_type == "code"
        for o in c.outputs
        if o.get("output_type") == "error"
    ]
    assert not errors
