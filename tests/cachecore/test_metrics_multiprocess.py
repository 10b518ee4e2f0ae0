"""/metrics is right with several processes: their counters add up, as web and worker processes' must."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.redis_process import RedisProcess

ROOT = Path(__file__).resolve().parents[2]

LOOKUPS = textwrap.dedent(
    """
    import sys
    from cachecore.breaker import Breaker
    from cachecore.store import TokenStore
    from cachecore.tokenizers import get_tokenizer

    store = TokenStore.from_url(sys.argv[1], breaker=Breaker(name="mp"))
    tokenizer = get_tokenizer("tiktoken:cl100k_base")
    for _ in range(3):
        store.get_many(tokenizer, ["shared by every process", sys.argv[2]], ttl=60, agent="support")
    """
)

EXPORT = textwrap.dedent(
    """
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    print(generate_latest(registry).decode())
    """
)


def _python(script: str, *args: str, multiproc_dir: Path) -> str:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(multiproc_dir), "PYTHONPATH": str(ROOT)}
    env.setdefault("DJANGO_SETTINGS_MODULE", "tokencache_project.settings")
    done = subprocess.run(
        [sys.executable, "-c", script, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _sample(exposition: str, line_start: str) -> float:
    return float(next(line for line in exposition.splitlines() if line.startswith(line_start)).split()[-1])


def test_counters_of_several_processes_add_up_at_metrics(redis_server: RedisProcess, tmp_path: Path) -> None:
    for name in ("web", "worker"):
        _python(LOOKUPS, redis_server.url(5), f"text only {name} looks up", multiproc_dir=tmp_path)

    exposition = _python(EXPORT, multiproc_dir=tmp_path)

    # Each process: 3 calls of 2 texts. The shared text misses once in all (the other
    # process finds it), each process's own text misses once: 3 misses, 9 hits.
    assert _sample(exposition, 'tokencache_lookups_total{agent="support",outcome="miss"}') == 3
    assert _sample(exposition, 'tokencache_lookups_total{agent="support",outcome="hit"}') == 9
    assert _sample(exposition, 'tokencache_lookup_seconds_count{result="hit"}') == 4
