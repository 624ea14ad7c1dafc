"""The heap is trimmed once the server is idle after a large request, never mid-request."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from conan_rag.server.memory_trim import TrimMiddleware


class _Held:
    """An ASGI app that reads the body, then answers once its request's gate opens."""

    def __init__(self) -> None:
        self.gates: dict[str, asyncio.Event] = {}
        self.inside: dict[str, asyncio.Event] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        name = scope["path"].strip("/")
        while (await receive()).get("more_body"):
            pass
        self.inside.setdefault(name, asyncio.Event()).set()
        await self.gates.setdefault(name, asyncio.Event()).wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    def open(self, name: str) -> None:
        self.gates.setdefault(name, asyncio.Event()).set()

    async def entered(self, name: str) -> None:
        await self.inside.setdefault(name, asyncio.Event()).wait()


def test_a_trim_follows_the_last_request_after_a_large_one() -> None:
    async def scenario() -> list[int]:
        held = _Held()
        trim = TrimMiddleware(held, large_body=1000)
        seen = []
        transport = httpx.ASGITransport(app=trim)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            held.open("small")
            await client.post("/small", content=b"x" * 10)
            seen.append(trim.trims)  # 0: a small request alone never trims
            big = asyncio.create_task(client.post("/big", content=b"x" * 5000))
            other = asyncio.create_task(client.post("/other", content=b"x" * 10))
            await held.entered("big")
            await held.entered("other")
            held.open("big")
            await big
            seen.append(trim.trims)  # 0: another request is still in flight
            held.open("other")
            await other
            seen.append(trim.trims)  # 1: idle again after a large request
            await client.post("/small", content=b"x" * 10)
            seen.append(trim.trims)  # 1: nothing large since
        return seen

    assert asyncio.run(scenario()) == [0, 0, 1, 1]
