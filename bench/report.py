"""bench/results.md: one section per benchmark, each replaced when its benchmark runs again.

`write_section("concurrency", markdown)` from a benchmark, or from the shell for one that only
prints (`python bench/cache.py | python bench/report.py cache`: its output as a code block).
The file starts with the machine, the versions and the date of the last write.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results.md"
PACKAGES = ("Django", "uvicorn", "uvloop", "channels", "aiohttp", "redis", "tiktoken", "numpy", "orjson")


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = []
    for name in PACKAGES:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    try:
        redis = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, timeout=5).stdout.split()
        versions.append("redis-server " + next((w.split("=")[1] for w in redis if w.startswith("v=")), "?"))
    except (OSError, subprocess.SubprocessError):
        pass
    return "\n".join(
        [
            f"- machine: {cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
            f"- Python {platform.python_version()}; {', '.join(versions)}",
            f"- last written: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        ]
    )


def write_section(name: str, markdown: str) -> None:
    """Replace (or append) the section `name` of bench/results.md and refresh its header."""
    text = RESULTS.read_text() if RESULTS.exists() else ""
    sections = dict(re.findall(r"<!-- bench:(\w+) -->\n(.*?)<!-- /bench:\1 -->\n", text, flags=re.S))
    sections[name] = markdown.rstrip() + "\n"
    body = "".join(f"<!-- bench:{key} -->\n{value}<!-- /bench:{key} -->\n\n" for key, value in sections.items())
    RESULTS.write_text(
        "# Benchmark results\n\nWritten by `make bench` (each benchmark replaces its own section). "
        "Shared 2-core machine: compare ratios within one run.\n\n" + machine() + "\n\n" + body
    )


if __name__ == "__main__":
    # `python bench/report.py <section> [title]`: stdin, echoed, stored as a code block.
    section = sys.argv[1]
    title = sys.argv[2] if len(sys.argv) > 2 else section
    captured = sys.stdin.read()
    sys.stdout.write(captured)
    write_section(section, f"## {title}\n\n```\n{captured.rstrip()}\n```\n")
