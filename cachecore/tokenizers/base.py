"""What the cache needs from a tokenizer, and the fingerprint that goes into every key."""

import hashlib
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

FINGERPRINT_CHARS = 16


@runtime_checkable
class Tokenizer(Protocol):
    """What the cache needs from a tokenizer. Implementations are thread-safe."""

    spec: str
    fingerprint: str
    n_vocab: int | None  # None when unknown (a remote server); sizes the stored IDs

    def encode(self, text: str) -> np.ndarray: ...

    def decode(self, ids: "np.ndarray | Sequence[int]") -> str: ...


def encode_many(tokenizer: Tokenizer, texts: Sequence[str]) -> list[np.ndarray]:
    """The IDs of each text, in order: concurrently where the tokenizer can (a server), else one by one.

    Local tokenizers are CPU-bound in this process, so they gain nothing from threads; a
    server tokenizer waits on the network, and offers `encode_many` to overlap the waits.
    """
    concurrent = getattr(tokenizer, "encode_many", None)
    if concurrent is not None:
        return list(concurrent(texts))
    return [tokenizer.encode(text) for text in texts]


def fingerprint(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        # Length-prefix each part so that ("ab", "c") and ("a", "bc") differ.
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return digest.hexdigest()[:FINGERPRINT_CHARS]
