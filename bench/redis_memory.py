"""Redis bytes per cached token, keys and Redis's own overhead included (docs/deploy.md's sizing rule).

Run with `.venv/bin/python bench/redis_memory.py`. A private redis-server (no maxmemory
pressure: 1 GB) holds the Python documentation shipped with Python, ten times over (each
copy's chunks numbered, so every entry is distinct: ~1M tokens), cut into chunks of 100,
300 and 1,000 cl100k tokens and cached through the token store. used_memory is read before
and after, with the store's connections closed (client buffers count in used_memory), so
the figure is what Redis spends per entry: key, value, dict and expiry entries, allocator
rounding.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tokencache_project.settings")


COPIES = 10


def main() -> None:
    import django

    django.setup()
    from pydoc_data.topics import topics

    from cachecore.breaker import Breaker
    from cachecore.store import TokenStore
    from cachecore.tokenizers import get_tokenizer
    from tests.redis_process import RedisProcess

    tokenizer = get_tokenizer("tiktoken:cl100k_base")
    documents = [tokenizer.encode(topics[name]) for name in sorted(topics)]
    print("| chunk tokens | entries | tokens | value bytes/token | Redis bytes/token (with keys) | bytes/entry |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for size in (100, 300, 1000):
        chunks = [
            f"{copy}: " + tokenizer.decode(ids[start : start + size])
            for copy in range(COPIES)
            for ids in documents
            for start in range(0, len(ids), size)
        ]
        server = RedisProcess(maxmemory="1gb").start()
        try:
            client = server.client()
            store = TokenStore.from_url(server.url(0), breaker=Breaker(name="bench"))
            time.sleep(0.2)
            before = int(client.info("memory")["used_memory"])
            tokens = 0
            for start in range(0, len(chunks), 64):
                batch = store.get_many(tokenizer, chunks[start : start + 64], ttl=86400)
                tokens += sum(ids.size for ids in batch.ids)
            store.client.connection_pool.disconnect()
            time.sleep(0.2)
            after = int(client.info("memory")["used_memory"])
            usage = store.usage(max_keys=10**9)
            assert usage is not None
            spent = after - before
            print(
                f"| {size:,} | {usage.entries:,} | {usage.tokens:,} | {usage.bytes / usage.tokens:.2f} "
                f"| {spent / usage.tokens:.2f} | {spent / usage.entries:,.0f} |"
            )
        finally:
            server.cleanup()


if __name__ == "__main__":
    main()
