"""Every code block in README.md runs as written.

``python`` blocks run in a fresh namespace each, ``bash`` blocks line by line in a shell, both in a
temporary folder holding a copy of ``examples/``. ``console`` blocks are the set-up commands
(``make demo``/``make test``: CI runs them) and the model download (needs the hub): the test
checks they contain nothing else.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from chromadb.api.client import SharedSystemClient
from llama_index.core import Settings

import conan_rag

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)


def section_blocks(heading: str) -> list[str]:
    text = README.read_text(encoding="utf-8")
    part = text.split(f"### {heading}", 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", part, re.DOTALL)


def run(code: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "__readme__"}
    exec(compile(code, str(README), "exec"), namespace)
    return namespace


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(ROOT / "examples" / "corpus", tmp_path / "examples" / "corpus")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_readme_has_two_setup_commands_and_no_unrun_blocks() -> None:
    console = "\n".join(blocks("console"))
    assert "make demo" in console and "make test" in console
    allowed = ("make ", "hf ", "export ", "conan-rag ", "HF_HUB_OFFLINE=1 ")
    for line in filter(None, (ln.strip() for ln in console.splitlines())):
        assert line.startswith(allowed), f"console line neither set-up nor download: {line}"
    text = README.read_text(encoding="utf-8")
    fences = re.findall(r"^```(\w*)$", text, re.MULTILINE)
    languages = set(fences[::2])
    assert languages <= {"python", "bash", "console", "mermaid", "text"}, languages


def test_encoder_quickstart(workdir: Path) -> None:
    (block,) = section_blocks("Encoder")
    ns = run(block)
    assert ns["vectors"].shape == (1, 384)
    assert ns["encoder"] is conan_rag.load_encoder(MINILM)


def test_langchain_quickstart(workdir: Path) -> None:
    block, migrated = section_blocks("LangChain")
    ns = run(block)
    assert len(ns["vector"]) == 384 and all(type(x) is float for x in ns["vector"])
    assert ns["embeddings"].encoder is conan_rag.load_encoder(MINILM)
    embeddings = run(migrated)["embeddings"]
    assert (embeddings.device, embeddings.normalize, embeddings.max_batch_size) == ("cpu", True, 32)
    assert embeddings.encoder is conan_rag.load_encoder(MINILM, device="cpu", max_batch_size=32)


def test_llamaindex_quickstart(workdir: Path) -> None:
    from llama_index.embeddings.conan import ConanEmbedding

    previous = Settings._embed_model
    try:
        (block,) = section_blocks("LlamaIndex")
        run(block)
        assert isinstance(Settings.embed_model, ConanEmbedding)
        assert Settings.embed_model.encoder is conan_rag.load_encoder(MINILM)
    finally:
        Settings._embed_model = previous


def test_chroma_quickstart(workdir: Path) -> None:
    from conan_rag.chroma import ConanEmbeddingFunction

    try:
        create, reopen = section_blocks("Chroma")
        ns = run(create)
        collection = ns["collection"]
        collection.add(ids=["paris"], documents=["Paris is the capital of France."])
        collection.add(ids=["bananas"], documents=["Bananas are yellow."])
        hits = collection.query(query_texts=["Which city is France's capital?"], n_results=1)
        assert hits["ids"] == [["paris"]]
        assert isinstance(collection.configuration["embedding_function"], ConanEmbeddingFunction)
        assert run(reopen)["hits"]["ids"] == [["paris"]]
    finally:
        SharedSystemClient.clear_system_cache()


@pytest.mark.slow
def test_pipeline_and_cli_quickstart(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        (block,) = section_blocks("Pipeline and CLI")
        ns = run(block)
        assert "1980" in capsys.readouterr().out  # smallpox: the cited passage has the year
        assert ns["pipe"].info()["chunks"] > 0
        hits = ns["hits"]
        assert 0 < len(hits) <= 3 and all(h.score >= 0.3 for h in hits)
        assert "everest" in hits[0].metadata["source"].lower()
    finally:
        SharedSystemClient.clear_system_cache()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    outputs = []
    for script in blocks("bash"):
        for line in filter(None, (ln.strip() for ln in script.splitlines())):
            done = subprocess.run(
                shlex.split(line), cwd=workdir, env=env, capture_output=True, text=True, timeout=300
            )
            assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
            outputs.append(done.stdout)
    assert '"unchanged"' in outputs[0]  # the Python block already ingested: nothing re-embedded
    assert "Hillary" in outputs[1] or "Norgay" in outputs[1]
    assert MINILM in outputs[2]
