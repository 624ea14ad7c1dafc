"""`conan-rag serve` as real server processes, driven by the clients people use with it.

Three servers (all-MiniLM-L6-v2, cpu, float32) start once, side by side: ``main`` with an API key
(from $CONAN_RAG_API_KEY) and default limits; ``strict`` on 0.0.0.0 without a key (a warning),
with --strict-model and a tiny --max-queued-tokens for the error rows, and stopped by SIGTERM in
the SIGTERM test; ``limits`` with a 1 MB body cap, 4096 queued tokens (slices of 1024) and a 1 s
drain limit, for issue 23's rows (big bodies, big requests, SIGTERM past the drain limit).
Vectors are compared with the in-process float32 encoder (cos >= 0.9999).
"""

from __future__ import annotations

import asyncio
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

import conan_rag
from conan_rag.cli import main
from tests.texts import sts_chinese, sts_english

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
KEY = "server-test-key"
START_S = 180
TEXTS = [*sts_english(24), *sts_chinese(4), "emoji 🙂 text", ""]
LONG = " ".join(sts_english(60))  # beyond 256 tokens
DASHES = "-" * 300  # 300 tokens in 300 bytes: many truncated tokens per byte


@dataclass
class Server:
    proc: subprocess.Popen[str]
    url: str
    stderr: Path

    def log(self) -> str:
        return self.stderr.read_text(encoding="utf-8", errors="replace")


def _start(args: list[str], stderr: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "conan_rag.cli", "serve", "--model", MINILM, "--port", "0"]
    command += ["--device", "cpu", "--dtype", "float32", *args]
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=stderr.open("w"), text=True
    )


def _ready_url(proc: subprocess.Popen[str], stderr: Path) -> str:
    """The URL of the server's ready line."""
    assert proc.stdout is not None
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        if select.select([proc.stdout], [], [], 0.5)[0]:
            line = proc.stdout.readline()
            assert line.startswith(f"conan-rag serve: {MINILM} (dim 384, float32, cpu) on http")
            return line.rsplit(" ", 1)[1].strip()
        if proc.poll() is not None:
            pytest.fail(f"the server exited ({proc.returncode}): {stderr.read_text()[-3000:]}")
    pytest.fail(f"the server did not start in {START_S} s")


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    logs = tmp_path_factory.mktemp("server-logs")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    started = {
        "main": _start([], logs / "main.log", {**env, "CONAN_RAG_API_KEY": KEY}),
        "strict": _start(
            ["--host", "0.0.0.0", "--strict-model", "--max-queued-tokens", "64"],
            logs / "strict.log",
            {k: v for k, v in env.items() if k != "CONAN_RAG_API_KEY"},
        ),
        "limits": _start(
            ["--max-request-bytes", "1000000", "--max-queued-tokens", "4096", "--drain-s", "1"],
            logs / "limits.log",
            {k: v for k, v in env.items() if k != "CONAN_RAG_API_KEY"},
        ),
    }
    try:
        out = {}
        for name, proc in started.items():
            url = _ready_url(proc, logs / f"{name}.log").replace("0.0.0.0", "127.0.0.1")
            out[name] = Server(proc, url, logs / f"{name}.log")
        yield out
    finally:
        for proc in started.values():
            if proc.poll() is None:
                proc.terminate()
            proc.wait(timeout=60)


@pytest.fixture(scope="module")
def local() -> conan_rag.Encoder:
    return conan_rag.load_encoder(MINILM, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def main_url(servers: dict[str, Server]) -> str:
    return servers["main"].url


def _same(got: object, want: np.ndarray) -> None:
    vectors = np.asarray(got, dtype=np.float32).reshape(want.shape)
    cos = (vectors * want).sum(axis=1) / (
        np.linalg.norm(vectors, axis=1) * np.linalg.norm(want, axis=1) + 1e-12
    )
    assert cos.min() >= 0.9999, cos.min()
    assert np.abs(vectors - want).max() < 1e-4  # the same scale too (normalized or not)


def _post(url: str, path: str, body: object, key: str | None = KEY) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{url}{path}", json=body, headers=headers, timeout=120)


def _error(response: httpx.Response, status: int) -> dict[str, str | None]:
    assert response.status_code == status, response.text
    error: dict[str, str | None] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def _metrics(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_openai_sdk_base64_float_dimensions_and_input_type(
    servers: dict[str, Server], local: conan_rag.Encoder
) -> None:
    from openai import AsyncOpenAI, OpenAI

    main_url = servers["main"].url

    client = OpenAI(base_url=f"{main_url}/v1", api_key=KEY)
    want = local.encode(TEXTS)
    default = client.embeddings.create(model=MINILM, input=TEXTS)  # the SDK asks for base64
    _same([d.embedding for d in default.data], want)
    assert [d.index for d in default.data] == list(range(len(TEXTS)))
    tokens = sum(len(ids) for ids in local.tokenize(TEXTS))
    assert default.usage.prompt_tokens == default.usage.total_tokens == tokens
    assert default.model == MINILM
    floats = client.embeddings.create(model=MINILM, input=TEXTS, encoding_format="float")
    _same([d.embedding for d in floats.data], want)

    small = conan_rag.load_encoder(MINILM, device="cpu", dtype="float32", truncate_dim=64)
    cut = client.embeddings.create(model=MINILM, input=TEXTS[:3], dimensions=64)
    _same([d.embedding for d in cut.data], small.encode(TEXTS[:3]))
    one = client.embeddings.create(model=MINILM, input=TEXTS[0], extra_body={"input_type": "query"})
    _same([one.data[0].embedding], local.encode(TEXTS[:1], kind="query"))
    long = client.embeddings.create(model=MINILM, input=[LONG])  # truncated at 256 tokens
    _same([long.data[0].embedding], local.encode([LONG]))
    assert long.usage.prompt_tokens == local.max_seq_length == 256

    async def via_async() -> list[float]:
        aclient = AsyncOpenAI(base_url=f"{main_url}/v1", api_key=KEY)
        return (await aclient.embeddings.create(model="any-name", input=["hi"])).data[0].embedding

    _same([asyncio.run(via_async())], local.encode(["hi"]))  # another model name: served
    warned = f"A request asked for model 'any-name'; serving {MINILM}."
    deadline = time.monotonic() + 300  # a hang guard: the line is awaited, not a time window
    while warned not in servers["main"].log():
        assert time.monotonic() < deadline, servers["main"].log()
        time.sleep(0.05)


def test_langchain_openai_embeddings(
    main_url: str, local: conan_rag.Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    import openai
    from langchain_openai import OpenAIEmbeddings

    common = {"model": MINILM, "base_url": f"{main_url}/v1", "api_key": KEY}
    emb = OpenAIEmbeddings(**common, check_embedding_ctx_length=False)
    _same(emb.embed_documents(TEXTS), local.encode(TEXTS))
    _same([emb.embed_query(TEXTS[1])], local.encode(TEXTS[1:2], kind="query"))
    _same(asyncio.run(emb.aembed_documents(TEXTS[:4])), local.encode(TEXTS[:4]))

    # Its default tokenizes with tiktoken (cl100k_base, shipped by llama-index) and sends ids.
    import llama_index.core

    cache = Path(llama_index.core.__file__).parent / "_static" / "tiktoken_cache"
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    with pytest.raises(openai.BadRequestError) as refused:
        OpenAIEmbeddings(**common).embed_documents(["Paris is the capital of France."])
    assert "token ids" in str(refused.value)
    assert "check_embedding_ctx_length=False" in str(refused.value)


def test_llama_index_openai_like(main_url: str, local: conan_rag.Encoder) -> None:
    from llama_index.embeddings.openai_like import OpenAILikeEmbedding

    emb = OpenAILikeEmbedding(model_name=MINILM, api_base=f"{main_url}/v1", api_key=KEY)
    _same(emb.get_text_embedding_batch(TEXTS), local.encode(TEXTS))
    _same([emb.get_query_embedding(TEXTS[2])], local.encode(TEXTS[2:3]))


def test_tei_embed(main_url: str, local: conan_rag.Encoder) -> None:
    raw = _post(main_url, "/embed", {"inputs": TEXTS, "normalize": False})
    assert raw.status_code == 200, raw.text
    _same(raw.json(), local.encode(TEXTS, normalize=False))
    cut = _post(main_url, "/embed", {"inputs": TEXTS, "normalize": False, "dimensions": 32})
    _same(cut.json(), local.encode(TEXTS, normalize=False)[:, :32])
    query = _post(main_url, "/embed?x=1", {"inputs": "a question", "prompt_name": "query"})
    _same(query.json(), local.encode(["a question"], kind="query"))
    long = _post(main_url, "/embed", {"inputs": ["short", LONG]})  # truncate defaults to true
    _same(long.json(), local.encode(["short", LONG]))
    refused = _error(_post(main_url, "/embed", {"inputs": ["short", LONG], "truncate": False}), 413)
    assert refused["param"] == "inputs" and "inputs[1] has" in str(refused["message"])
    assert "at most 256" in str(refused["message"])


def test_error_rows(main_url: str) -> None:
    body = {"input": ["a"]}
    missing = _error(_post(main_url, "/v1/embeddings", body, key=None), 401)
    assert missing["type"] == "authentication_error" and "Bearer" in str(missing["message"])
    assert _post(main_url, "/v1/embeddings", body, key=None).headers["www-authenticate"]
    _error(_post(main_url, "/v1/embeddings", body, key="wrong"), 401)
    _error(_post(main_url, "/embed", {"inputs": "a"}, key="wrong"), 401)
    assert httpx.get(f"{main_url}/info", timeout=30).status_code == 401
    assert httpx.get(f"{main_url}/health", timeout=30).json() == {"status": "ok"}  # open

    rows = [
        ({"input": []}, "input is an empty list"),
        ({"input": ["a", "b", 3]}, "input[2] is a number, not a string"),
        ({"input": ["a", None]}, "input[1] is null"),
        ({"input": [[101, 2023], [7]]}, "check_embedding_ctx_length=False"),
        ({"input": [101, 2023, 102]}, "token ids"),
        ({"input": {"text": "a"}}, "input must be a string or a list of strings"),
        ({"input": "a", "dimensions": 385}, "dimensions 385 is outside 1..384"),
        ({"input": "a", "dimensions": 0}, "dimensions"),
        ({"input": "a", "input_type": "passage"}, "'query' or 'document'"),
        ({"input": "a", "encoding_format": "int8"}, "encoding_format"),
        ({"text": "a"}, "input is required"),
    ]
    for body, words in rows:
        for path in ("/v1/embeddings", "/embeddings"):
            error = _error(_post(main_url, path, body), 400)
            assert words in str(error["message"]), (body, error)
            assert error["type"] == "invalid_request_error"
    tei = _error(_post(main_url, "/embed", {"inputs": ["ok", 7]}), 400)
    assert tei["param"] == "inputs" and "inputs[1]" in str(tei["message"])
    bad_json = httpx.post(
        f"{main_url}/v1/embeddings",
        content=b'{"input": ',
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    assert "not valid JSON" in str(_error(bad_json, 400)["message"])
    too_many = _error(_post(main_url, "/v1/embeddings", {"input": ["x"] * 2049}), 413)
    assert "at most 2048" in str(too_many["message"]) and too_many["code"] == "too_many_inputs"
    nowhere = _error(_post(main_url, "/v2/embeddings", body), 404)
    assert nowhere["type"] == "not_found_error"


def test_strict_model_and_queue_full(servers: dict[str, Server]) -> None:
    strict = servers["strict"]
    assert "without an API key" in strict.log()  # bound 0.0.0.0 with no key
    other = _error(_post(strict.url, "/v1/embeddings", {"input": "a", "model": "gpt-x"}), 404)
    assert other["code"] == "model_not_found" and MINILM in str(other["message"])
    for name in (MINILM, "all-MiniLM-L6-v2", None):
        assert _post(strict.url, "/v1/embeddings", {"input": "a", "model": name}).is_success

    # 64 queued tokens at most: a big request alone is admitted, a second one meanwhile is not.
    with _in_flight(strict.url, [LONG] * 48) as big:
        refused = _post(strict.url, "/v1/embeddings", {"input": "one more"})
        error = _error(refused, 429)
        assert error["type"] == "rate_limit_error" and int(refused.headers["retry-after"]) >= 1
    assert big["response"].status_code == 200 and len(big["response"].json()["data"]) == 48


class _in_flight:
    """Send a request in a thread; enter once the server counts it in flight."""

    def __init__(self, url: str, texts: list[str], key: str | None = KEY) -> None:
        self.url, self.texts, self.key = url, texts, key
        self.result: dict[str, httpx.Response] = {}

    def _send(self) -> None:
        body = {"input": self.texts, "encoding_format": "float"}
        self.result["response"] = _post(self.url, "/v1/embeddings", body, key=self.key)

    def __enter__(self) -> dict[str, httpx.Response]:
        self.thread = threading.Thread(target=self._send)
        self.thread.start()
        deadline = time.monotonic() + 300  # a hang guard
        while _metrics(self.url).get(("conan_rag_requests_in_flight", ()), 0) < 1:
            assert time.monotonic() < deadline and self.thread.is_alive()
            time.sleep(0.02)
        return self.result

    def __exit__(self, *exc: object) -> None:
        self.thread.join(timeout=120)


def test_info_models_tokenizer_and_metrics(main_url: str, local: conan_rag.Encoder) -> None:
    from tokenizers import Tokenizer

    auth = {"Authorization": f"Bearer {KEY}"}
    info = httpx.get(f"{main_url}/info", headers=auth, timeout=30).json()
    assert info == {
        "model_id": MINILM,
        "fingerprint": local.fingerprint,
        "dim": 384,
        "max_seq_length": 256,
        "dtype": "float32",
        "device": "cpu",
        "prompts": local.prompts,
        "do_lower_case": False,
        "max_inputs": 2048,
        "max_queued_tokens": 16 * local.token_budget,
        "version": conan_rag.__version__,
    }
    models = httpx.get(f"{main_url}/v1/models", headers=auth, timeout=30).json()
    assert [m["id"] for m in models["data"]] == [MINILM] and models["object"] == "list"
    served = httpx.get(f"{main_url}/tokenizer", headers=auth, timeout=30).json()
    assert served["max_seq_length"] == 256 and served["prompts"] == local.prompts
    tokenizer = Tokenizer.from_str(served["tokenizer_json"])
    assert [e.ids for e in tokenizer.encode_batch(TEXTS)] == local.tokenize(TEXTS)

    _post(main_url, "/v1/embeddings", {"input": ["one", "two"]})
    seen = _metrics(main_url)
    assert seen[("conan_rag_requests_total", (("endpoint", "/v1/embeddings"), ("status", "200")))]
    assert seen[("conan_rag_requests_total", (("endpoint", "/v1/embeddings"), ("status", "400")))]
    assert seen[("conan_rag_requests_total", (("endpoint", "/v1/embeddings"), ("status", "401")))]
    assert seen[("conan_rag_inputs_total", (("endpoint", "/v1/embeddings"),))] >= 2
    assert seen[("conan_rag_tokens_total", (("endpoint", "/embed"),))] > 0
    assert seen[("conan_rag_batch_size_count", ())] > 0
    assert seen[("conan_rag_request_duration_seconds_count", (("endpoint", "/embed"),))] > 0
    assert seen[("conan_rag_requests_in_flight", ())] == 0
    assert seen[("conan_rag_queued_tokens", ())] == 0


def test_32_concurrent_clients_get_their_own_vectors(
    main_url: str, local: conan_rag.Encoder
) -> None:
    texts = sts_english(128)
    want = local.encode(texts)
    before = _metrics(main_url)

    async def clients() -> list[list[float]]:
        limits = httpx.Limits(max_connections=32)
        headers = {"Authorization": f"Bearer {KEY}"}
        async with httpx.AsyncClient(limits=limits, headers=headers, timeout=120) as client:

            async def one(mine: list[int]) -> list[tuple[int, list[float]]]:
                got = []
                for i in mine:
                    r = await client.post(f"{main_url}/embed", json={"inputs": texts[i]})
                    got.append((i, r.json()[0]))
                return got

            done = await asyncio.gather(*(one(list(range(c, 128, 32))) for c in range(32)))
        out: list[list[float]] = [[]] * 128
        for i, vector in (pair for part in done for pair in part):
            out[i] = vector
        return out

    _same(asyncio.run(clients()), want)
    after = _metrics(main_url)
    rows = after[("conan_rag_batch_size_sum", ())] - before[("conan_rag_batch_size_sum", ())]
    batches = after[("conan_rag_batch_size_count", ())] - before[("conan_rag_batch_size_count", ())]
    assert rows == 128 and batches < 128  # coalesced: several clients per forward pass


def test_create_app_loads_in_the_background_and_answers_503_until_ready() -> None:
    from fastapi.testclient import TestClient

    from conan_rag.server import ServerSettings, create_app

    missing = create_app(ServerSettings(model="no/such-model", device="cpu", api_key=None))
    with TestClient(missing) as client:
        deadline = time.monotonic() + 300  # a hang guard
        while "loading the model failed" not in client.get("/health").text:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        error = _error(client.get("/health"), 503)
        assert "ModelNotFoundError" in str(error["message"]) and error["type"] == "server_error"
        assert _error(client.post("/v1/embeddings", json={"input": "a"}), 503)

    settings = ServerSettings(model=MINILM, device="cpu", dtype="float32", api_key=None)
    with TestClient(create_app(settings)) as client:
        deadline = time.monotonic() + 300  # a hang guard
        while client.get("/health").status_code == 503:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert client.get("/info").json()["dim"] == 384
        assert len(client.post("/embed", json={"inputs": ["a", "b"]}).json()) == 2


def test_bind_error_and_missing_extra_are_one_line(
    main_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    port = main_url.rsplit(":", 1)[1]
    assert main(["serve", "--port", port, "--model", MINILM]) == 2
    err = capsys.readouterr().err
    assert f"conan-rag serve: error: --host 127.0.0.1 --port {port}: Cannot listen" in err
    monkeypatch.setitem(sys.modules, "fastapi", None)  # as if the extra were not installed
    for module in ("conan_rag.server.app", "conan_rag.server.run"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    assert main(["serve", "--port", "0"]) == 2
    assert "pip install 'conan-rag[serve]'" in capsys.readouterr().err


def test_sigterm_finishes_the_request_in_flight_and_exits_0(servers: dict[str, Server]) -> None:
    strict = servers["strict"]
    with _in_flight(strict.url, [LONG] * 48) as big:
        strict.proc.send_signal(signal.SIGTERM)
    assert big["response"].status_code == 200 and len(big["response"].json()["data"]) == 48
    assert strict.proc.wait(timeout=60) == 0
    assert strict.proc.stdout is not None
    assert "conan-rag serve: stopped on SIGTERM" in strict.proc.stdout.read()


def test_a_body_over_the_cap_is_refused_413_before_it_is_read(servers: dict[str, Server]) -> None:
    url = servers["limits"].url
    big = {"input": "word " * 250_000}  # 1.25 MB
    refused = _error(httpx.post(f"{url}/v1/embeddings", json=big, timeout=120), 413)
    assert refused["code"] == "request_too_large" and "at most 1,000,000" in str(refused["message"])
    assert "--max-request-bytes" in str(refused["message"])

    def chunked() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"input": "'
        for _ in range(25):
            yield b"word " * 10_000
        yield b'"}'

    response = httpx.post(f"{url}/embed", content=chunked(), timeout=120)
    assert "more than 1,000,000 bytes" in str(_error(response, 413)["message"])
    assert _post(url, "/v1/embeddings", {"input": "still serving"}, key=None).is_success


def test_a_long_text_is_cut_before_tokenizing_with_its_vector_unchanged(
    main_url: str, local: conan_rag.Encoder
) -> None:
    from conan_rag.server.service import EmbeddingService

    service = EmbeddingService(local)
    texts = [LONG * 40, "x" * 200_000, DASHES * 100, ("word" + " " * 40) * 3000, "hi"]
    cut, lengths = service.measure(texts, "document")
    assert [len(c) < len(t) for c, t in zip(cut, texts)] == [True, False, True, True, False]
    assert local.tokenize(cut) == local.tokenize(texts)  # the same truncated tokens
    assert lengths[0] > 256 and lengths[-1] == 3
    want = local.encode(texts[:1])
    served = _post(main_url, "/v1/embeddings", {"input": texts[:1], "encoding_format": "float"})
    _same([served.json()["data"][0]["embedding"]], want)
    assert served.json()["usage"]["prompt_tokens"] == 256
    tei = _error(_post(main_url, "/embed", {"inputs": ["ok", texts[0]], "truncate": False}), 413)
    assert "inputs[1] has more than 256 tokens" in str(tei["message"])


def test_a_request_over_a_slice_is_served_in_slices_letting_others_through(
    servers: dict[str, Server], local: conan_rag.Encoder
) -> None:
    url = servers["limits"].url  # 4096 queued tokens: slices of 1024; this request holds 4,096
    texts = [f"{i} {DASHES}" for i in range(16)]
    with _in_flight(url, texts, key=None) as big:
        small = _post(url, "/v1/embeddings", {"input": "a small query"}, key=None)
        assert small.status_code == 200, small.text  # before: 429, the queue held 4,096 tokens
        assert "response" not in big  # answered while the big one still runs
    assert big["response"].status_code == 200
    assert big["response"].json()["usage"]["prompt_tokens"] == 16 * 256
    data = big["response"].json()["data"]
    _same([d["embedding"] for d in data], local.encode(texts))


def test_sigterm_past_the_drain_limit_answers_503_and_counts_the_cut(
    servers: dict[str, Server],
) -> None:
    limits = servers["limits"]  # --drain-s 1; this request needs about 2 min on 2 cores
    with _in_flight(limits.url, [DASHES] * 2048, key=None) as big:
        limits.proc.send_signal(signal.SIGTERM)
    error = _error(big["response"], 503)
    assert error["code"] == "server_stopping" and "drain limit (1 s)" in str(error["message"])
    assert limits.proc.wait(timeout=60) == 0  # a hang guard far below the request's own time
    assert limits.proc.stdout is not None
    line = limits.proc.stdout.read()
    assert "stopped on SIGTERM; 1 request(s) still running at the drain limit (1 s" in line
    assert "were answered." not in line.replace("others in flight were answered", "")
    assert "Traceback" not in limits.log() and "CancelledError" not in limits.log()


def test_bind_errors_name_the_real_reason(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--host", "203.0.113.7", "--port", "0", "--model", MINILM]) == 2
    err = capsys.readouterr().err
    assert "203.0.113.7 is not an address of this machine" in err and "0.0.0.0" in err
    assert "stop the process using it" not in err
    assert main(["serve", "--host", "no-such-host.invalid", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "the name 'no-such-host.invalid' does not resolve" in err
    assert "Pass an IP address" in err and "stop the process using it" not in err
