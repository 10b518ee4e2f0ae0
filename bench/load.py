"""A fixed-time chat load over the three interfaces, against the server as `make run` starts it.

Run with `make bench-load` (or `python bench/load.py [--seconds 30] [--clients 8]`). The same
set-up as bench/concurrency.py and bench/throughput.py (a private Redis, a fresh SQLite file
with the demo, deploy/Procfile's `web:` line with DEBUG=0, all on 127.0.0.1, stopped at the
end), the `support` agent on its extractive backend as `make run` ships it. C closed-loop
clients (tests/support/chat_load.py) rotate through the JSON API, the streamed OpenAI-compatible
API and the websocket, with about 3 questions in 10 never asked before and the rest among four
repeated ones, until the time is up; every turn has a 30 s timeout, so the run always ends.

Reports turns/s, p50/p95/p99 of a whole turn (to the last byte), per interface and overall;
errors (any turn that did not end in an answer); the token cache's hit rate over the run (from
/metrics, every web process); and the questions the database holds without an answer. Writes
its table into bench/results.md. Exits 1 when a turn failed or a question was left unanswered.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from concurrency import App, prepare  # noqa: E402

from tests.support.chat_load import INTERFACES, LoadResult, percentile, run_load  # noqa: E402


def cache_counts(url: str) -> dict[str, float]:
    # Imported here: tests.support.processes reads tests/conftest.py, which needs Django set up (prepare()).
    from tests.support.processes import lookups, metrics

    samples = metrics(url)
    return {outcome: lookups(samples, outcome) for outcome in ("hit", "miss", "bypass", "corrupt")}


def unanswered(database: Path) -> int:
    with sqlite3.connect(database, timeout=30) as connection:
        rows = connection.execute(
            "SELECT SUM(role = 'user'), SUM(role = 'assistant') FROM agents_message GROUP BY conversation_id"
        ).fetchall()
    return sum(max(0, questions - answers) for questions, answers in rows)


def row(label: str, result: LoadResult, interface: str | None, seconds: float) -> str:
    turns = [t for t in result.turns if interface is None or t.interface == interface]
    ok = [t.seconds for t in turns if t.outcome == "ok"]
    errors = len(turns) - len(ok)
    p = {q: percentile(ok, q) * 1000 for q in (50, 95, 99)}
    rate = len(ok) / seconds
    return f"| {label} | {len(turns):,} | {rate:.1f} | {p[50]:.0f} | {p[95]:.0f} | {p[99]:.0f} | {errors} |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="how long the load runs (default 30)")
    parser.add_argument("--clients", type=int, default=8, help="closed-loop clients (default 8)")
    parser.add_argument("--new-share", type=float, default=0.3, help="share of never-asked questions (default 0.3)")
    parser.add_argument("--no-write", action="store_true", help="do not write bench/results.md")
    args = parser.parse_args()
    if not 0 < args.seconds <= 600 or not 0 < args.clients <= 256:
        parser.error("--seconds must be in (0, 600] and --clients in (0, 256]")
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    from tests.redis_process import RedisProcess, free_port

    redis_server = RedisProcess(maxmemory="256mb").start()
    app: App | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="tokencache-load-") as directory:
            app = prepare(Path(directory), redis_server.url(0), None, free_port())
            app.start()
            url = f"http://127.0.0.1:{app.port}"
            before = cache_counts(url)
            started = time.perf_counter()
            result = asyncio.run(
                run_load(
                    url,
                    token=app.token,
                    cookie=app.cookie,
                    clients=args.clients,
                    seconds=args.seconds,
                    new_share=args.new_share,
                )
            )
            seconds = time.perf_counter() - started
            after = cache_counts(url)
            time.sleep(1.0)  # the last answers are stored before the response ends; a margin anyway
            left = unanswered(Path(directory) / "bench.sqlite3")
    finally:
        if app is not None:
            app.stop()
        redis_server.stop()

    delta = {k: after[k] - before[k] for k in after}
    looked_up = delta["hit"] + delta["miss"] + delta["bypass"] + delta["corrupt"]
    hit_rate = delta["hit"] / looked_up if looked_up else float("nan")
    failed = {k: v for k, v in result.outcomes().items() if k != "ok"}
    lines = [
        "| interface | turns | turns/s | p50 ms | p95 ms | p99 ms | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        *(row(name, result, name, seconds) for name in INTERFACES),
        row("all", result, None, seconds),
    ]
    markdown = (
        "## Load: new and repeated questions over the three interfaces\n\n"
        f"`python bench/load.py --seconds {args.seconds:g} --clients {args.clients}`: deploy/Procfile's web line, "
        f"DEBUG=0, extractive `support` agent, {args.clients} closed-loop clients rotating JSON API / "
        f"OpenAI-compatible stream / websocket, {args.new_share:.0%} new questions, {seconds:.1f} s.\n\n"
        + "\n".join(lines)
        + f"\n\n- token cache: {delta['hit']:,.0f} hits, {delta['miss']:,.0f} misses, {delta['bypass']:,.0f} bypassed "
        f"-> hit rate {hit_rate:.1%}\n"
        f"- errors: {sum(failed.values())} {failed or ''}\n"
        f"- questions left without an answer row: {left}\n"
    )
    print(markdown)
    if not args.no_write:
        from report import write_section

        write_section("load", markdown)
    return 0 if not failed and left == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
