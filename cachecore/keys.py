"""Redis key layout. Content-addressed: the key changes whenever the text or the tokenizer does."""

import hashlib

# Bump the version segment when the key layout or value format changes incompatibly:
# old entries then simply stop being read and age out under their TTL.
TOKENS_PREFIX = "tc:v1:tok:"
LOCKS_PREFIX = "tc:v1:lock:"


def text_digest(text: str) -> str:
    """The SHA-256 hex digest of `text` (UTF-8) that names its cache entry.

    Callers that store chunks may persist this next to the text (computed from the
    same string when it is saved) and pass it to `get_many(digests=...)` so that the
    hit path does not re-hash kilobytes of text on every request.
    """
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def token_key(fingerprint: str, digest: str) -> bytes:
    """Key of the cached token IDs of one text under one tokenizer."""
    return f"{TOKENS_PREFIX}{fingerprint}:{digest}".encode()


def lock_for(key: bytes) -> bytes:
    """Key of the short single-flight claim held while one process tokenizes `key`'s text."""
    return LOCKS_PREFIX.encode() + key[len(TOKENS_PREFIX) :]


def tokenizer_pattern(fingerprint: str) -> str:
    """SCAN pattern matching every cached entry of one tokenizer."""
    return f"{TOKENS_PREFIX}{fingerprint}:*"


ALL_TOKENS_PATTERN = f"{TOKENS_PREFIX}*"
