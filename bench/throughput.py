"""Short chat turns per second, and the server's floor, on the shipped server in one run.

Run with `make bench-throughput` (or `python bench/throughput.py [--seconds 5]`). The same set-up
as bench/concurrency.py (private Redis, fresh SQLite with the demo, deploy/Procfile's `web:` line,
DEBUG=0), the `support` agent on its extractive backend. Closed loop: C clients, each on one
kept-alive connection, send the next request when the last one is answered, for a fixed time:
- the floor: `GET /healthz`, a view that does nothing, through every middleware;
- hit-heavy turns: `POST /api/agents/support/chat` with one repeated question (every chunk a
  cache hit after the first turn), a new conversation each time.
Both at 8 and 32 clients, interleaved (floor, turns, floor, turns) so that a noisy neighbour
slows both alike; the ratio turns/floor is the figure to compare between runs. Server CPU per
request is the server processes' CPU time over the run (from /proc) divided by the requests.
`--baseline` measures the former HTTP path too, in the same run (bench/asgi_django_handler.py:
Django's own ASGI handler), server after server.
Exits 1 when a target of issue 11 is missed on the shipped server (turns >= 400/s with p99 <= 150 ms
at 32 clients; floor >= 2,500/s; turn server time on a hit <= 3 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import orjson  # noqa: E402
from concurrency import App, cpu_seconds, pct, prepare  # noqa: E402

CLIENTS = (8, 32)
TARGET_TURNS_PER_SECOND = 400.0
TARGET_TURN_P99_MS = 150.0
TARGET_FLOOR_PER_SECOND = 2500.0
TARGET_TURN_SERVER_MS = 3.0
QUESTION = "What do I do when Redis is down?"


# (name in the table, ASGI app to serve instead of the shipped one)
SHIPPED = ("WSGI handler in threads (shipped)", None)
BASELINE = ("Django's ASGI handler (before)", "asgi_django_handler:application")


@dataclass
class Run:
    label: str
    clients: int
    seconds: float
    server: str = SHIPPED[0]
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    server_times_ms: list[float] = field(default_factory=list)
    cpu_seconds: float = 0.0

    @property
    def per_second(self) -> float:
        return len(self.latencies) / self.seconds

    @property
    def cpu_ms_per_request(self) -> float:
        return self.cpu_seconds * 1000 / max(1, len(self.latencies))


async def client_loop(port: int, request: bytes, until: float, run: Run, turns: bool) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < until:
            started = time.perf_counter()
            writer.write(request)
            status = await reader.readline()
            headers = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in headers.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = await reader.readexactly(length)
            elapsed = time.perf_counter() - started
            if b" 200 " not in status:
                run.errors += 1
                continue
            run.latencies.append(elapsed)
            if turns:
                run.server_times_ms.append(float(orjson.loads(body)["timings"]["total_ms"]))
    finally:
        writer.close()


def measure(app: App, label: str, clients: int, seconds: float, server: str = SHIPPED[0]) -> Run:
    if label == "floor":
        request = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{app.port}\r\n\r\n".encode()
    else:
        body = orjson.dumps({"message": QUESTION})
        request = (
            f"POST /api/agents/support/chat HTTP/1.1\r\nHost: 127.0.0.1:{app.port}\r\n"
            f"Authorization: Bearer {app.token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
    run = Run(label=label, clients=clients, seconds=seconds, server=server)
    pids = app.workers()
    cpu_before = cpu_seconds(pids)

    async def everyone() -> None:
        until = time.perf_counter() + seconds
        await asyncio.gather(*(client_loop(app.port, request, until, run, label == "turns") for _ in range(clients)))

    started = time.perf_counter()
    asyncio.run(everyone())
    run.seconds = time.perf_counter() - started
    run.cpu_seconds = cpu_seconds(pids) - cpu_before
    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--baseline", action="store_true", help="also measure Django's ASGI handler (before)")
    args = parser.parse_args()
    servers = [SHIPPED, BASELINE] if args.baseline else [SHIPPED]
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    from tests.redis_process import RedisProcess, free_port

    redis_server = RedisProcess(maxmemory="256mb").start()
    app: App | None = None
    runs: list[Run] = []
    try:
        with tempfile.TemporaryDirectory(prefix="tokencache-bench-") as directory:
            app = prepare(Path(directory), redis_server.url(0), None, free_port())
            for server, application in servers:
                app.start(application=application)
                measure(app, "turns", 4, 1.0)  # warm up: tokenizer, token cache, connections
                for clients in CLIENTS:
                    for label in ("floor", "turns"):
                        run = measure(app, label, clients, args.seconds, server)
                        runs.append(run)
                        print(
                            f"{server}, {label} x{clients}: {run.per_second:,.0f}/s "
                            f"p99 {pct(run.latencies, 99) * 1000:.0f} ms",
                            flush=True,
                        )
                app.stop()
    finally:
        if app is not None:
            app.stop()
        redis_server.stop()

    lines = [
        "| server | clients | what | requests/s | p50 ms | p99 ms | errors | server CPU ms per request | "
        "turn's own total_ms p50 | turns/floor | shipped/before |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]

    def run_of(server: str, label: str, clients: int) -> Run | None:
        return next((r for r in runs if (r.server, r.label, r.clients) == (server, label, clients)), None)

    for server, _ in servers:
        for clients in CLIENTS:
            floor, turns = run_of(server, "floor", clients), run_of(server, "turns", clients)
            assert floor is not None and turns is not None
            for run in (floor, turns):
                own = f"{pct(run.server_times_ms, 50):.1f}" if run.server_times_ms else "-"
                ratio = f"{turns.per_second / max(floor.per_second, 1e-9):.2f}" if run is turns else ""
                before = run_of(BASELINE[0], run.label, clients) if server == SHIPPED[0] else None
                gain = f"x{run.per_second / max(before.per_second, 1e-9):.2f}" if before is not None else ""
                lines.append(
                    f"| {server} | {clients} | {'bare view (/healthz)' if run is floor else 'hit-heavy JSON turn'} | "
                    f"{run.per_second:,.0f} | {pct(run.latencies, 50) * 1000:.1f} | "
                    f"{pct(run.latencies, 99) * 1000:.1f} | {run.errors} | {run.cpu_ms_per_request:.2f} | {own} | "
                    f"{ratio} | {gain} |"
                )
    verdicts = []
    floor, turns = run_of(SHIPPED[0], "floor", 32), run_of(SHIPPED[0], "turns", 32)
    assert floor is not None and turns is not None
    verdicts += [
        (turns.per_second >= TARGET_TURNS_PER_SECOND, f"turns/s at 32 clients {turns.per_second:,.0f} (>= 400)"),
        (
            pct(turns.latencies, 99) * 1000 <= TARGET_TURN_P99_MS,
            f"turn p99 at 32 clients {pct(turns.latencies, 99) * 1000:.0f} ms (<= 150)",
        ),
        (floor.per_second >= TARGET_FLOOR_PER_SECOND, f"floor {floor.per_second:,.0f}/s (>= 2,500)"),
        (
            turns.cpu_ms_per_request <= TARGET_TURN_SERVER_MS,
            f"server CPU per hit turn {turns.cpu_ms_per_request:.1f} ms (<= 3)",
        ),
    ]
    markdown = (
        "## Throughput: hit-heavy short turns and the floor\n\n"
        f"`python bench/throughput.py --seconds {args.seconds:g}{' --baseline' if args.baseline else ''}`: "
        "deploy/Procfile's web line, DEBUG=0, closed loop on kept-alive connections, floor and turns "
        "interleaved; with --baseline the former HTTP path after it, same run.\n\n"
        + "\n".join(lines)
        + "\n\n"
        + "\n".join(f"- {'met' if ok else 'MISSED'}: {text}" for ok, text in verdicts)
        + "\n"
    )
    print(markdown)
    if not args.no_write:
        from report import write_section

        write_section("throughput", markdown)
    return 0 if all(ok for ok, _ in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
