"""A ``conan-rag serve`` process for benchmarks: started, and its URL read from its ready line.

Example:
    >>> start_serve_process.__name__
    'start_serve_process'
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

START_S = 300.0


def start_serve_process(
    args: list[str], *, cwd: Path | None = None, start_s: float = START_S
) -> tuple[subprocess.Popen[str], str]:
    """Start ``python -m conan_rag.cli serve ARGS`` (without an API key) and wait until ready.

    Args:
        args: the ``serve`` arguments (``--model M --port 0 ...``).
        cwd: the folder to run in.
        start_s: how long loading may take.

    Returns:
        The process and the URL its ready line names (the line is echoed).

    Raises:
        SystemExit: the server exited or did not start in time (it is then stopped).
    """
    command = [sys.executable, "-m", "conan_rag.cli", "serve", *args]
    env = {k: v for k, v in os.environ.items() if k != "CONAN_RAG_API_KEY"}
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + start_s
    while time.monotonic() < deadline:
        if select.select([proc.stdout], [], [], 0.5)[0]:
            line = proc.stdout.readline()
            print(line.strip())
            return proc, line.rsplit(" ", 1)[1].strip()
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
    proc.terminate()
    raise SystemExit(f"the server did not start in {start_s:.0f} s")
