"""Forked children (multiprocessing 'fork', gunicorn --preload, Celery prefork) encode or fail fast.

Each scenario runs in a fresh interpreter with a deadline of its own, so a child that hangs
fails the test instead of hanging pytest. Most run with ``OMP_NUM_THREADS=1``; one runs the
parent multi-threaded, where torch's OpenMP pool does not survive the fork and the backend puts
the child on one thread.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from conan_rag import load_encoder
from conan_rag.batching.queue import BatchQueue
from conan_rag.errors import QueueWorkerError
from conan_rag.runtime.backend import Backend
from tests.texts import sts_english

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX only)")

REPO = Path(__file__).resolve().parent.parent
CHILD_DEADLINE_S = 90  # each script gives up on its child after this
SCRIPT_TIMEOUT_S = 300  # and is killed (with its children) after this


def _run(script: str, *args: str, one_thread: bool = True) -> str:
    """Run a script with a forking parent; its stdout. Fails the test on error or timeout."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("OMP_NUM_THREADS", None)
    if one_thread:
        env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.Popen(
        [sys.executable, "-c", WAIT_CHILD + textwrap.dedent(script), *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # so a timeout kills the forked children too
    )
    try:
        out, err = proc.communicate(timeout=SCRIPT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"no answer in {SCRIPT_TIMEOUT_S} s: a forked child hung")
    assert proc.returncode == 0, err[-3000:]
    return out


# Scripts start with this: waits for a child made by os.fork(), kills it after CHILD_DEADLINE_S.
WAIT_CHILD = f"""
def wait_child(pid):
    import os, signal, time
    deadline = time.monotonic() + {CHILD_DEADLINE_S}
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return 124
"""


def _texts(n: int) -> list[str]:
    return sorted(sts_english(200), key=len)[:n]


@pytest.mark.slow
def test_a_child_of_a_multithreaded_parent_encodes_on_one_thread(
    minilm_path: Path, tmp_path: Path
) -> None:
    # Without the one-thread fallback the child hangs in GNU OpenMP (measured: both with the
    # queue and with use_queue=False, at 2 threads and 512 texts).
    script = f"""
        import json, os, sys
        import numpy as np
        import torch
        from conan_rag import load_encoder

        torch.set_num_threads(2)
        queued = load_encoder({str(minilm_path)!r}, device="cpu", dtype="float32")
        direct = load_encoder({str(minilm_path)!r}, device="cpu", dtype="float32",
                              use_queue=False)
        texts = {_texts(200)!r} * 3
        parent = direct.encode(texts)
        queued.encode(texts)
        pid = os.fork()
        if pid == 0:
            np.savez(sys.argv[1], queued=queued.encode(texts), direct=direct.encode(texts),
                     threads=torch.get_num_threads())
            os._exit(0)
        np.save(sys.argv[2], parent)
        print(json.dumps({{"code": wait_child(pid), "threads": torch.get_num_threads()}}))
    """
    child_out, parent_out = tmp_path / "child.npz", tmp_path / "parent.npy"
    facts = json.loads(
        _run(script, str(child_out), str(parent_out), one_thread=False).splitlines()[-1]
    )
    assert facts == {"code": 0, "threads": 2}  # the parent keeps its threads
    child, parent = np.load(child_out), np.load(parent_out)
    assert int(child["threads"]) == 1
    assert child["queued"].shape == parent.shape == (600, 384)
    assert np.allclose(child["queued"], parent, atol=1e-5)
    assert np.allclose(child["direct"], parent, atol=1e-5)


def test_forked_pool_worker_encodes_and_aencodes_like_the_parent(
    minilm_path: Path, tmp_path: Path
) -> None:
    # The parent's queue has a live worker thread at the fork; the child inherits it dead.
    script = f"""
        import asyncio, json, multiprocessing, os, sys
        import numpy as np
        from conan_rag import load_encoder

        enc = load_encoder({str(minilm_path)!r}, device="cpu", dtype="float32")
        texts = {_texts(24)!r}
        parent = enc.encode(texts)
        parent_async = asyncio.run(enc.aencode(texts[:8], kind="query"))
        assert enc.queue.running

        def in_child():
            vectors = enc.encode(texts)
            async_vectors = asyncio.run(enc.aencode(texts[:8], kind="query"))
            return os.getpid(), vectors, async_vectors, enc.queue.running

        with multiprocessing.get_context("fork").Pool(1) as pool:
            pid, child, child_async, running = pool.apply_async(in_child).get(
                timeout={CHILD_DEADLINE_S}
            )
        np.savez(sys.argv[1], parent=parent, parent_async=parent_async, child=child,
                 child_async=child_async)
        print(json.dumps({{"parent": os.getpid(), "child": pid, "running": running}}))
    """
    out = tmp_path / "vectors.npz"
    facts = json.loads(_run(script, str(out)).splitlines()[-1])
    assert facts["child"] != facts["parent"] and facts["running"]  # the child's own worker
    vectors = np.load(out)
    assert vectors["child"].shape == (24, 384) and vectors["child_async"].shape == (8, 384)
    assert np.allclose(vectors["child"], vectors["parent"], atol=1e-6)
    assert np.allclose(vectors["child_async"], vectors["parent_async"], atol=1e-6)
    assert not np.allclose(vectors["child"][0], vectors["child"][1], atol=1e-2)  # has teeth


def test_child_forked_while_parent_threads_hold_every_lock_encodes(minilm_path: Path) -> None:
    # A thread that is mid-forward, mid-tokenization or mid-load at the fork holds a lock that
    # no thread of the child will ever release: the child must not wait for it.
    script = f"""
        import os, sys, threading, traceback
        import numpy as np
        import conan_rag.model.fingerprint as fingerprint
        import conan_rag.registry as registry
        from conan_rag import load_encoder

        model = {str(minilm_path)!r}
        enc = load_encoder(model, device="cpu", dtype="float32")
        direct = load_encoder(model, device="cpu", dtype="float32", use_queue=False)
        texts = {_texts(12)!r}
        want = enc.encode(texts)
        held, release = threading.Event(), threading.Event()

        def hold():
            locks = [registry._registry_lock, fingerprint._cache_lock, enc.queue._cond,
                     enc.backend._forward_lock, enc.backend._tokenizer_lock]
            for lock in locks:
                lock.acquire()
            held.set()
            release.wait()
            for lock in reversed(locks):
                lock.release()

        threading.Thread(target=hold).start()
        held.wait()
        pid = os.fork()
        if pid == 0:
            try:
                queued, alone = enc.encode(texts), direct.encode(texts)
                small = load_encoder(model, device="cpu", dtype="float32", truncate_dim=128)
                assert len(small.fingerprint) == 16
                assert np.allclose(queued, want, atol=1e-6), "queued"
                assert np.allclose(alone, want, atol=1e-6), "direct"
                assert small.encode(texts[:2]).shape == (2, 128)
                os._exit(0)
            except BaseException:
                traceback.print_exc()
                os._exit(3)
        code = wait_child(pid)
        release.set()
        sys.exit(code)
    """
    _run(script)


def test_request_queued_before_the_fork_fails_fast_in_the_child(minilm_path: Path) -> None:
    script = f"""
        import asyncio, json, os, sys, time
        from conan_rag import load_encoder
        from conan_rag.errors import QueueWorkerError

        enc = load_encoder({str(minilm_path)!r}, device="cpu", dtype="float32")
        enc.encode(["warm up"])
        ids = enc.tokenize(["queued before the fork"])
        # alone, each waits 30 s for company: both are pending in the parent at the fork
        first, second = (enc.queue.submit(ids, wait_ms=30_000) for _ in range(2))
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            facts = {{}}
            start = time.monotonic()
            try:
                enc.queue.result(first)
            except QueueWorkerError as exc:
                facts["sync_s"], facts["message"] = time.monotonic() - start, str(exc)
            start = time.monotonic()
            try:
                asyncio.run(enc.queue.aresult(second))
            except QueueWorkerError:
                facts["async_s"] = time.monotonic() - start
            facts["cancelled"] = first.cancelled() and second.cancelled()
            facts["fresh"] = list(enc.encode(["served in the child"]).shape)
            os.write(write, json.dumps(facts).encode())
            os._exit(0)
        os.close(write)
        code = wait_child(pid)
        child = json.loads(os.read(read, 1 << 16) or b"{{}}")
        # the parent's own requests are untouched: a request that wants no company runs them
        enc.queue.submit(ids, wait_ms=0)
        parent = [list(f.result(60).shape) for f in (first, second)]
        print(json.dumps({{"code": code, "child": child, "parent": parent}}))
    """
    facts = json.loads(_run(script).splitlines()[-1])
    assert facts["code"] == 0, facts
    child = facts["child"]
    assert "sync_s" in child and "async_s" in child, child
    assert child["sync_s"] < 5 and child["async_s"] < 5, child  # an error, not a hang
    assert "forked" in child["message"] and "use_queue=False" in child["message"]
    assert child["cancelled"] and child["fresh"] == [1, 384]
    assert facts["parent"] == [[1, 384], [1, 384]]


class _StumblingRunner:
    """The real backend, except that planning the next cycle fails once, killing the worker."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.stumble = threading.Event()

    @property
    def output_dim(self) -> int:
        return self.backend.output_dim

    def tokenize(self, texts: Sequence[str], max_length: int) -> list[list[int]]:
        return self.backend.tokenize(texts, max_length)

    def embed(self, ids: Sequence[Sequence[int]], prompt_length: int = 0) -> torch.Tensor:
        return self.backend.embed(ids, prompt_length)

    def budget(self, requested: int) -> int:
        if self.stumble.is_set():
            self.stumble.clear()
            raise RuntimeError("a bug in the worker")
        return self.backend.budget(requested)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_request_of_a_dead_worker_fails_fast_and_the_queue_recovers(minilm_path: Path) -> None:
    enc = load_encoder(str(minilm_path), device="cpu", dtype="float32")
    runner = _StumblingRunner(enc.backend)
    queue = BatchQueue(runner)
    ids = enc.tokenize(["a cat sat on the mat"])
    want = queue.submit(ids, wait_ms=0).result(60)
    runner.stumble.set()
    doomed = queue.submit(ids, wait_ms=0)
    start = time.monotonic()
    with pytest.raises(QueueWorkerError, match="worker thread died"):
        queue.result(doomed)
    assert time.monotonic() - start < 5 and doomed.cancelled()
    assert not queue.running
    # the next request starts a new worker, which serves it (and skips the cancelled one)
    again = queue.result(queue.submit(ids, wait_ms=0))
    assert torch.allclose(again, want, atol=1e-6) and queue.running
    queue.stop()


def test_queue_result_and_aresult_return_what_the_worker_computed(minilm_path: Path) -> None:
    enc = load_encoder(str(minilm_path), device="cpu", dtype="float32")
    ids = enc.tokenize(_texts(3))
    direct = enc.backend.embed(ids)
    assert torch.allclose(enc.queue.result(enc.queue.submit(ids)), direct, atol=1e-5)

    async def awaited() -> torch.Tensor:
        return await enc.queue.aresult(enc.queue.submit(ids))

    assert torch.allclose(asyncio.run(awaited()), direct, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_encoder_in_a_forked_child_says_use_spawn(minilm_path: Path) -> None:
    script = f"""
        import json, os, sys, traceback
        from conan_rag import load_encoder
        from conan_rag.errors import ForkedProcessError

        model = {str(minilm_path)!r}
        enc = load_encoder(model, device="cuda", dtype="float32")
        direct = load_encoder(model, device="cuda", dtype="float32", use_queue=False)
        enc.encode(["warm up"])
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            messages = []
            for encoder in (enc, direct):
                try:
                    encoder.encode(["in the child"])
                except ForkedProcessError as exc:
                    messages.append(str(exc))
            os.write(write, json.dumps(messages).encode())
            os._exit(0)
        os.close(write)
        code = wait_child(pid)
        messages = json.loads(os.read(read, 1 << 16) or b"[]")
        print(json.dumps({{"code": code, "messages": messages,
                          "parent": list(enc.encode(["still fine"]).shape)}}))
    """
    facts = json.loads(_run(script).splitlines()[-1])
    assert facts["code"] == 0 and facts["parent"] == [1, 384]
    assert len(facts["messages"]) == 2
    assert all("spawn" in m and "cuda" in m for m in facts["messages"])
