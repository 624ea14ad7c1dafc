"""The batching queue: concurrent callers get exactly the sequential vectors, errors stay put."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import conan_rag.batching.queue as queue_module
from conan_rag import load_encoder
from conan_rag.config import EncoderConfig
from conan_rag.encoder import Encoder
from conan_rag.errors import ConanConfigError
from conan_rag.testing import build_conan_layout_model
from tests.texts import sts_chinese, sts_english

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pool() -> list[str]:
    return sorted(sts_english(600), key=len)[:160]  # short texts keep the test fast


@pytest.fixture(scope="module")
def minilm(minilm_path: Path) -> Encoder:
    return load_encoder(str(minilm_path), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def reference(minilm_path: Path, pool: list[str]) -> dict[str, np.ndarray]:
    direct = load_encoder(str(minilm_path), device="cpu", dtype="float32", use_queue=False)
    return dict(zip(pool, direct.encode(pool), strict=True))


def _check(texts: list[str], got: np.ndarray, reference: dict[str, np.ndarray]) -> float:
    want = np.stack([reference[t] for t in texts])
    assert got.shape == want.shape and got.dtype == np.float32
    return float((got * want).sum(axis=1).min())


@pytest.mark.slow
def test_32_threads_x_50_mixed_requests_equal_sequential(
    minilm: Encoder, pool: list[str], reference: dict[str, np.ndarray]
) -> None:
    queue = minilm.queue
    before = queue.batches_run
    worst: list[float] = []
    errors: list[BaseException] = []

    def client(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(50):
                texts = rng.sample(pool, rng.choice([1, 1, 1, 2, 3]))
                worst.append(_check(texts, minilm.encode(texts), reference))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors[0]
    assert len(worst) == 32 * 50
    assert min(worst) >= 0.99999
    # 1,600 requests were coalesced: far fewer forward passes than requests
    assert queue.batches_run - before < 32 * 50 / 4


async def test_200_asyncio_tasks_equal_sequential(
    minilm: Encoder,
    pool: list[str],
    reference: dict[str, np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_threads(*args: object, **kwargs: object) -> None:
        raise AssertionError("aencode of a few texts must not start a thread")

    monkeypatch.setattr(asyncio, "to_thread", no_threads)
    requests = [[pool[i % len(pool)], pool[(7 * i) % len(pool)]][: 1 + i % 2] for i in range(200)]
    before = minilm.queue.batches_run
    results = await asyncio.gather(*(minilm.aencode(texts) for texts in requests))
    assert min(_check(t, r, reference) for t, r in zip(requests, results, strict=True)) >= 0.99999
    assert minilm.queue.batches_run - before < 50
    empty = await minilm.aencode([])
    assert empty.shape == (0, 384)
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        await minilm.aencode(["ok", 3])  # type: ignore[list-item]


def test_failing_request_gets_its_error_and_batch_mates_succeed(
    minilm: Encoder, pool: list[str], reference: dict[str, np.ndarray]
) -> None:
    queue = minilm.queue
    good = [pool[i : i + 2] for i in range(0, 12, 2)]
    ids = [minilm.tokenize(texts) for texts in good]
    bad_ids = [[101, 10**7, 102]]  # far outside the 30,522-token vocab
    before = queue.batches_run
    futures = [queue.submit(x, wait_ms=300) for x in ids[:3]]
    bad = queue.submit(bad_ids, wait_ms=300)
    futures += [queue.submit(x, wait_ms=300) for x in ids[3:]]
    with pytest.raises((IndexError, RuntimeError)):
        bad.result(60)
    for texts, future in zip(good, futures, strict=True):
        vectors = torch.nn.functional.normalize(future.result(60), dim=-1).numpy()
        assert _check(texts, vectors, reference) >= 0.99999
    # one coalesced batch failed, then each of the 7 requests was retried alone
    assert queue.batches_run - before == 1 + 7
    # the queue keeps serving afterwards
    assert _check(pool[:3], minilm.encode(pool[:3]), reference) >= 0.99999


def test_wait_bound_is_configurable(minilm: Encoder, pool: list[str]) -> None:
    queue = minilm.queue
    ids = minilm.tokenize(pool[:1])
    queue.submit(ids, wait_ms=0).result(60)  # warm up
    start = time.perf_counter()
    queue.submit(ids, wait_ms=400).result(60)
    assert time.perf_counter() - start >= 0.39  # alone, it waited for company
    start = time.perf_counter()
    queue.submit(ids, wait_ms=0).result(60)
    assert time.perf_counter() - start < 0.39
    # requests arriving within the wait share one batch
    before = queue.batches_run
    futures = [queue.submit(minilm.tokenize([t]), wait_ms=400) for t in pool[:10]]
    assert all(f.result(60).shape == (1, 384) for f in futures)
    assert queue.batches_run - before == 1


def test_queue_settings_are_config_data(minilm_path: Path, pool: list[str]) -> None:
    cfg = EncoderConfig(model=str(minilm_path), batch_wait_ms=0.5, use_queue=False)
    assert EncoderConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ConanConfigError, match="batch_wait_ms"):
        EncoderConfig(batch_wait_ms=-1)
    with pytest.raises(ConanConfigError, match="use_queue"):
        EncoderConfig(use_queue="yes")  # type: ignore[arg-type]
    slow = load_encoder(
        config=cfg.replace(use_queue=True, batch_wait_ms=300), device="cpu", dtype="float32"
    )
    start = time.perf_counter()
    slow.encode(pool[:1])
    assert time.perf_counter() - start >= 0.29


def test_prompt_lengths_never_share_a_batch(tmp_path: Path) -> None:
    folder = build_conan_layout_model(
        tmp_path / "m", pooling="mean", weights="safetensors", prompts={"query": "query: "}
    )
    config_file = folder / "1_Pooling" / "config.json"
    pooling = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**pooling, "include_prompt": False}))  # skip the prompt
    queued = load_encoder(str(folder), device="cpu", dtype="float32")
    direct = load_encoder(str(folder), device="cpu", dtype="float32", use_queue=False)
    assert queued.backend is direct.backend and queued.backend.spec.pooling.include_prompt is False
    texts = sts_chinese(40)
    kinds = ["query", "document"] * 20
    want = {
        kind: dict(zip(texts, direct.encode(texts, kind=kind), strict=True))  # type: ignore[arg-type]
        for kind in ("query", "document")
    }
    results: list[tuple[str, str, np.ndarray]] = []

    def client(text: str, kind: str) -> None:
        results.append((text, kind, queued.encode([text], kind=kind)[0]))  # type: ignore[arg-type]

    threads = [threading.Thread(target=client, args=tk) for tk in zip(texts, kinds, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 40
    assert min(float(v @ want[k][t]) for t, k, v in results) >= 0.99999
    query_vs_doc = [float(want["query"][t] @ want["document"][t]) for t in texts]
    assert min(query_vs_doc) < 0.9999  # the prompt changes the vector: the check has teeth


def test_large_encode_with_progress_bar_and_idle_worker_exit(
    minilm: Encoder,
    pool: list[str],
    reference: dict[str, np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr("conan_rag.encoder.QUEUE_CHUNK", 64)  # several chunks in flight
    texts = pool * 2
    out = minilm.encode(texts, show_progress=True)
    assert _check(texts, out, reference) >= 0.99999
    assert "320/320" in capsys.readouterr().err
    monkeypatch.setattr(queue_module, "IDLE_EXIT_S", 0.2)
    queue = minilm.queue
    queue.submit(minilm.tokenize(pool[:1]), wait_ms=0).result(60)  # wake: picks up 0.2 s
    deadline = time.monotonic() + 10
    while queue.running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not queue.running
    assert _check(pool[:2], minilm.encode(pool[:2]), reference) >= 0.99999  # restarted


def test_process_with_a_busy_queue_exits_promptly(minilm_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import threading, time
        from conan_rag import load_encoder
        enc = load_encoder({str(minilm_path)!r}, device="cpu", dtype="float32")
        threads = [threading.Thread(target=enc.encode, args=(["a cat sat"] * 3,))
                   for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert enc.queue.running
        enc.queue.submit(enc.tokenize(["still waiting"]), wait_ms=900)  # left pending
        print(time.time(), flush=True)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"},
    )
    exited = time.time()
    assert proc.returncode == 0, proc.stderr[-2000:]
    finished = float(proc.stdout.strip().splitlines()[-1])
    assert exited - finished < 5.0, "the worker thread held up interpreter exit"
    assert "Traceback" not in proc.stderr


def test_requests_cancelled_while_waiting_are_skipped_quietly(
    minilm: Encoder,
    pool: list[str],
    reference: dict[str, np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A cycle whose requests were all cancelled (a caller's Ctrl-C) is no worker failure."""
    queue, backend = minilm.queue, minilm.backend
    inside, release = threading.Event(), threading.Event()
    embed = backend.embed

    def held(*args: object, **kwargs: object) -> torch.Tensor:
        inside.set()
        assert release.wait(60)
        return embed(*args, **kwargs)

    monkeypatch.setattr(backend, "embed", held)
    first = queue.submit(minilm.tokenize(pool[:2]), wait_ms=0)
    assert inside.wait(60)  # the worker is inside the first batch
    monkeypatch.setattr(backend, "embed", embed)
    later = [queue.submit(minilm.tokenize(pool[i : i + 2]), wait_ms=0) for i in range(2, 8, 2)]
    for future in later:
        assert future.cancel()
    with caplog.at_level(logging.ERROR, logger="conan_rag.batching.queue"):
        release.set()
        vectors = torch.nn.functional.normalize(first.result(60), dim=-1).numpy()
        assert _check(pool[:2], vectors, reference) >= 0.99999
        assert _check(pool[8:11], minilm.encode(pool[8:11]), reference) >= 0.99999  # still serving
    assert "batching worker failed" not in caplog.text


def test_a_short_request_waits_one_batch_of_a_large_one_not_its_cycle(
    minilm: Encoder, pool: list[str], reference: dict[str, np.ndarray], monkeypatch
) -> None:
    """A query arriving while a large request's cycle runs goes in the very next batch.

    Synchronised on state: the worker is held inside the large request's first batch until
    the query is queued. Before, the query waited for the rest of the cycle (four token
    budgets of the large request) and then, sorted shortest last, for the large rows of the
    next cycle too. float32 vectors, compared with the unqueued encoder's.
    """
    queue, backend = minilm.queue, minilm.backend
    inside, release = threading.Event(), threading.Event()
    embed = backend.embed
    batches: list[list] = []  # the rows of each batch (the very row objects), in run order

    def recorded(rows: list, prompt_length: int = 0) -> torch.Tensor:
        batches.append(list(rows))
        if len(batches) == 1:
            inside.set()
            assert release.wait(300)  # a hang guard only
        return embed(rows, prompt_length)

    monkeypatch.setattr(backend, "embed", recorded)
    big_texts = pool[40:160]
    big = minilm.tokenize(big_texts)
    budget = 2 * max(len(x) for x in big)  # two rows per batch: 60 batches, 15 per cycle
    large = queue.submit(big, wait_ms=0, token_budget=budget, max_batch_size=2)
    assert inside.wait(300)
    query = pool[:1]
    query_ids = minilm.tokenize(query)
    short = queue.submit(query_ids, wait_ms=0, token_budget=budget)
    with queue._cond:  # the query is queued before the worker is let go
        assert any(r.future is short for r in queue._pending)
    release.set()
    got = torch.nn.functional.normalize(short.result(300), dim=-1).numpy()
    assert _check(query, got, reference) >= 0.99999
    vectors = torch.nn.functional.normalize(large.result(300), dim=-1).numpy()
    assert _check(big_texts, vectors, reference) >= 0.99999  # nothing given back was lost
    where = [k for k, rows in enumerate(batches) if any(row is query_ids[0] for row in rows)]
    assert where == [1], [len(rows) for rows in batches]  # right after the batch in flight
    assert sum(len(rows) for rows in batches) == len(big_texts) + 1  # each row ran once
