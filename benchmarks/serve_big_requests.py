"""Big requests on `conan-rag serve`: the server's peak memory and a small request's wait meanwhile.

Starts a server process (``python -m conan_rag.cli serve --port 0``, all-MiniLM-L6-v2 by
default), then sends, one scenario at a time:

* ``huge-text``: one ``--huge-mb`` MB text in ``POST /v1/embeddings`` (over the default body
  cap of 16 MiB: refused with 413 before it is read);
* ``long-text``: one ``--long-mb`` MB text (under the cap: cut by characters, then truncated);
* ``many-texts``: ``--texts`` texts of ``"hello " * 2000`` (issue 23: about 524k truncated
  tokens on MiniLM, served in slices that let other requests through).

For each it prints the answer's status and seconds, the server's RSS before, its peak during the
scenario (``VmHWM`` after writing 5 to ``/proc/PID/clear_refs``) and its RSS after, and how long
one small request (one sentence), sent once the big one is in flight (or answered), waited.

    python benchmarks/serve_big_requests.py                  # MiniLM, cpu, float32
    python benchmarks/serve_big_requests.py --texts 256      # a shorter many-texts scenario
"""

from __future__ import annotations

import argparse
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import httpx

from conan_rag.testing import start_serve_process

REPO = Path(__file__).resolve().parent.parent
START_S = 300
MB = 1_000_000


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen[str], str]:
    """A server process and its URL, once it prints its ready line."""
    serve = ["--model", args.model, "--port", "0", "--device", args.device, "--dtype", args.dtype]
    return start_serve_process([*serve, *args.extra], cwd=REPO, start_s=START_S)


def status_kb(pid: int, field: str) -> int:
    """A ``/proc/PID/status`` field in kB (``VmRSS``, ``VmHWM``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def in_flight(url: str) -> float:
    """The server's ``conan_rag_requests_in_flight``."""
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line.startswith("conan_rag_requests_in_flight "):
            return float(line.split()[1])
    return 0.0


def small_wait(url: str) -> tuple[int, float]:
    """The status of one small request and the seconds it took."""
    start = time.perf_counter()
    response = httpx.post(f"{url}/v1/embeddings", json={"input": "a small query"}, timeout=600)
    return response.status_code, time.perf_counter() - start


def scenario(name: str, url: str, pid: int, body: bytes) -> None:
    """Send ``body``; meanwhile one small request; print status, seconds, RSS and the wait."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = status_kb(pid, "VmRSS")
    result: dict[str, Any] = {}

    def send() -> None:
        start = time.perf_counter()
        headers = {"Content-Type": "application/json"}
        response = httpx.post(f"{url}/v1/embeddings", content=body, headers=headers, timeout=900)
        result["status"], result["seconds"] = response.status_code, time.perf_counter() - start
        result["message"] = "" if response.is_success else response.text[:300]

    big = threading.Thread(target=send)
    big.start()
    while big.is_alive() and in_flight(url) < 1:
        time.sleep(0.02)
    small, wait = small_wait(url)
    big.join()
    peak = status_kb(pid, "VmHWM")
    time.sleep(1.0)  # a settle time for the figure below (a benchmark, not a test)
    after = status_kb(pid, "VmRSS")
    print(
        f"{name}: {len(body) / MB:.1f} MB body -> {result['status']} in {result['seconds']:.1f} s"
        f"; server RSS {before / 1e6:.2f} GB before, peak {peak / 1e6:.2f} GB, after "
        f"{after / 1e6:.2f} GB; a small request meanwhile: {small} in {wait:.2f} s"
    )
    if result["message"]:
        print(f"  {result['message']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--huge-mb", type=float, default=20.0)
    parser.add_argument("--long-mb", type=float, default=15.0)
    parser.add_argument("--texts", type=int, default=2048)
    parser.add_argument("extra", nargs="*", help="more `conan-rag serve` arguments (after --)")
    args = parser.parse_args()
    proc, url = start_server(args)
    try:
        small_wait(url)  # warm
        print(f"idle: a small request takes {small_wait(url)[1]:.3f} s")
        word = b"lorem ipsum dolor sit amet "
        for name, mb in (("huge-text", args.huge_mb), ("long-text", args.long_mb)):
            text = word * int(mb * MB / len(word))
            scenario(name, url, proc.pid, b'{"input": "' + text + b'"}')
        many = b'"' + b"hello " * 2000 + b'"'
        body = b'{"input": [' + b",".join([many] * args.texts) + b"]}"
        scenario(f"many-texts ({args.texts})", url, proc.pid, body)
    finally:
        proc.terminate()
        proc.wait(timeout=120)


if __name__ == "__main__":
    main()
