"""The `openai` backend against a real vLLM-compatible server on loopback (tests/support)."""

from __future__ import annotations

import hashlib
import threading
import time

import numpy as np
import pytest
from django.test import override_settings

from agents.backends import BackendError, BackendUnavailable, ContextChunk, Prompt, backend_for
from agents.backends.breaker import breaker_for
from agents.backends.openai import OpenAIBackend
from agents.models import Agent
from cachecore.breaker import State
from cachecore.tokenizers import get_tokenizer
from tests.support.fake_model_server import FIRST_GENERATED_ID, FakeModelServer

TOKENIZER = "tiktoken:cl100k_base"
QUESTION = "What should I do when Redis is down?"
CHUNK_TEXTS = [
    "When Redis is down the token cache opens its circuit breaker and chat keeps answering.",
    "Restart Redis with the configuration in deploy/redis.conf, then watch the breaker close.",
]


def build_prompt(question: str = QUESTION) -> Prompt:
    """A prompt laid out as the chat service lays it out: [system][context][user], as token IDs."""
    tokenizer = get_tokenizer(TOKENIZER)
    chunks = tuple(
        ContextChunk(
            chunk_id=10 + n,
            document_id=100 + n,
            title=f"Redis down, part {n + 1}",
            text=text,
            score=1.0 - n / 10,
            token_ids=tokenizer.encode(text),
        )
        for n, text in enumerate(CHUNK_TEXTS)
    )
    system = "You are the support agent. Answer from the context."
    context = "\n\n".join(chunk.text for chunk in chunks)
    parts = [tokenizer.encode(system + "\n\n"), *(c.token_ids for c in chunks), tokenizer.encode("\n\n" + question)]
    token_ids = np.concatenate(parts).astype(np.uint32)
    return Prompt(
        token_ids=token_ids,
        text=f"{system}\n\n{context}\n\n{question}",
        messages=[
            {"role": "system", "content": f"{system}\n\n{context}"},
            {"role": "assistant", "content": "Hello, how can I help?"},
            {"role": "user", "content": question},
        ],
        chunks=chunks,
        question=question,
        fingerprint=hashlib.sha256(token_ids.tobytes()).hexdigest(),
    )


def backend(server: FakeModelServer, **overrides: object) -> OpenAIBackend:
    options: dict[str, object] = {
        "base_url": server.base_url,
        "model": server.model,
        "accepts_token_ids": True,
        "tokenizer": get_tokenizer(TOKENIZER),
        "connect_timeout": 1.0,
        "read_timeout": 2.0,
    }
    options.update(overrides)
    return OpenAIBackend(**options)  # type: ignore[arg-type]


def test_it_sends_the_prompt_token_ids_exactly_as_built(model_server: FakeModelServer) -> None:
    prompt = build_prompt()

    backend(model_server).generate(prompt, max_tokens=64, temperature=0.1)

    request = model_server.requests[-1]
    assert request.path == "/v1/completions"
    assert request.body["prompt"] == prompt.token_ids.tolist()
    assert all(type(i) is int for i in request.body["prompt"])
    assert request.body["model"] == "fake-model"
    assert request.body["stream"] is True
    assert request.body["return_token_ids"] is True
    assert request.body["max_tokens"] == 64
    assert request.body["temperature"] == pytest.approx(0.1)


def test_streamed_deltas_arrive_in_order_and_join_to_the_answer(model_server: FakeModelServer) -> None:
    prompt = build_prompt()
    deltas: list[str] = []

    generation = backend(model_server).generate(prompt, max_tokens=64, temperature=0.0, on_delta=deltas.append)

    assert generation.text == f"Answer from fake model: received {len(prompt.token_ids)} prompt tokens."
    assert deltas == [
        "Answer ",
        "from ",
        "fake ",
        "model: ",
        "received ",
        f"{len(prompt.token_ids)} ",
        "prompt ",
        "tokens.",
    ]
    assert "".join(deltas) == generation.text


def test_deltas_reach_the_caller_while_the_server_is_still_streaming(model_server: FakeModelServer) -> None:
    model_server.knobs.chunk_delay_seconds = 0.1
    arrivals: list[float] = []
    started = time.monotonic()

    backend(model_server).generate(
        build_prompt(), max_tokens=64, temperature=0.0, on_delta=lambda _: arrivals.append(time.monotonic() - started)
    )

    assert arrivals[0] < arrivals[-1] - 0.5  # the first piece came well before the last


@pytest.mark.timeout(10)
def test_concurrent_turns_to_one_server_stream_in_parallel(model_server: FakeModelServer) -> None:
    # The breaker guards every call; it must not hold a lock while an answer streams.
    model_server.knobs.chunk_delay_seconds = 0.1  # 8 pieces: about 0.8 s per answer
    client = backend(model_server)
    texts: list[str] = []
    spans: list[tuple[float, float]] = []  # (first piece, last piece) of each answer

    def turn() -> None:
        arrivals: list[float] = []
        texts.append(
            client.generate(
                build_prompt(), max_tokens=64, temperature=0, on_delta=lambda _: arrivals.append(time.monotonic())
            ).text
        )
        spans.append((arrivals[0], arrivals[-1]))

    threads = [threading.Thread(target=turn) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(texts) == len(spans) == 3
    # Every answer had started before any had finished: serialized, each would start after the last ended.
    assert max(first for first, _ in spans) < min(last for _, last in spans)


def test_echoed_prompt_ids_equal_to_those_sent_mean_no_drift(model_server: FakeModelServer) -> None:
    prompt = build_prompt()

    generation = backend(model_server).generate(prompt, max_tokens=64, temperature=0.0)

    assert generation.prompt_ids_echoed is True
    assert generation.prompt_tokens == len(prompt.token_ids)
    assert generation.completion_tokens == 8
    assert generation.backend == "openai:fake-model"


def test_drift_is_detected_when_the_server_echoes_other_ids(model_server: FakeModelServer) -> None:
    model_server.knobs.drift = True

    generation = backend(model_server).generate(build_prompt(), max_tokens=64, temperature=0.0)

    assert generation.prompt_ids_echoed is False
    assert generation.text.startswith("Answer from fake model")


def test_a_server_that_does_not_echo_leaves_drift_unknown(model_server: FakeModelServer) -> None:
    model_server.knobs.echo_token_ids = False

    generation = backend(model_server).generate(build_prompt(), max_tokens=64, temperature=0.0)

    assert generation.prompt_ids_echoed is None


def test_without_usage_from_the_server_tokens_are_counted(model_server: FakeModelServer) -> None:
    model_server.knobs.send_usage = False
    prompt = build_prompt()

    generation = backend(model_server).generate(prompt, max_tokens=64, temperature=0.0)

    assert generation.prompt_tokens == len(prompt.token_ids)
    # the server streamed one generated ID per piece
    assert generation.completion_tokens == 8
    assert FIRST_GENERATED_ID not in prompt.token_ids


def test_max_tokens_bounds_the_answer(model_server: FakeModelServer) -> None:
    generation = backend(model_server).generate(build_prompt(), max_tokens=3, temperature=0.0)

    assert generation.text == "Answer from fake "
    assert generation.completion_tokens == 3


def test_it_cites_the_chunks_that_were_in_the_prompt(model_server: FakeModelServer) -> None:
    generation = backend(model_server).generate(build_prompt(), max_tokens=64, temperature=0.0)

    assert generation.cited_chunk_ids == (10, 11)


def test_a_text_only_server_gets_the_chat_messages(model_server: FakeModelServer) -> None:
    prompt = build_prompt()
    deltas: list[str] = []

    generation = backend(model_server, accepts_token_ids=False).generate(
        prompt, max_tokens=64, temperature=0.3, on_delta=deltas.append
    )

    request = model_server.requests[-1]
    assert request.path == "/v1/chat/completions"
    assert request.body["messages"] == prompt.messages
    assert "prompt" not in request.body
    assert request.body["stream"] is True
    assert generation.text == f"Answer from fake model: received 3 messages, the last asking: {QUESTION}"
    assert "".join(deltas) == generation.text
    assert generation.prompt_ids_echoed is None
    assert generation.cited_chunk_ids == (10, 11)


def test_the_api_key_comes_from_the_named_environment_variable(
    model_server: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_server.knobs.api_key = "sk-test-123"
    monkeypatch.setenv("TOKENCACHE_MODEL_KEY_FAKE", "sk-test-123")

    generation = backend(model_server, api_key_env="TOKENCACHE_MODEL_KEY_FAKE").generate(
        build_prompt(), max_tokens=64, temperature=0.0
    )

    assert model_server.requests[-1].headers["Authorization"] == "Bearer sk-test-123"
    assert generation.text.startswith("Answer from fake model")


def test_a_missing_api_key_variable_is_a_clear_error_and_sends_nothing(
    model_server: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TOKENCACHE_MODEL_KEY_FAKE", raising=False)

    with pytest.raises(BackendError, match="environment variable TOKENCACHE_MODEL_KEY_FAKE, which is not set"):
        backend(model_server, api_key_env="TOKENCACHE_MODEL_KEY_FAKE").generate(
            build_prompt(), max_tokens=64, temperature=0.0
        )

    assert model_server.requests == []


@pytest.mark.parametrize("name", ["SECRET_KEY", "DATABASE_URL", "TOKENCACHE_MODEL_KEY_", "tokencache_model_key_x"])
def test_an_api_key_variable_without_the_model_key_prefix_is_refused_before_any_request(
    model_server: FakeModelServer, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    # The agent row may have been written around the admin's validation: the backend refuses too.
    monkeypatch.setenv(name, "the-process-secret")

    with pytest.raises(BackendError, match="must be named TOKENCACHE_MODEL_KEY_<NAME>") as caught:
        backend(model_server, api_key_env=name).generate(build_prompt(), max_tokens=64, temperature=0.0)

    assert "the-process-secret" not in caught.value.message
    assert model_server.requests == []


def test_a_server_url_whose_query_would_swallow_the_path_is_refused_before_any_request(
    model_server: FakeModelServer,
) -> None:
    # Written around the admin's validation: /v1/completions would become a query of /elsewhere.
    with pytest.raises(BackendError, match="without a query or fragment"):
        backend(model_server, base_url=model_server.base_url + "/elsewhere?x=").generate(
            build_prompt(), max_tokens=64, temperature=0.0
        )

    assert model_server.requests == []


def test_a_wrong_api_key_is_a_backend_error_with_the_servers_message(
    model_server: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_server.knobs.api_key = "sk-right"
    monkeypatch.setenv("TOKENCACHE_MODEL_KEY_FAKE", "sk-wrong")

    with pytest.raises(BackendError, match=r"rejected the request \(HTTP 401\): Unauthorized") as caught:
        backend(model_server, api_key_env="TOKENCACHE_MODEL_KEY_FAKE").generate(
            build_prompt(), max_tokens=64, temperature=0.0
        )

    assert not isinstance(caught.value, BackendUnavailable)


def test_a_rejected_request_carries_the_servers_message_and_never_trips_the_breaker(
    model_server: FakeModelServer,
) -> None:
    wrong_model = backend(model_server, model="no-such-model")

    for _ in range(5):
        with pytest.raises(BackendError) as caught:
            wrong_model.generate(build_prompt(), max_tokens=64, temperature=0.0)
        assert not isinstance(caught.value, BackendUnavailable)
        assert "rejected the request (HTTP 404): The model `no-such-model` does not exist." in caught.value.message

    assert len(model_server.requests) == 5
    assert breaker_for(model_server.base_url).state is State.CLOSED


def test_a_server_that_is_down_is_unavailable_at_once(model_server: FakeModelServer) -> None:
    model_server.stop()
    started = time.monotonic()

    with pytest.raises(BackendUnavailable, match="is unreachable") as caught:
        backend(model_server).generate(build_prompt(), max_tokens=64, temperature=0.0)

    assert time.monotonic() - started < 1.0
    assert model_server.base_url in caught.value.message
    # a readable message, not a chained low-level traceback
    assert caught.value.__suppress_context__


def test_a_server_error_is_unavailable_with_the_servers_message(model_server: FakeModelServer) -> None:
    model_server.knobs.error_status = 500
    model_server.knobs.error_message = "CUDA out of memory"

    with pytest.raises(BackendUnavailable, match=r"failed \(HTTP 500\): CUDA out of memory"):
        backend(model_server).generate(build_prompt(), max_tokens=64, temperature=0.0)


@pytest.mark.timeout(10)
def test_a_hanging_server_times_out_as_unavailable_within_the_read_timeout(model_server: FakeModelServer) -> None:
    model_server.knobs.hang_seconds = 30
    started = time.monotonic()

    with pytest.raises(BackendUnavailable, match=r"did not answer within 0.3 s"):
        backend(model_server, read_timeout=0.3).generate(build_prompt(), max_tokens=64, temperature=0.0)

    assert time.monotonic() - started < 2.0


@pytest.mark.timeout(10)
def test_a_stream_that_stalls_midway_times_out_as_unavailable(model_server: FakeModelServer) -> None:
    model_server.knobs.hang_seconds = 30
    model_server.knobs.stall_after_chunks = 2
    deltas: list[str] = []
    started = time.monotonic()

    with pytest.raises(BackendUnavailable, match=r"did not answer within 0.3 s"):
        backend(model_server, read_timeout=0.3).generate(
            build_prompt(), max_tokens=64, temperature=0.0, on_delta=deltas.append
        )

    assert deltas == ["Answer ", "from "]
    assert time.monotonic() - started < 2.0


@pytest.mark.timeout(10)
def test_a_server_that_keeps_trickling_is_cut_off_at_the_total_deadline(model_server: FakeModelServer) -> None:
    # Every piece arrives well within the read timeout; only the whole answer is too slow.
    model_server.knobs.chunk_delay_seconds = 0.2  # 8 pieces: about 1.6 s in all
    deltas: list[str] = []
    started = time.monotonic()

    with pytest.raises(BackendUnavailable, match=r"did not finish its answer within 0.5 s"):
        backend(model_server, read_timeout=2.0, total_timeout=0.5).generate(
            build_prompt(), max_tokens=64, temperature=0.0, on_delta=deltas.append
        )

    assert 0 < len(deltas) < 8  # cut off mid-answer: the whole answer takes 1.6 s
    assert time.monotonic() - started < 5.0  # and promptly, not after some other timeout


def test_a_connection_closed_mid_stream_is_unavailable(model_server: FakeModelServer) -> None:
    model_server.knobs.close_after_chunks = 3

    with pytest.raises(BackendUnavailable, match="closed the connection before the answer was complete"):
        backend(model_server).generate(build_prompt(), max_tokens=64, temperature=0.0)


def test_a_malformed_stream_is_a_readable_backend_error(model_server: FakeModelServer) -> None:
    model_server.knobs.malformed_stream = True

    with pytest.raises(BackendError, match="not OpenAI-compatible JSON"):
        backend(model_server).generate(build_prompt(), max_tokens=64, temperature=0.0)


def test_the_breaker_opens_after_three_failures_then_fails_fast_without_the_network(
    model_server: FakeModelServer,
) -> None:
    model_server.knobs.error_status = 503
    failing = backend(model_server)
    for _ in range(3):
        with pytest.raises(BackendUnavailable, match="HTTP 503"):
            failing.generate(build_prompt(), max_tokens=64, temperature=0.0)
    assert breaker_for(model_server.base_url).state is State.OPEN
    # Were it called now, the server would hang: the call would wait out the 2 s read timeout.
    model_server.knobs.hang_seconds = 30

    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match="failed repeatedly; not calling it again for 30 s"):
        failing.generate(build_prompt(), max_tokens=64, temperature=0.0)

    assert time.monotonic() - started < 1.0  # well under the read timeout it avoided
    assert len(model_server.requests) == 3  # and no request reached the server


@pytest.mark.timeout(10)
def test_the_breaker_opens_for_a_dead_server_and_closes_once_it_answers_again(model_server: FakeModelServer) -> None:
    client = backend(model_server)
    # Long enough that restarting the server and the refused call below surely fit inside it.
    with override_settings(TOKENCACHE_MODEL_BREAKER_RESET_SECONDS=1.0):
        breaker = breaker_for(model_server.base_url)
    model_server.stop()
    for _ in range(3):
        with pytest.raises(BackendUnavailable, match="unreachable"):
            client.generate(build_prompt(), max_tokens=64, temperature=0.0)
    assert breaker.state is State.OPEN

    model_server.start()
    with pytest.raises(BackendUnavailable, match="failed repeatedly"):
        client.generate(build_prompt(), max_tokens=64, temperature=0.0)
    time.sleep(1.05)
    generation = client.generate(build_prompt(), max_tokens=64, temperature=0.0)

    assert generation.text.startswith("Answer from fake model")
    assert breaker.state is State.CLOSED
    assert len(model_server.requests) == 1  # only the trial reached the restarted server


@pytest.mark.timeout(10)
def test_a_half_open_breaker_lets_one_trial_through_and_fails_the_others_fast(model_server: FakeModelServer) -> None:
    client = backend(model_server)
    with override_settings(TOKENCACHE_MODEL_BREAKER_RESET_SECONDS=0.3):
        breaker = breaker_for(model_server.base_url)
    model_server.knobs.error_status = 503
    for _ in range(3):
        with pytest.raises(BackendUnavailable, match="HTTP 503"):
            client.generate(build_prompt(), max_tokens=64, temperature=0.0)
    model_server.knobs.error_status = None
    model_server.knobs.chunk_delay_seconds = 0.3  # the trial streams for about 2.4 s
    time.sleep(0.35)  # the reset timeout: only time makes the breaker half-open
    trial_streaming = threading.Event()
    trial = threading.Thread(
        target=lambda: client.generate(
            build_prompt(), max_tokens=64, temperature=0.0, on_delta=lambda _: trial_streaming.set()
        )
    )
    trial.start()
    assert trial_streaming.wait(5)

    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match="failed repeatedly"):
        client.generate(build_prompt(), max_tokens=64, temperature=0.0)
    # Not queued behind the trial (about 2.4 s of streaming) nor sent (the 2 s read timeout):
    # refused at once, and, counted below, no request of its own reached the server.
    assert time.monotonic() - started < 1.0
    assert trial.is_alive()  # it was refused while the trial still streamed
    trial.join()

    assert breaker.state is State.CLOSED
    assert len(model_server.requests) == 4  # three failures and the one trial


def test_backend_for_an_openai_agent_reads_its_configuration(model_server: FakeModelServer) -> None:
    agent = Agent(
        slug="vllm",
        backend_kind="openai",
        backend_base_url=model_server.base_url + "/",
        backend_model="fake-model",
        backend_accepts_token_ids=True,
        tokenizer_spec=TOKENIZER,
    )

    chosen = backend_for(agent)
    generation = chosen.generate(build_prompt(), max_tokens=64, temperature=0.0)

    assert isinstance(chosen, OpenAIBackend)
    assert model_server.requests[-1].path == "/v1/completions"
    assert generation.prompt_ids_echoed is True


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"backend_kind": "openai", "backend_model": "m"}, "has no base URL set"),
        ({"backend_kind": "openai", "backend_base_url": "http://127.0.0.1:9"}, "has no model name set"),
        ({"backend_kind": "ollama"}, "unknown backend kind 'ollama'"),
    ],
)
def test_backend_for_a_misconfigured_agent_says_what_is_missing(fields: dict[str, str], message: str) -> None:
    agent = Agent(slug="broken", tokenizer_spec=TOKENIZER, **fields)

    with pytest.raises(BackendError, match=message):
        backend_for(agent)


def _vllm_agent(model_server: FakeModelServer, slug: str, *, accepts_token_ids: bool = True) -> Agent:
    return Agent(
        slug=slug,
        backend_kind="openai",
        backend_base_url=model_server.base_url,
        backend_model="fake-model",
        backend_accepts_token_ids=accepts_token_ids,
        tokenizer_spec=TOKENIZER,
    )


def test_each_agent_sends_a_cache_salt_of_its_own_so_agents_never_share_kv_blocks(
    model_server: FakeModelServer,
) -> None:
    for slug in ("support", "business", "support"):
        backend_for(_vllm_agent(model_server, slug)).generate(build_prompt(), max_tokens=8, temperature=0.0)

    salts = [request.body["cache_salt"] for request in model_server.requests_to("/v1/completions")]
    assert salts[0] == salts[2] != salts[1]
    assert all(len(salt) == 32 and "support" not in salt for salt in salts)


def test_no_cache_salt_goes_to_text_servers_or_when_it_is_turned_off(model_server: FakeModelServer) -> None:
    backend_for(_vllm_agent(model_server, "chatty", accepts_token_ids=False)).generate(
        build_prompt(), max_tokens=8, temperature=0.0
    )
    with override_settings(TOKENCACHE_MODEL_CACHE_SALT=False):
        backend_for(_vllm_agent(model_server, "support")).generate(build_prompt(), max_tokens=8, temperature=0.0)

    assert [("cache_salt" in request.body) for request in model_server.requests] == [False, False]
