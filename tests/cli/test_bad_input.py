"""Bad input as a careful user tries it: a clear error or report, and nothing stored is lost.

One test per row of the issue "Any CPU, nothing lost"; each failed before the fix. In-process
``main([...])`` where that is faithful, a real subprocess where a signal, an exit status or a
fresh environment is the point.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conan_rag import load_encoder
from conan_rag.cli import main
from conan_rag.errors import InputPathError
from conan_rag.rag.pipeline import Pipeline
from tests.pipeline_helpers import popen_with_ctrl_c, without_file_permissions_bypass

REPO = Path(__file__).resolve().parents[2]
CONAN_RAG = Path(sys.executable).with_name("conan-rag")


def _json(capsys: pytest.CaptureFixture[str]) -> dict:
    return json.loads(capsys.readouterr().out)


def _docs(folder: Path, count: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (folder / f"note{i}.md").write_text(
            f"# Note {i}\n\nThe protein binds gene {i}. 细胞{i}分裂。", encoding="utf-8"
        )
    return folder


def _chunks(db: str, capsys: pytest.CaptureFixture[str]) -> int:
    capsys.readouterr()
    assert main(["info", "--db", db, "--json"]) == 0
    return int(_json(capsys)["chunks"])


def _ingest(*args: str) -> list[str]:
    return ["ingest", *args, "--no-progress"]


def test_mistyped_path_with_prune_refuses_and_deletes_nothing(
    tmp_path: Path, conan_tiny: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, docs = str(tmp_path / "db"), _docs(tmp_path / "docs")
    assert main(_ingest(str(docs), "--db", db, "--model", str(conan_tiny))) == 0
    before = _chunks(db, capsys)
    typo = str(tmp_path / "dcos")
    assert main(_ingest(typo, "--prune", "--db", db)) == 2
    err = capsys.readouterr().err
    assert typo in err and "Nothing was ingested or deleted" in err and "Traceback" not in err
    assert _chunks(db, capsys) == before > 0
    pipe = Pipeline(db=db)  # the library refuses the same way, before any write
    with pytest.raises(InputPathError) as info:
        pipe.ingest([docs, typo], prune=True)
    assert info.value.paths == [typo] and pipe.collection.count() == before


def test_unlistable_folder_is_reported_and_its_documents_kept(
    tmp_path: Path, conan_tiny: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    db, docs = str(tmp_path / "db"), _docs(tmp_path / "docs", 1)
    locked = _docs(docs / "locked", 2)
    assert main(_ingest(str(docs), "--db", db, "--model", str(conan_tiny), "--json")) == 0
    assert _json(capsys)["added"] == 3
    before = _chunks(db, capsys)
    real_scandir = os.scandir

    def scandir(path: object = ".") -> object:  # the walk meets a folder it may not list
        if Path(str(path)).resolve() == locked.resolve():
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "scandir", scandir)
    assert main(_ingest(str(docs), "--prune", "--db", db, "--json")) == 0
    report = _json(capsys)
    assert report["skipped"] == [
        {"path": str(locked.resolve()), "reason": "cannot list it (Permission denied)"}
    ]
    assert report["deleted"] == 0 and report["unchanged"] == 1
    assert _chunks(db, capsys) == before
    monkeypatch.setattr(os, "scandir", real_scandir)
    shutil.rmtree(locked)  # really gone now: pruning may delete what it can see is gone
    assert main(_ingest(str(docs), "--prune", "--db", db, "--json")) == 0
    assert _json(capsys)["deleted"] == 2


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        ("Müller ärgert sich über die Größe der Straße.", "latin-1"),
        ("Le garçon a mangé une crème brûlée à côté de l'hôtel.", "latin-1"),
        ("“Smart quotes” – an en dash, 5 €.", "cp1252"),
        ("北京是中国的首都。长城非常雄伟！", "gb18030"),
        ("Привет, как дела? Москва - столица России.", "cp1251"),
    ],
)
def test_legacy_encodings_are_stored_as_written(
    tmp_path: Path, conan_tiny: Path, text: str, encoding: str
) -> None:
    (tmp_path / "legacy.txt").write_bytes(text.encode(encoding))
    encoder = load_encoder(str(conan_tiny), device="cpu", dtype="float32")
    pipe = Pipeline(encoder, db=tmp_path / "db")
    assert pipe.ingest([tmp_path / "legacy.txt"]).added == 1
    assert pipe.collection.get(include=["documents"])["documents"] == [text]  # never mojibake


def test_undecodable_file_is_skipped_with_a_reason_not_stored(
    tmp_path: Path, conan_tiny: Path, capsys
) -> None:
    (tmp_path / "data.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 10)
    args = _ingest(str(tmp_path / "data.txt"), "--db", str(tmp_path / "db"))
    assert main([*args, "--model", str(conan_tiny), "--json"]) == 1
    report = _json(capsys)
    assert report["added"] == 0 and "binary" in report["skipped"][0]["reason"]


def test_progress_advances_per_batch_in_phases(tmp_path: Path, conan_tiny: Path, capsys) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(4):
        (docs / f"d{i}.txt").write_text(f"Cell {i} divides. " * 900, encoding="utf-8")
    encoder = load_encoder(str(conan_tiny), device="cpu", dtype="float32", token_budget=2048)
    pipe = Pipeline(encoder, db=tmp_path / "db")
    events: list = []
    report = pipe.ingest([docs], on_progress=events.append)
    phases = list(dict.fromkeys(e.phase for e in events))
    assert phases == ["scanning", "checking", "embedding"]
    checking = [e for e in events if e.phase == "checking"]
    assert [e.done for e in checking][-1] == checking[-1].total == 4
    embedding = [e for e in events if e.phase == "embedding"]
    dones = [e.done for e in embedding]
    assert dones == sorted(dones) and dones[-1] == pytest.approx(embedding[-1].total)
    assert embedding[-1].total == sum(len(p.read_text()) for p in docs.iterdir())
    # ~4 chunks of up to 512 tokens per batch of 2048: it moves with every model batch
    assert len(set(dones)) >= report.chunks_embedded // 5 >= 8
    assert embedding[-1].chunks == report.chunks_embedded
    # the command shows the same phases on stderr
    args = _ingest(str(docs), "--db", str(tmp_path / "db2"), "--model", str(conan_tiny))
    assert main([a for a in args if a != "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "Checking for changes" in err and "Embedding" in err and "chunks=" in err


def _signal_once_written(
    child: subprocess.Popen[bytes], at_least: int, seen: bytearray, signum: int = signal.SIGINT
) -> None:
    """Read the child's stderr; send SIGINT once its bar says ``at_least`` chunks are written.

    Synchronised on the ingest's own state (the ``chunks=N`` it reports after each written
    group), not on a clock: however busy the machine, the signal lands after that much is stored.
    """
    assert child.stderr is not None
    fd, sent = child.stderr.fileno(), False
    while data := os.read(fd, 65536):  # tqdm redraws with "\r": read what is there, not lines
        seen.extend(data)
        written = [int(n) for n in re.findall(rb"chunks=(\d+)", seen)]
        if not sent and written and max(written) >= at_least:
            child.send_signal(signum)
            sent = True


def _signalled_ingest(
    tmp_path: Path, minilm_path: Path, signum: int, *engine: str
) -> tuple[list[str], dict[str, str], str, int]:
    """An ingest of ~375 chunks (3 batches of 128) sent ``signum`` after its first write.

    ``engine`` is extra arguments (``--ray local ...``).

    Returns:
        The command, its environment, its last stderr line and its exit status.
    """
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(30):
        body = " ".join(f"Protein {i}-{j} binds gene {j} in cell line {i}." for j in range(40))
        (docs / f"paper{i:02d}.txt").write_text(body, encoding="utf-8")
    model = ["--model", str(minilm_path), "--dtype", "float32", "--chunk-tokens", "64"]
    command = [str(CONAN_RAG), "ingest", str(docs), "--db", str(tmp_path / "db"), *model, *engine]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    child = popen_with_ctrl_c(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    seen = bytearray()
    _signal_once_written(child, 1, seen, signum)
    child.wait(timeout=600)
    err = seen.decode(errors="replace")
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-2000:]
    assert "Terminated" not in err, err[-2000:]
    return command, env, err.strip().splitlines()[-1], int(child.returncode)


def _interrupted(
    tmp_path: Path, minilm_path: Path, *engine: str
) -> tuple[list[str], dict[str, str], int]:
    """A Ctrl-C'd ingest: exit 130, one line, every chunk it says it wrote kept.

    Returns:
        The command, its environment and how many chunks it wrote.
    """
    command, env, message, status = _signalled_ingest(tmp_path, minilm_path, signal.SIGINT, *engine)
    assert status == 130, message
    assert "interrupted;" in message and "Run the same command again to resume" in message
    written = int(message.split("interrupted; ")[1].split(" chunks")[0])
    assert written == Pipeline(db=tmp_path / "db").collection.count() > 0  # all of it is kept
    return command, env, written


@pytest.mark.slow
def test_ctrl_c_keeps_what_was_written_and_a_rerun_resumes(
    tmp_path: Path, minilm_path: Path
) -> None:
    command, env, written = _interrupted(tmp_path, minilm_path)

    resumed = subprocess.run(
        [*command, "--json", "--no-progress"], capture_output=True, text=True, env=env, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads(resumed.stdout)
    clean = subprocess.run(
        [*command[:4], str(tmp_path / "clean"), *command[5:], "--json", "--no-progress"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    full = json.loads(clean.stdout)["chunks_embedded"]
    assert written < full  # it stopped with work left, so the rerun had something to resume
    assert report["chunks_embedded"] <= full - written + 1  # what was written is not redone
    got = Pipeline(db=tmp_path / "db").collection.get(include=["documents"])
    want = Pipeline(db=tmp_path / "clean").collection.get(include=["documents"])
    assert sorted(zip(got["ids"], got["documents"])) == sorted(zip(want["ids"], want["documents"]))


@pytest.mark.slow
def test_ctrl_c_in_a_ray_ingest_into_an_embedded_store_keeps_every_written_chunk(
    tmp_path: Path, minilm_path: Path
) -> None:
    """``--ray local --db``: batches are written as they arrive, so the bar moves mid-run (the
    signal is sent on the bar's first ``chunks=N``) and Ctrl-C keeps all that was written."""
    ray = ("--ray", "local", "--ray-batch-rows", "4")
    command, env, written = _interrupted(tmp_path, minilm_path, *ray)
    resumed = subprocess.run(
        [*command, "--json", "--no-progress"], capture_output=True, text=True, env=env, timeout=900
    )
    assert resumed.returncode == 0, resumed.stderr
    rest, stored = json.loads(resumed.stdout)["chunks_embedded"], Pipeline(db=tmp_path / "db")
    # only a document cut mid-way is embedded again (its chunk 0 had not marked it complete)
    assert 0 < rest < stored.collection.count() <= written + rest


@pytest.mark.slow
def test_sigterm_gives_the_ctrl_c_summary_and_exit_143(tmp_path: Path, minilm_path: Path) -> None:
    """``docker stop``, systemd and ``timeout`` send SIGTERM: the same summary, nothing lost."""
    _, _, message, status = _signalled_ingest(tmp_path, minilm_path, signal.SIGTERM)
    assert status == 143, message
    assert "stopped by SIGTERM;" in message and "Run the same command again to resume" in message
    written = int(message.split("SIGTERM; ")[1].split(" chunks")[0])
    assert written == Pipeline(db=tmp_path / "db").collection.count() > 0  # all of it is kept


def test_a_closed_pipe_ends_the_command_quietly(tmp_path: Path, conan_tiny: Path) -> None:
    """``conan-rag query ... | head -1``: no BrokenPipeError traceback, exit 141."""
    docs = _docs(tmp_path / "docs")
    db = str(tmp_path / "db")
    assert main(_ingest(str(docs), "--db", db, "--model", str(conan_tiny))) == 0
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is printed
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [str(CONAN_RAG), "query", "cells", "--db", db, "--k", "3"],
        stdout=write,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        timeout=300,
    )
    os.close(write)
    assert done.returncode == 141, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr


def test_db_that_is_a_file_or_read_only_gets_one_line(
    tmp_path: Path, conan_tiny: Path, capsys
) -> None:
    docs = _docs(tmp_path / "docs")
    (tmp_path / "file").write_text("not a folder")
    for command in ("ingest", "query"):
        args = [str(docs)] if command == "ingest" else ["a question"]
        assert main([command, *args, "--db", str(tmp_path / "file"), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--db" in err and "it is a file, not a folder" in err
    assert (tmp_path / "file").read_text() == "not a folder"

    existing = tmp_path / "existing"
    assert main(_ingest(str(docs), "--db", str(existing), "--model", str(conan_tiny))) == 0
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for folder in (readonly, existing):
        for path in [folder, *folder.rglob("*")]:
            path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        for db in (readonly / "new_db", existing):
            done = subprocess.run(
                [
                    *without_file_permissions_bypass(),
                    str(CONAN_RAG),
                    "ingest",
                    str(docs),
                    "--db",
                    str(db),
                    "--model",
                    str(conan_tiny),
                    "--no-progress",
                ],
                capture_output=True,
                text=True,
                env=env,
                timeout=120,
            )
            assert done.returncode == 2, done.stderr
            assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
            assert f"--db {db}" in done.stderr
            assert "not writable" in done.stderr or "read-only" in done.stderr
    finally:
        for folder in (readonly, existing):
            for path in [folder, *folder.rglob("*")]:
                path.chmod(0o755 if path.is_dir() else 0o644)
    assert not (readonly / "new_db").exists()


def test_empty_or_blank_query_is_refused(tmp_path: Path, conan_tiny: Path, capsys) -> None:
    db = str(tmp_path / "db")
    assert main(_ingest(str(_docs(tmp_path / "docs")), "--db", db, "--model", str(conan_tiny))) == 0
    capsys.readouterr()
    for blank in ("", "   ", "\n\t"):
        assert main(["query", blank, "--db", db]) == 2
        assert "query is empty" in capsys.readouterr().err


def test_bad_sizes_are_refused_before_anything_is_created(
    tmp_path: Path, conan_tiny: Path, capsys
) -> None:
    db = tmp_path / "db"
    docs = str(_docs(tmp_path / "docs"))
    sizes = [
        ["--chunk-tokens", "64", "--overlap", "64"],
        ["--chunk-tokens", "64", "--overlap", "100"],
        ["--overlap", "600"],  # the tiny model holds 512 tokens
        ["--overlap", "-1"],
        ["--chunk-tokens", "4"],
    ]
    for bad in sizes:
        assert main(_ingest(docs, "--db", str(db), "--model", str(conan_tiny), *bad)) == 2, bad
        err = capsys.readouterr().err
        assert ("--overlap" in err or "--chunk-tokens" in err) and not db.exists(), (bad, err)
    assert main(_ingest(docs, "--db", str(db), "--model", str(conan_tiny))) == 0
    capsys.readouterr()
    for bad in (["--fetch-k", "0"], ["--fetch-k", "-5"], ["--k", "0"], ["--threshold", "2"]):
        assert main(["query", "cells", "--db", str(db), *bad]) == 2, bad
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and bad[0] in err, err


def test_hidden_files_and_folders_are_skipped_unless_named(
    tmp_path: Path, conan_tiny: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    root = _docs(tmp_path / "project", 1)
    for hidden in (".hidden.md", ".venv/lib/site.md", "sub/.git/notes.md"):
        (root / hidden).parent.mkdir(parents=True, exist_ok=True)
        (root / hidden).write_text("Hidden text about cells.", encoding="utf-8")
    monkeypatch.chdir(root)
    db = str(tmp_path / "db")
    assert main(_ingest(".", "--db", db, "--model", str(conan_tiny), "--json")) == 0
    report = _json(capsys)
    assert report["added"] == 1 and report["files"] == 1 and report["hidden"] == 3
    assert main(_ingest(".hidden.md", "--db", db, "--json")) == 0  # named explicitly: taken
    assert _json(capsys)["added"] == 1


def test_default_model_missing_creates_nothing_and_says_how_to_get_it(tmp_path: Path) -> None:
    docs = _docs(tmp_path / "docs")
    env = {k: v for k, v in os.environ.items() if k != "CONAN_RAG_MODEL"}
    env.update(HF_HOME=str(tmp_path / "empty_hf_home"), HF_HUB_OFFLINE="1")
    done = subprocess.run(
        [str(CONAN_RAG), "ingest", str(docs), "--db", str(tmp_path / "db"), "--no-progress"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "`hf download TencentBAC/Conan-embedding-v1`" in done.stderr
    assert "`huggingface-cli download TencentBAC/Conan-embedding-v1`" in done.stderr
    assert "--model sentence-transformers/all-MiniLM-L6-v2" in done.stderr
    assert not (tmp_path / "db").exists()


def test_nothing_to_add_says_what_was_found(tmp_path: Path, conan_tiny: Path, capsys) -> None:
    db = str(tmp_path / "db")
    other = tmp_path / "other"
    other.mkdir()
    (other / "report.docx").write_bytes(b"PK\x03\x04")
    (other / "notes.rtf").write_text("{\\rtf1 hi}")
    assert main(_ingest(str(other), "--db", db, "--model", str(conan_tiny))) == 1
    out = capsys.readouterr().out
    assert "0 added" in out and "found 0 supported files" in out
    assert "2 files of other types were left out (.docx ×1, .rtf ×1)" in out
    assert "supported types are .txt" in out
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "blank.md").write_text("  \n\n ", encoding="utf-8")
    (empty / "zero.txt").write_bytes(b"")
    assert main(_ingest(str(empty), "--db", db)) == 1
    out = capsys.readouterr().out
    assert "2 empty" in out and "2 had no text" in out and "zero.txt" in out


def test_info_needs_no_model_even_when_the_recorded_folder_moved(
    tmp_path: Path, conan_tiny: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "model"
    shutil.copytree(conan_tiny, model)
    db = str(tmp_path / "db")
    docs = _docs(tmp_path / "docs", count=3)
    assert main(_ingest(str(docs), "--db", db, "--model", str(model))) == 0
    capsys.readouterr()
    want = Pipeline(db=db).info()  # loads the recorded model
    assert main(["info", "--db", db, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == want
    model.rename(tmp_path / "moved")
    assert main(["info", "--db", db, "--json"]) == 0
    captured = capsys.readouterr()
    got = json.loads(captured.out)
    assert got == {**want, "max_seq_length": None}, captured.err
    assert got["documents"] == 3 and got["model_id"] == str(model)
    assert main(["info", "--db", db]) == 0
    assert "fingerprint" in capsys.readouterr().out


def test_writing_to_an_existing_collection_prints_no_chroma_warning(
    tmp_path: Path, conan_tiny: Path
) -> None:
    """Chroma rebuilds the recorded embedding function on every write: it must know it."""
    db, docs = str(tmp_path / "db"), _docs(tmp_path / "docs")
    assert main(_ingest(str(docs), "--db", db, "--model", str(conan_tiny))) == 0
    (docs / "new.md").write_text("A new note about 细胞.", encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    python = [sys.executable, "-W", "error::UserWarning", "-m", "conan_rag.cli"]
    done = subprocess.run(
        [*python, "ingest", str(docs), "--db", db, "--no-progress"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "1 added" in done.stdout and "Could not reconstruct" not in done.stderr


def test_each_skip_is_one_line_without_third_party_noise(tmp_path: Path, conan_tiny: Path) -> None:
    docs = _docs(tmp_path / "docs", count=1)
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4 not a pdf")  # pypdf: "EOF marker not found"
    (docs / "blob.txt").write_bytes(b"\x00\x01binary" * 300)
    db = str(tmp_path / "db")
    done = subprocess.run(
        [str(CONAN_RAG), "ingest", str(docs), "--db", db, "--model", str(conan_tiny)],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    everything = done.stdout + done.stderr
    for name in ("broken.pdf", "blob.txt"):
        assert everything.count(name) == 1, everything
    assert "EOF marker" not in everything and "Skipping" not in everything


def test_load_of_a_damaged_export_names_the_file_and_creates_nothing(
    tmp_path: Path, conan_tiny: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from conan_rag import load_encoder
    from conan_rag.rag.ingest import LocalEngine

    staging = Pipeline(load_encoder(str(conan_tiny), device="cpu"), db=tmp_path / "staging")
    export = tmp_path / "export"
    staging.ingest([_docs(tmp_path / "docs", count=3)], engine=LocalEngine(), to_parquet=export)
    files = sorted((export / "chunks").glob("*.parquet"))
    assert files
    cases = {
        "truncated": (lambda f: os.truncate(f, f.stat().st_size // 2), "is damaged"),
        "missing": (lambda f: f.unlink(), "is missing"),
    }
    for name, (damage, said) in cases.items():
        copy = tmp_path / name
        shutil.copytree(export, copy)
        damage(copy / "chunks" / files[0].name)
        db = tmp_path / f"db-{name}"
        assert main(["load", str(copy), "--db", str(db), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{files[0].name} {said}" in err, err
        assert "--db" not in err and "Traceback" not in err
        assert not db.exists()  # nothing created
    assert main(["load", str(tmp_path / "nowhere"), "--db", str(tmp_path / "db")]) == 2
    err = capsys.readouterr().err
    assert "no such folder" in err and "not a conan-rag export" not in err
    assert main(["load", str(export), "--db", str(tmp_path / "db"), "--no-progress"]) == 0


def test_a_missing_rerank_model_gets_cross_encoder_advice(
    tmp_path: Path, conan_tiny: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, docs = str(tmp_path / "db"), _docs(tmp_path / "docs")
    assert main(_ingest(str(docs), "--db", db, "--model", str(conan_tiny))) == 0
    capsys.readouterr()
    assert main(["query", "cells", "--db", db, "--rerank-model", "no-such/reranker"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("conan-rag query: error: --rerank-model: Model 'no-such/reranker'")
    assert "cross-encoder" in err and "pass --model" not in err, err
