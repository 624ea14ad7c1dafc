"""The conan-rag command: in-process main([...]) and one real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conan_rag.cli import main
from conan_rag.rag.evaluation import recorded_sweep
from conan_rag.rag.store import ChromaStore, open_client

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "examples" / "corpus"


def _json(capsys: pytest.CaptureFixture[str]) -> dict:
    return json.loads(capsys.readouterr().out)


def test_ingest_query_info_and_guard(
    tmp_path: Path, conan_tiny: Path, minilm_path: Path, capsys
) -> None:
    db = str(tmp_path / "db")
    docs = tmp_path / "docs"
    docs.mkdir()
    for path in CORPUS.iterdir():
        (docs / path.name).write_bytes(path.read_bytes())
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4 not a pdf")
    common = ["--db", db, "--no-progress", "--json"]
    assert main(["ingest", str(docs), "--model", str(conan_tiny), *common]) == 0
    first = _json(capsys)
    assert first["added"] == 6 and first["unchanged"] == 0 and first["chunks_embedded"] >= 6
    assert [Path(s["path"]).name for s in first["skipped"]] == ["broken.pdf"]

    assert main(["ingest", str(docs), "--model", str(conan_tiny), *common]) == 0
    assert _json(capsys)["unchanged"] == 6

    (docs / "coffee.html").unlink()
    assert main(["ingest", str(docs), "--prune", "--model", str(conan_tiny), *common]) == 0
    pruned = _json(capsys)
    assert pruned["deleted"] == 1 and pruned["chunks_embedded"] == 0

    # without --model, query uses the recorded model
    assert main(["query", "Who climbed Mount Everest?", "--k", "2", *common]) == 0
    result = _json(capsys)
    assert len(result["hits"]) == 2 and all(-1 <= h["score"] <= 1 for h in result["hits"])
    assert main(["query", "anything", "--threshold", "0.9999", *common]) == 0
    assert _json(capsys)["hits"] == []

    assert main(["info", *common]) == 0
    info = _json(capsys)
    assert info["model_id"] == str(conan_tiny) and info["documents"] == 5

    # a different model is refused, naming both, and nothing is written
    assert main(["query", "x", "--model", str(minilm_path), *common]) == 2
    err = capsys.readouterr().err
    # both models are named; the bundled MiniLM by its canonical id, whatever path loaded it
    assert "CollectionMismatch" not in err and str(conan_tiny) in err
    assert "sentence-transformers/all-MiniLM-L6-v2" in err
    assert "Omit --model" in err and "--collection NAME" in err  # the CLI words the advice
    assert main(["ingest", str(docs), "--model", str(minilm_path), *common]) == 2
    capsys.readouterr()
    assert main(["info", *common]) == 0 and _json(capsys)["chunks"] == info["chunks"]

    assert main(["query", "x", "--db", db, "--collection", "nope"]) == 2
    err = capsys.readouterr().err
    assert "No collection 'nope'" in err and "conan-rag ingest PATH" in err
    assert main(["query", "x", "--db", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "--db" in err and "no such folder" in err and not (tmp_path / "empty").exists()
    (tmp_path / "folder").mkdir()  # a folder, but no store: reading it creates none
    for command in (["query", "x"], ["info"]):
        assert main([*command, "--db", str(tmp_path / "folder")]) == 2
        err = capsys.readouterr().err
        assert "it holds no Chroma store (no chroma.sqlite3)" in err, err
    assert not any((tmp_path / "folder").iterdir())


def test_plain_output(tmp_path: Path, conan_tiny: Path, capsys) -> None:
    db = str(tmp_path / "db")
    assert (
        main(["ingest", str(CORPUS / "coffee.html"), "--db", db, "--model", str(conan_tiny)]) == 0
    )
    assert "1 added" in capsys.readouterr().out
    assert main(["query", "coffee", "--db", db, "--answer", "--k", "1"]) == 0
    out = capsys.readouterr().out
    assert "[1] cosine" in out and "Sources:" in out


@pytest.mark.slow
def test_eval_scifact_subset_with_sweep(
    tmp_path: Path, minilm_path: Path, data_dir: Path, capsys
) -> None:
    args = [
        "eval",
        "--beir",
        str(data_dir / "scifact"),
        "--model",
        str(minilm_path),
        "--whole-documents",
        "--limit-docs",
        "150",
        "--limit-queries",
        "15",
        "--db",
        str(tmp_path / "db"),
        "--no-progress",
        "--json",
        "--thresholds",
        "0.3:0.7:0.2",
        "--plot",
        str(tmp_path / "sweep.png"),
    ]
    assert main(args) == 0
    result = _json(capsys)
    assert result["documents"] == 150 and result["queries"] == 15 and result["chunks"] == 150
    metrics = result["metrics"]
    assert set(metrics) == {"ndcg@10", "map@10", "mrr@10", "recall@10", "recall@100"}
    assert 0.8 < metrics["ndcg@10"] <= 1.0 and metrics["recall@100"] == 1.0
    assert [r["threshold"] for r in result["sweep"]] == [0.3, 0.5, 0.7]
    recalls = [r["recall"] for r in result["sweep"]]
    assert recalls == sorted(recalls, reverse=True)
    assert (tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    client = open_client(tmp_path / "db", None, write=False)  # the sweep kept for the page
    (collection,) = [client.get_collection(c.name) for c in client.list_collections()]
    kept = recorded_sweep(ChromaStore(client, collection, db=tmp_path / "db"))
    assert kept is not None and kept["rows"] == result["sweep"] and kept["dataset"] == "scifact"
    # the corpus is cached in the collection: a second run embeds nothing
    assert main(args) == 0
    again = _json(capsys)
    assert again["chunks_embedded"] == 0 and again["metrics"] == pytest.approx(metrics, abs=1e-6)


def test_console_script_subprocess(tmp_path: Path, conan_tiny: Path) -> None:
    script = Path(sys.executable).with_name("conan-rag")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CONAN_RAG_CHROMA_TOKEN": "s3cret-token"}
    db = str(tmp_path / "db")
    done = subprocess.run(
        [
            str(script),
            "ingest",
            str(CORPUS / "vaccines.md"),
            "--db",
            db,
            "--model",
            str(conan_tiny),
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["added"] == 1
    assert "s3cret-token" not in done.stdout + done.stderr
    bad = subprocess.run(
        [str(script), "query", "x", "--db", db, "--chroma-url", "ftp://nowhere"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert bad.returncode == 2 and "http://HOST:PORT" in bad.stderr


def test_help_shows_every_default_the_file_types_and_the_version(capsys) -> None:
    import argparse

    from conan_rag import __version__
    from conan_rag.cli.parser import build_parser
    from conan_rag.rag.sources.documents import SUFFIXES

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"conan-rag {__version__}"
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    commands = {"ingest", "load", "query", "eval", "info", "demo", "serve", "warm-up"}
    assert set(sub.choices) == commands
    for name, command in sub.choices.items():
        formatter = command._get_formatter()
        options = [a for a in command._actions if a.option_strings and a.dest != "help"]
        assert len(options) >= {"demo": 1, "load": 5, "warm-up": 3}.get(name, 7)
        for action in options:  # the text --help prints for it
            entry = formatter._expand_help(action)
            assert "default" in entry, (name, action.option_strings, entry)
    ingest_help = sub.choices["ingest"].format_help()
    assert all(suffix in ingest_help for suffix in SUFFIXES)
    assert "hidden files" in ingest_help and "Ctrl-C" in ingest_help
    assert "--ray ADDRESS" in ingest_help and "--to-parquet DIR" in ingest_help


def test_query_builds_no_ingest_machinery(
    tmp_path: Path, conan_tiny: Path, monkeypatch, capsys
) -> None:
    from conan_rag.rag import chunking

    db = str(tmp_path / "db")
    assert (
        main(
            [
                "ingest",
                str(CORPUS / "vaccines.md"),
                "--db",
                db,
                "--model",
                str(conan_tiny),
                "--no-progress",
            ]
        )
        == 0
    )

    def no_chunker(*args: object, **kwargs: object) -> None:
        raise AssertionError("a query must not build a Chunker (it deep-copies the tokenizer)")

    monkeypatch.setattr(chunking.Chunker, "__init__", no_chunker)
    assert main(["query", "How do vaccines work?", "--db", db, "--json"]) == 0
    assert main(["info", "--db", db, "--json"]) == 0


def test_the_wheel_ships_the_demo_corpus(tmp_path: Path) -> None:
    import zipfile

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("conan_rag-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    corpus = sorted(n for n in names if n.startswith("conan_rag/corpus/"))
    assert {Path(n).name for n in corpus} == {p.name for p in CORPUS.iterdir()}
    assert "conan_rag/cli/__init__.py" in names and "conan_rag/rag/pipeline.py" in names
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    found = subprocess.run(  # the demo finds its corpus inside the installed package
        [sys.executable, "-c", "from conan_rag import demo; print(demo.CORPUS)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(tmp_path / "site")},
    )
    assert Path(found.stdout.strip()) == (tmp_path / "site" / "conan_rag" / "corpus").resolve()
