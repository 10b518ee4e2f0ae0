"""Concurrent streaming chats: N turns at once through the OpenAI-compatible API and the websocket.

Run with `make bench-concurrency` (or `python bench/concurrency.py [--quick] [--levels 50,100]`).
Starts, all on loopback and stopped at the end: a private redis-server, a loopback model server
(tests/support/fake_model_server.py, in a process of its own, streaming PIECES pieces over
MODEL_SECONDS), and the web server exactly as deploy/Procfile's `web:` line starts it, on a fresh
SQLite database seeded with the demo, whose `support` agent is pointed at the model server.

How it measures, and why:
- N clients start spread evenly over MODEL_SECONDS (a ramp), so that about N streams are open at
  once, as with N people asking within a few seconds; a burst of N requests in the same
  millisecond mostly measures the accept queue. The peak of streams open at once is reported.
- The model server's own figures are measured first, with the same client, the same N and the
  same ramp, straight to it: the app's overhead is its figure minus the model's, per percentile.
- Time to first token: from sending the request to the first non-empty piece of text (SSE
  `delta.content`, websocket `delta` frame). Total: to the end of the answer (`[DONE]`, `done`).
- The client is raw asyncio (a few lines of HTTP/1.1 and chunked decoding; `websockets` for the
  sockets), so that the load generator's own CPU stays small beside the server's on 2 cores.
- Memory: each server process's peak RSS (VmHWM) and, per open stream, the growth of the
  processes' RSS over the run divided by the peak number of open streams.
- Before/after: `--baseline` also runs the former thread-per-turn path
  (TOKENCACHE_STREAM_IN_THREADS, bench/settings_stream_in_threads.py) at the lower levels.
Exits 1 when a target of docs/performance.md is missed at TARGET_STREAMS streams.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import orjson  # noqa: E402
from environment import bench_environment  # noqa: E402

PIECES = 30
MODEL_SECONDS = 3.0
LEVELS = (50, 100, 500, 1000)
BASELINE_LEVELS = (50, 100)
TARGET_STREAMS = 500
TARGET_TTFT_OVERHEAD_MS = 250.0
TARGET_TOTAL_OVER_MODEL_MS = 500.0
QUESTION = "What do I do when Redis is down?"
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else sys.executable


# --- the model server, in its own process (its threads must not share our GIL)


def model_server_main() -> None:
    from tests.support import fake_model_server as fms

    words = [f"word{n} " for n in range(PIECES)]
    fms._pieces = lambda text, max_tokens: list(words)  # type: ignore[assignment]
    fms._QuietServer.request_queue_size = 4096  # the accept backlog (socketserver's default is 5)
    server = fms.FakeModelServer(model="bench-model")
    # A piece every MODEL_SECONDS / PIECES, the usage chunk and [DONE] after the last one.
    server.knobs.chunk_delay_seconds = MODEL_SECONDS / (PIECES + 1)
    server.start()
    print(server.base_url, flush=True)
    sys.stdin.read()  # until the benchmark closes our stdin
    server.stop()


# --- one streaming request


@dataclass
class Sample:
    ttft: float | None = None
    total: float | None = None
    error: str | None = None


@dataclass
class Load:
    open_now: int = 0
    peak_open: int = 0
    samples: list[Sample] = field(default_factory=list)

    def opened(self) -> None:
        self.open_now += 1
        self.peak_open = max(self.peak_open, self.open_now)

    def closed(self) -> None:
        self.open_now -= 1


async def _read_chunked(reader: asyncio.StreamReader) -> Any:
    """Yield the body's data, chunk by chunk (HTTP/1.1 chunked transfer coding)."""
    while True:
        size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
        if size == 0:
            return
        data = await reader.readexactly(size + 2)
        yield data[:-2]


async def sse_stream(host: str, port: int, path: str, body: bytes, headers: dict[str, str], load: Load) -> Sample:
    sample = Sample()
    started = time.perf_counter()
    load.opened()
    writer = None
    try:
        reader, writer = await asyncio.open_connection(host, port)
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{head}Connection: close\r\n\r\n".encode()
            + body
        )
        status = await reader.readline()
        response_headers = (await reader.readuntil(b"\r\n\r\n")).lower()
        if b" 200 " not in status:
            sample.error = status.decode().strip()
            return sample
        buffer = b""
        chunks = _read_chunked(reader) if b"transfer-encoding: chunked" in response_headers else _read_all(reader)
        async for data in chunks:
            buffer += data
            while b"\n\n" in buffer:
                event, buffer = buffer.split(b"\n\n", 1)
                if not event.startswith(b"data: "):
                    continue
                payload = event[6:]
                if payload == b"[DONE]":
                    sample.total = time.perf_counter() - started
                    return sample
                parsed = orjson.loads(payload)
                if "error" in parsed:
                    sample.error = str(parsed["error"].get("code", "error"))
                    return sample
                choices = parsed.get("choices") or [{}]
                choice = choices[0]
                text = choice.get("text") or (choice.get("delta") or {}).get("content")
                if text and sample.ttft is None:
                    sample.ttft = time.perf_counter() - started
        sample.error = "stream ended early"
        return sample
    except (OSError, asyncio.IncompleteReadError, ValueError) as error:
        sample.error = type(error).__name__
        return sample
    finally:
        load.closed()
        if writer is not None:
            writer.close()


async def _read_all(reader: asyncio.StreamReader) -> Any:
    while data := await reader.read(65536):
        yield data


async def ws_stream(url: str, cookie: str, origin: str, load: Load) -> Sample:
    from websockets.asyncio.client import connect

    sample = Sample()
    started = time.perf_counter()
    load.opened()
    try:
        async with connect(url, additional_headers={"Cookie": cookie, "Origin": origin}, open_timeout=60) as socket:
            await socket.send(orjson.dumps({"type": "message", "message": QUESTION}).decode())
            async for frame in socket:
                event = orjson.loads(frame)
                if event["type"] == "delta":
                    if sample.ttft is None and event.get("text"):
                        sample.ttft = time.perf_counter() - started
                elif event["type"] == "done":
                    sample.total = time.perf_counter() - started
                    return sample
                else:
                    sample.error = str(event.get("code", event["type"]))
                    return sample
            sample.error = "closed early"
            return sample
    except Exception as error:  # any failure of one stream is a figure, not a crash
        sample.error = type(error).__name__
        return sample
    finally:
        load.closed()


async def ramp(count: int, start_one: Any) -> Load:
    """Start `count` streams evenly over MODEL_SECONDS; wait for all of them."""
    load = Load()
    loop = asyncio.get_running_loop()
    began = loop.time()

    async def one(n: int) -> None:
        await asyncio.sleep(max(0.0, began + n * MODEL_SECONDS / count - loop.time()))
        load.samples.append(await start_one(load))

    await asyncio.wait_for(asyncio.gather(*(one(n) for n in range(count))), timeout=MODEL_SECONDS * 40 + 60)
    return load


# --- statistics


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


@dataclass
class Figures:
    label: str
    count: int
    errors: int
    peak_open: int
    ttft: dict[int, float]
    total: dict[int, float]
    error_kinds: dict[str, int]

    @classmethod
    def of(cls, label: str, load: Load) -> Figures:
        ok = [s for s in load.samples if s.error is None and s.ttft is not None and s.total is not None]
        kinds: dict[str, int] = {}
        for s in load.samples:
            if s.error is not None:
                kinds[s.error] = kinds.get(s.error, 0) + 1
        return cls(
            label=label,
            count=len(load.samples),
            errors=len(load.samples) - len(ok),
            peak_open=load.peak_open,
            ttft={q: pct([s.ttft for s in ok if s.ttft is not None], q) * 1000 for q in (50, 95, 99)},
            total={q: pct([s.total for s in ok if s.total is not None], q) * 1000 for q in (50, 95, 99)},
            error_kinds=kinds,
        )


# --- processes


def rss_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in kB."""
    fields = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0])
    return fields.get("VmRSS", 0), fields.get("VmHWM", 0)


def children(pid: int) -> list[int]:
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    found = [int(p) for p in out.split()]
    return found + [grand for child in found for grand in children(child)]


SHIPPED_APPLICATION = "tokencache_project.asgi:application"


def web_command(port: int) -> list[str]:
    """deploy/Procfile's `web:` line, as `make run` starts it."""
    for line in (ROOT / "deploy" / "Procfile").read_text().splitlines():
        if line.startswith("web:"):
            return ["bash", "-c", "exec " + line.removeprefix("web:").strip()]
    raise SystemExit("deploy/Procfile has no web: line")


@dataclass
class App:
    env: dict[str, str]
    port: int
    token: str
    cookie: str
    process: subprocess.Popen[bytes] | None = None

    def start(self, settings_module: str | None = None, application: str | None = None) -> None:
        """The Procfile's web server; with another settings module or ASGI app (in bench/) for a baseline."""
        env = dict(self.env)
        command = web_command(self.port)
        if settings_module:
            env["DJANGO_SETTINGS_MODULE"] = settings_module
        if application:
            command[-1] = command[-1].replace(SHIPPED_APPLICATION, application)
        if settings_module or application:
            env["PYTHONPATH"] = f"{ROOT}:{ROOT / 'bench'}"
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                import urllib.request

                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as response:
                    if response.status == 200 and len(self.workers()) >= 1:
                        time.sleep(1.0)  # let every worker finish starting
                        return
            time.sleep(0.2)
        raise SystemExit("the web server did not start")

    def workers(self) -> list[int]:
        assert self.process is not None
        return [self.process.pid, *children(self.process.pid)]

    def stop(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process = None


def prepare(var_dir: Path, redis_url: str, model_url: str | None, port: int) -> App:
    """A seeded database and the web server's environment; `support` answered by `model_url` if given."""
    env = {
        **os.environ,
        **bench_environment(
            var_dir,
            redis_url,
            TOKENCACHE_PORT=str(port),
            PROMETHEUS_MULTIPROC_DIR=str(var_dir / "prometheus"),
        ),
    }
    (var_dir / "prometheus").mkdir()
    os.environ.update(env)
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.test import Client

    from agents.models import Agent
    from agents.tokens import create_api_token

    call_command("migrate", verbosity=0)
    call_command("seed_demo", verbosity=0)
    if model_url is not None:
        Agent.objects.filter(slug="support").update(
            backend_kind=Agent.BackendKind.OPENAI,
            backend_base_url=model_url,
            backend_model="bench-model",
            backend_accepts_token_ids=True,
        )
    user = User.objects.filter(is_superuser=True).first()
    assert user is not None
    _, token = create_api_token(user=user, name="bench")
    client = Client()
    client.force_login(user)
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
    return App(env=env, port=port, token=token, cookie=cookie)


# --- the runs


async def measure_model(model_url: str, count: int) -> Figures:
    from urllib.parse import urlsplit

    parts = urlsplit(model_url)
    body = orjson.dumps(
        {"model": "bench-model", "prompt": [1, 2, 3], "stream": True, "max_tokens": 64, "temperature": 0.0}
    )

    async def start(load: Load) -> Sample:
        return await sse_stream(parts.hostname or "", parts.port or 80, parts.path + "/v1/completions", body, {}, load)

    return Figures.of("model server alone", await ramp(count, start))


async def measure_app(app: App, interface: str, count: int) -> Figures:
    if interface == "openai":
        body = orjson.dumps({"model": "support", "messages": [{"role": "user", "content": QUESTION}], "stream": True})
        headers = {"Authorization": f"Bearer {app.token}"}

        async def start(load: Load) -> Sample:
            return await sse_stream("127.0.0.1", app.port, "/v1/chat/completions", body, headers, load)

    else:
        url = f"ws://127.0.0.1:{app.port}/ws/agents/support/"
        origin = f"http://127.0.0.1:{app.port}"

        async def start(load: Load) -> Sample:
            return await ws_stream(url, app.cookie, origin, load)

    return Figures.of(interface, await ramp(count, start))


@dataclass
class Row:
    figures: Figures
    model: Figures
    peak_rss_mb: list[float]
    per_stream_kb: float
    cpu_ms_per_stream: float


def cpu_seconds(pids: list[int]) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def run_level(app: App, model_url: str, interface: str, count: int, model: Figures) -> Row:
    workers = app.workers()
    before = sum(rss_kb(pid)[0] for pid in workers)
    cpu_before = cpu_seconds(workers)
    figures = asyncio.run(measure_app(app, interface, count))
    cpu_ms = (cpu_seconds(workers) - cpu_before) * 1000 / max(1, count)
    peaks = [rss_kb(pid)[1] / 1024 for pid in workers]
    grown = sum(rss_kb(pid)[1] for pid in workers) - before
    return Row(figures, model, peaks, max(0.0, grown) / max(1, figures.peak_open), cpu_ms)


def fmt(value: float) -> str:
    return "-" if value != value else f"{value:,.0f}"


def table(rows: list[tuple[str, Row]]) -> str:
    lines = [
        "| path | interface | streams (peak open) | errors | TTFT p50 / p95 / p99 ms | model TTFT p99 ms | "
        "TTFT overhead p99 ms | total p50 / p95 / p99 ms | model total p99 ms | total over model p99 ms | "
        "peak RSS per process MB | RSS per open stream kB | server CPU ms per stream |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for path, row in rows:
        f, m = row.figures, row.model
        errors = f"{f.errors}" + (f" ({', '.join(f'{k}: {v}' for k, v in f.error_kinds.items())})" if f.errors else "")
        lines.append(
            f"| {path} | {f.label} | {f.count} ({f.peak_open}) | {errors} | "
            f"{fmt(f.ttft[50])} / {fmt(f.ttft[95])} / {fmt(f.ttft[99])} | {fmt(m.ttft[99])} | "
            f"{fmt(f.ttft[99] - m.ttft[99])} | {fmt(f.total[50])} / {fmt(f.total[95])} / {fmt(f.total[99])} | "
            f"{fmt(m.total[99])} | {fmt(f.total[99] - m.total[99])} | "
            f"{' + '.join(f'{p:.0f}' for p in row.peak_rss_mb)} | {row.per_stream_kb:,.0f} | "
            f"{row.cpu_ms_per_stream:.1f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default=",".join(map(str, LEVELS)))
    parser.add_argument("--interfaces", default="openai,websocket")
    parser.add_argument("--baseline", action="store_true", help="also run the former thread-per-turn path")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/results.md alone")
    args = parser.parse_args()
    if len(sys.argv) > 1 and sys.argv[1] == "--model-server":
        model_server_main()
        return 0
    levels = [int(n) for n in args.levels.split(",")]
    interfaces = args.interfaces.split(",")
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    from tests.redis_process import RedisProcess, free_port

    redis_server = RedisProcess(maxmemory="256mb").start()
    model_process = subprocess.Popen(
        [PYTHON, __file__, "--model-server"], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert model_process.stdout is not None
    model_url = model_process.stdout.readline().decode().strip()
    app: App | None = None
    rows: list[tuple[str, Row]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="tokencache-bench-") as directory:
            app = prepare(Path(directory), redis_server.url(0), model_url, free_port())
            models = {n: asyncio.run(measure_model(model_url, n)) for n in levels}
            paths = [("turn loop", None)]
            if args.baseline:
                paths.append(("thread per turn (before)", "settings_stream_in_threads"))
            for path, settings_module in paths:
                app.start(settings_module)
                try:
                    # Warm up: tokenizer, token cache, connections.
                    asyncio.run(measure_app(app, "openai", 10))
                    for count in levels:
                        if settings_module and count not in BASELINE_LEVELS:
                            continue
                        for interface in interfaces:
                            row = run_level(app, model_url, interface, count, models[count])
                            rows.append((path, row))
                            print(table([(path, row)]).splitlines()[-1], flush=True)
                finally:
                    app.stop()
    finally:
        if app is not None:
            app.stop()
        if model_process.stdin is not None:
            model_process.stdin.close()
        model_process.wait(timeout=20)
        redis_server.stop()

    verdicts = []
    for path, row in rows:
        f, m = row.figures, row.model
        if path != "turn loop" or f.count != TARGET_STREAMS:
            continue
        checks = [
            (f.errors == 0, f"{f.label}: {f.errors} errors (target 0)"),
            (
                f.ttft[99] - m.ttft[99] <= TARGET_TTFT_OVERHEAD_MS,
                f"{f.label}: TTFT overhead p99 {f.ttft[99] - m.ttft[99]:.0f} ms "
                f"(target <= {TARGET_TTFT_OVERHEAD_MS:.0f})",
            ),
            (
                f.total[99] <= m.total[99] + TARGET_TOTAL_OVER_MODEL_MS,
                f"{f.label}: total p99 {f.total[99]:.0f} ms vs model p99 {m.total[99]:.0f} ms "
                f"(target <= model + {TARGET_TOTAL_OVER_MODEL_MS:.0f})",
            ),
        ]
        verdicts += [("met" if ok else "MISSED") + ": " + text for ok, text in checks]
    model_lines = "\n".join(
        f"| {n} | {fmt(m.ttft[50])} / {fmt(m.ttft[99])} | {fmt(m.total[50])} / {fmt(m.total[99])} | {m.errors} |"
        for n, m in models.items()
    )
    markdown = (
        f"## Concurrency: streaming turns ({PIECES} pieces over {MODEL_SECONDS:g} s from a loopback model server)\n\n"
        f"`python bench/concurrency.py --levels {args.levels}{' --baseline' if args.baseline else ''}`; "
        f"server: deploy/Procfile's web line ({' '.join(shlex.quote(w) for w in web_command(0)[2:])}); "
        f"clients start evenly over {MODEL_SECONDS:g} s.\n\n"
        "The model server alone, same client and ramp:\n\n"
        "| streams | TTFT p50 / p99 ms | total p50 / p99 ms | errors |\n| ---: | ---: | ---: | ---: |\n"
        + model_lines
        + "\n\nThrough the app:\n\n"
        + table(rows)
        + "\n\nTargets at "
        + f"{TARGET_STREAMS} streams:\n\n"
        + "\n".join(f"- {v}" for v in verdicts)
        + "\n"
    )
    print(markdown)
    if not args.no_write:
        from report import write_section

        write_section("concurrency", markdown)
    return 0 if all(v.startswith("met") for v in verdicts) else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--model-server":
        model_server_main()
        sys.exit(0)
    sys.exit(main())
