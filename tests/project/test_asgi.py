"""The ASGI server process is ready to answer before its first request."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_loading_the_asgi_application_loads_the_default_tokenizer() -> None:
    script = "import tokencache_project.asgi; from cachecore.tokenizers.registry import _loaded; print(sorted(_loaded))"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tokencache_project.settings", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "['tiktoken:cl100k_base']"
