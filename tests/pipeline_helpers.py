"""Shared pieces of the pipeline tests: a real `chroma run` server and store fixtures."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conan_rag import load_encoder
from conan_rag.rag.chunking import ChunkConfig
from conan_rag.rag.pipeline import Pipeline
from conan_rag.rag.sources.documents import Document
from conan_rag.rag.store import Records

CHROMA = Path(sys.executable).with_name("chroma")
_names = itertools.count()

FACTS = {
    "paris": "Paris is the capital of France. The Eiffel Tower stands in Paris.",
    "bananas": "Bananas are yellow fruit rich in potassium. Monkeys like bananas.",
    "python": "Python is a programming language created by Guido van Rossum.",
    "mars": "Mars is the fourth planet from the Sun and is called the red planet.",
    "tea": "Green tea is made from unoxidized leaves of Camellia sinensis.",
    "beijing": "北京是中国的首都。故宫位于北京市中心。",
}


def fact_docs(source: str = "facts") -> list[Document]:
    return [Document(key, text, source, title=key.title()) for key, text in FACTS.items()]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def chroma_server(path: Path) -> Iterator[str]:
    """Start `chroma run` on a free loopback port; yield its URL; stop it."""
    port = free_port()
    log = (path / "server.log").open("wb")
    proc = subprocess.Popen(
        [
            str(CHROMA),
            "run",
            "--path",
            str(path / "data"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300  # a hang guard: a busy machine starts it slowly
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/v2/heartbeat", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"chroma run did not start: {(path / 'server.log').read_text()}"
                    ) from None
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with chroma_server(tmp_path_factory.mktemp("chroma_server")) as url:
        yield url


@pytest.fixture(params=["embedded", pytest.param("server", marks=pytest.mark.server)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """Where a Pipeline stores: ``{"db": folder}`` or ``{"url": server}``, plus a fresh name."""
    name = f"test-{next(_names)}-{tmp_path.name[-20:]}".replace("_", "-")
    if request.param == "server":
        return {"url": request.getfixturevalue("server_url"), "collection": name}
    return {"db": tmp_path / "db", "collection": name}


@pytest.fixture(scope="session")
def minilm(minilm_path: Path) -> Any:
    return load_encoder(str(minilm_path), device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def tiny(conan_tiny: Path) -> Any:
    return load_encoder(str(conan_tiny), device="cpu", dtype="float32")


@pytest.fixture
def make_pipeline(store: dict[str, Any]) -> Callable[..., Pipeline]:
    def make(encoder: Any, chunking: ChunkConfig | None = None, **kwargs: Any) -> Pipeline:
        return Pipeline(encoder, chunking=chunking, **{**store, **kwargs})

    return make


def crash_docs(version: int) -> list[Document]:
    """Deterministic multi-chunk documents; version 2 changes, drops and adds some."""
    docs = []
    for i in range(36):
        if version == 2 and i % 9 == 0:
            continue  # dropped in v2
        words = " ".join(f"gene{i} binds protein{(i * 7 + j) % 13}." for j in range(30))
        if version == 2 and i % 3 == 0:
            words = "Revised. " + words
        docs.append(Document(f"doc{i}", words, "crash", title=f"Doc {i}"))
    if version == 2:
        docs += [Document(f"new{i}", f"new cell line {i}. " * 20, "crash") for i in range(4)]
    return docs


class Reads:
    """Counts the records the store hands out, by method."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, store: Any) -> None:
        self.records: dict[str, int] = {"scan": 0, "find": 0, "get": 0}
        for name in self.records:
            monkeypatch.setattr(store, name, self._counted(name, getattr(store, name)))

    def _counted(self, name: str, method: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            out = method(*args, **kwargs)
            if isinstance(out, Records):
                self.records[name] += len(out)
                return out
            return self._pages(name, out)

        return call

    def _pages(self, name: str, pages: Any) -> Any:
        for page in pages:
            self.records[name] += len(page)
            yield page


@contextlib.contextmanager
def ctrl_c_live() -> Iterator[None]:
    """Ctrl-C raises ``KeyboardInterrupt`` here (and in children started meanwhile).

    A shell starts a background job with SIGINT ignored and children inherit that; Python then
    installs no ``KeyboardInterrupt`` handler, and a child would shrug the signal off.
    """
    ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def popen_with_ctrl_c(command: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start ``command`` with Ctrl-C live in it, even where this process ignores SIGINT."""
    with ctrl_c_live():
        return subprocess.Popen(command, **kwargs)


def without_file_permissions_bypass() -> list[str]:
    """Root ignores permission bits; run the child as root without that capability."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.fail("running as root needs util-linux's setpriv to test read-only folders")
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]
