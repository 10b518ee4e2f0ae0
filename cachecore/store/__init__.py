"""The token store. `get_many(tokenizer, texts, ttl=...)` is the one call a chat turn makes.

- `results.py`: `Outcome` (hit, miss, bypass, corrupt), `Lookup`, `LookupBatch`, `Usage`
- `token_store.py`: `TokenStore`, token IDs cached in one Redis behind one breaker
- `default.py`: this process's store (`default_store()`) and the module-level functions
  on it: `get_many`, `invalidate_texts`, `invalidate_keys`, `invalidate_tokenizer`
"""

from cachecore.store.default import default_store, get_many, invalidate_keys, invalidate_texts, invalidate_tokenizer
from cachecore.store.results import Lookup, LookupBatch, Outcome, Usage
from cachecore.store.token_store import TokenStore

__all__ = [
    "Lookup",
    "LookupBatch",
    "Outcome",
    "TokenStore",
    "Usage",
    "default_store",
    "get_many",
    "invalidate_keys",
    "invalidate_texts",
    "invalidate_tokenizer",
]
