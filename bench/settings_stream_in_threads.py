"""The former streaming path, for bench/concurrency.py's before/after: a pool thread per turn."""

from tokencache_project.settings import *  # noqa: F403

TOKENCACHE_STREAM_IN_THREADS = True
