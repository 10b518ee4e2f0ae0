"""A small, bounded chat load over the three interfaces, as an asyncio client (loopback only).

Each client sends one turn at a time, rotating through the JSON API (`POST
/api/agents/<slug>/chat`), the OpenAI-compatible API streamed (`POST /v1/chat/completions`,
`stream: true`) and the websocket (`/ws/agents/<slug>/`), with a mix of repeated questions
and new ones, until `seconds` have passed; nothing starts after that and every turn has
its own timeout, so a run always ends. Each turn's outcome is recorded: `ok`, an error the
server stated (its code, e.g. `http 503 model_unavailable`, `stream model_unavailable`), or
what the client saw (`exc ReadTimeout`). Used by tests/faults/ and bench/load.py.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import httpx
import websockets
from websockets.typing import Origin

INTERFACES = ("json", "openai", "ws")
QUESTIONS = (
    "What do I do when Redis is down?",
    "How do I reset a password?",
    "How long is the refund window?",
    "How do I export my data?",
)


@dataclass(frozen=True)
class Turn:
    interface: str
    started: float  # time.monotonic()
    seconds: float
    outcome: str  # "ok" or what went wrong


@dataclass
class LoadResult:
    seconds: float
    turns: list[Turn] = field(default_factory=list)

    @property
    def ok(self) -> int:
        return sum(turn.outcome == "ok" for turn in self.turns)

    def outcomes(self) -> Counter[str]:
        return Counter(turn.outcome for turn in self.turns)

    def latencies(self, *, since: float = float("-inf"), until: float = float("inf")) -> list[float]:
        return [t.seconds for t in self.turns if t.outcome == "ok" and since <= t.started < until]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def _error_code(response: httpx.Response) -> str:
    try:
        error = response.json().get("error") or {}
    except ValueError:
        return "?"
    return str(error.get("code") or error.get("type") or "?")


async def _json_turn(client: httpx.AsyncClient, slug: str, question: str) -> str:
    response = await client.post(f"/api/agents/{slug}/chat", json={"message": question})
    return "ok" if response.status_code == 200 else f"http {response.status_code} {_error_code(response)}"


async def _openai_turn(client: httpx.AsyncClient, slug: str, question: str) -> str:
    body = {"model": slug, "messages": [{"role": "user", "content": question}], "stream": True}
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            await response.aread()
            return f"http {response.status_code} {_error_code(response)}"
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            payload = line.removeprefix("data: ")
            if payload == "[DONE]":
                return "ok"
            event = json.loads(payload)
            if "error" in event:
                return f"stream {event['error'].get('code') or event['error'].get('type')}"
    return "stream ended early"


async def _ws_turn(ws_url: str, slug: str, cookie: str, origin: str, question: str) -> str:
    async with websockets.connect(
        f"{ws_url}/ws/agents/{slug}/",
        origin=Origin(origin),
        additional_headers={"Cookie": cookie},
        open_timeout=20,
    ) as ws:
        await ws.send(json.dumps({"type": "message", "message": question}))
        async for frame in ws:
            event = json.loads(frame)
            if event["type"] == "done":
                return "ok"
            if event["type"] == "error":
                return f"ws {event.get('code')}"
    return "ws closed early"


async def run_load(
    url: str,
    *,
    token: str,
    cookie: str,
    slug: str = "support",
    clients: int = 4,
    seconds: float = 6.0,
    new_share: float = 0.3,
    turn_timeout: float = 30.0,
) -> LoadResult:
    """Run `clients` closed-loop clients against `url` for `seconds`; every turn's outcome is kept."""
    ws_url = url.replace("http://", "ws://", 1)
    result = LoadResult(seconds=seconds)
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients * 2)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=turn_timeout, limits=limits
    ) as http:

        async def client(number: int) -> None:
            n = 0
            while time.monotonic() < deadline:
                interface = INTERFACES[(number + n) % len(INTERFACES)]
                # Every few turns a question nobody asked before; otherwise one of a few repeated ones.
                if (n * 7 + number) % 10 < new_share * 10:
                    question = f"{QUESTIONS[n % len(QUESTIONS)]} (case {uuid.uuid4().hex[:8]})"
                else:
                    question = QUESTIONS[(number + n) % len(QUESTIONS)]
                n += 1
                started = time.monotonic()
                try:
                    if interface == "json":
                        turn = _json_turn(http, slug, question)
                    elif interface == "openai":
                        turn = _openai_turn(http, slug, question)
                    else:
                        turn = _ws_turn(ws_url, slug, cookie, url, question)
                    outcome = await asyncio.wait_for(turn, timeout=turn_timeout)
                except TimeoutError:
                    outcome = "exc timeout"
                except Exception as error:  # a failed turn is a figure, not a crash of the load
                    outcome = f"exc {type(error).__name__}"
                result.turns.append(Turn(interface, started, time.monotonic() - started, outcome))
                if outcome.startswith("exc"):
                    await asyncio.sleep(0.1)  # a server that is gone: do not spin

        await asyncio.gather(*(client(n) for n in range(clients)))
    return result
