"""One root error for the cache core, so callers can catch everything it raises."""


class CacheCoreError(Exception):
    """Root of every error cachecore raises on purpose."""


class TokenizerUnavailable(CacheCoreError):
    """A tokenizer spec is unknown or cannot be loaded (a configuration error)."""


class CorruptValue(CacheCoreError):
    """A cached value failed its integrity checks; it must be deleted, never served."""
