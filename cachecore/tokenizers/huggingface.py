"""`hf:<path to tokenizer.json>`: a Hugging Face `tokenizers` file (open models served by vLLM)."""

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cachecore.exceptions import TokenizerUnavailable
from cachecore.tokenizers.base import fingerprint


class HuggingFaceTokenizer:
    """A `tokenizer.json` from the Hugging Face `tokenizers` package."""

    def __init__(self, path: str) -> None:
        from tokenizers import Tokenizer as HFTokenizer

        file = Path(path).expanduser()
        try:
            self._tokenizer = HFTokenizer.from_file(str(file))
        except Exception as exc:
            raise TokenizerUnavailable(f"Hugging Face tokenizer file {str(file)!r} could not be loaded: {exc}") from exc
        # Split special-token strings like ordinary text instead of matching them.
        self._tokenizer.encode_special_tokens = True
        self.spec = f"hf:{path}"
        self.n_vocab: int | None = self._tokenizer.get_vocab_size(with_added_tokens=True)
        # The serialised tokenizer (vocabulary, merges, normaliser, pre-tokeniser) is
        # the identity: the same file at two paths shares entries.
        self.fingerprint = fingerprint(b"hf:data", self._tokenizer.to_str().encode())

    def encode(self, text: str) -> np.ndarray:
        encoding = self._tokenizer.encode(text, add_special_tokens=False)
        return np.asarray(encoding.ids, dtype=np.uint32)

    def decode(self, ids: "np.ndarray | Sequence[int]") -> str:
        return self._tokenizer.decode(np.asarray(ids, dtype=np.uint32).tolist(), skip_special_tokens=False)
