"""Runs every Python block of integrations/README-snippets.md, section by section."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chromadb.api.client import SharedSystemClient
from llama_index.core import Settings

import conan_rag

SNIPPETS = Path(__file__).resolve().parents[1] / "integrations" / "README-snippets.md"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def sections() -> dict[str, list[str]]:
    """Heading -> its ```python blocks, in order."""
    text = SNIPPETS.read_text(encoding="utf-8")
    out: dict[str, list[str]] = {}
    for part in re.split(r"^## ", text, flags=re.MULTILINE)[1:]:
        heading, _, body = part.partition("\n")
        out[heading.strip()] = re.findall(r"```python\n(.*?)```", body, flags=re.DOTALL)
    return out


def run(blocks: list[str]) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "__readme__"}
    for block in blocks:
        exec(compile(block, str(SNIPPETS), "exec"), namespace)
    return namespace


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def restore_llama_settings() -> Iterator[None]:
    previous = Settings._embed_model
    yield
    Settings._embed_model = previous


def test_one_section_per_ecosystem_each_setting_up_in_three_statements() -> None:
    found = sections()
    assert list(found) == ["LangChain", "LlamaIndex", "Chroma"]
    for heading, blocks in found.items():
        assert blocks, f"{heading} has no python block"
        assert len(ast.parse(blocks[0]).body) == 3, f"{heading}'s setup is not three statements"
        assert MINILM in blocks[0], f"{heading} does not use the bundled model"


def test_langchain_snippet(in_tmp: Path) -> None:
    ns = run(sections()["LangChain"])
    assert len(ns["vector"]) == 384 and all(type(x) is float for x in ns["vector"])
    assert ns["embeddings"].encoder is conan_rag.load_encoder(MINILM)


def test_llamaindex_snippet(in_tmp: Path, restore_llama_settings: None) -> None:
    from llama_index.embeddings.conan import ConanEmbedding

    ns = run(sections()["LlamaIndex"])
    assert isinstance(Settings.embed_model, ConanEmbedding)
    assert Settings.embed_model.encoder is conan_rag.load_encoder(MINILM)
    assert [n.text for n in ns["nodes"]] == ["Paris is the capital of France."]


def test_chroma_snippet(in_tmp: Path) -> None:
    from conan_rag.chroma import ConanEmbeddingFunction

    try:
        ns = run(sections()["Chroma"])
        assert ns["hits"]["ids"] == [["paris"]]
        ef = ns["collection"].configuration["embedding_function"]
        assert isinstance(ef, ConanEmbeddingFunction)
        assert ef.get_config()["model"] == MINILM
        assert (in_tmp / "chroma_db").is_dir()
    finally:
        SharedSystemClient.clear_system_cache()
