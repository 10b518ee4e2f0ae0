"""The production vLLM set-up end to end through `run_turn`: one vLLM-like server is both the
agent's tokenizer (`server:<base URL>`, its POST /tokenize) and its model (token IDs as the
`prompt` of /v1/completions). The documentation's chunks were built with tiktoken; their IDs
here come from the cache under the server tokenizer's fingerprint, tokenized by the server.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from django.contrib.auth.models import User

from agents import chat
from agents.chat import run_turn
from agents.errors import ModelUnavailable
from agents.models import Agent, Chunk, Conversation, Message
from agents.prompt import prompt_fingerprint
from cachecore.keys import LOCKS_PREFIX
from cachecore.store import LookupBatch
from cachecore.tokenizers import get_tokenizer, registry
from tests.conftest import Demo
from tests.redis_process import RedisProcess
from tests.support.clock import FakeClock
from tests.support.fake_model_server import FakeModelServer

pytestmark = pytest.mark.timeout(30)

QUESTION = "how does the with statement work"
OTHER_QUESTION = "what does the yield expression do"


@pytest.fixture
def served(demo: Demo, model_server: FakeModelServer) -> Agent:
    """The documentation agent, tokenized and answered by the loopback vLLM-like server."""
    agent = demo.agents["documentation"]
    agent.tokenizer_spec = "server:" + model_server.base_url
    agent.backend_kind = Agent.BackendKind.OPENAI
    agent.backend_base_url = model_server.base_url
    agent.backend_model = model_server.model
    agent.backend_accepts_token_ids = True
    agent.save()
    return agent


@dataclass
class Lookups:
    """What the chat service got from the cache core, one (texts, batch) per `get_many` call."""

    calls: list[tuple[list[str], LookupBatch]]

    def last(self) -> tuple[list[str], list[list[int]]]:
        texts, batch = self.calls[-1]
        return texts, [item.ids.tolist() for item in batch.items]


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> Lookups:
    recorded = Lookups(calls=[])
    real_get_many = chat.get_many

    def spy(tokenizer: Any, texts: Sequence[str], *args: Any, **kwargs: Any) -> LookupBatch:
        batch = real_get_many(tokenizer, texts, *args, **kwargs)
        recorded.calls.append((list(texts), batch))
        return batch

    monkeypatch.setattr(chat, "get_many", spy)
    return recorded


@dataclass
class Turn:
    answer: Message
    sent: list[int]  # the `prompt` /v1/completions received
    tokenized: Counter[str]  # the texts /tokenize received during the turn, with counts


def _turn(agent: Agent, user: User, server: FakeModelServer, message: str = QUESTION) -> Turn:
    before = len(server.requests)
    result = run_turn(user=user, agent=agent, message=message)
    during = server.requests[before:]
    completions = [r.body for r in during if r.path == "/v1/completions"]
    assert len(completions) == 1
    return Turn(
        answer=result.answer_message,
        sent=completions[0]["prompt"],
        tokenized=Counter(r.body["prompt"] for r in during if r.path == "/tokenize"),
    )


def _slices_in_order(ids: list[int], parts: list[list[int]]) -> list[int]:
    """Where each part starts in `ids`, each found after the previous one ends; -1 if missing."""
    starts, position = [], 0
    for part in parts:
        found = next((i for i in range(position, len(ids) - len(part) + 1) if ids[i : i + len(part)] == part), -1)
        starts.append(found)
        if found >= 0:
            position = found + len(part)
    return starts


def test_first_turn_tokenizes_each_retrieved_chunk_on_the_server_and_sends_exactly_the_cached_ids(
    served: Agent, alice: User, model_server: FakeModelServer, lookups: Lookups
) -> None:
    turn = _turn(served, alice, model_server)
    texts, cached_ids = lookups.last()
    answer = turn.answer

    outcomes = answer.chunk_outcomes
    assert len(outcomes) == served.top_k and {o["outcome"] for o in outcomes} == {"miss"}
    chunk_texts = dict(Chunk.objects.filter(pk__in=[o["chunk_id"] for o in outcomes]).values_list("pk", "text"))
    assert texts == [chunk_texts[o["chunk_id"]] for o in outcomes]
    # Each retrieved chunk went to the server's /tokenize, once.
    for text in texts:
        assert turn.tokenized[text] == 1

    # Nothing was dropped for the budget, so the prompt holds every chunk's cached IDs, unchanged,
    # in retrieval order, and nothing else of the context.
    assert [c["chunk_id"] for c in answer.citations] == [o["chunk_id"] for o in outcomes]
    assert -1 not in _slices_in_order(turn.sent, cached_ids)
    assert answer.context_tokens == sum(len(ids) for ids in cached_ids) == answer.tokens_tokenized
    # The IDs sent are the prompt the chat service built (its stored fingerprint hashes the IDs).
    assert prompt_fingerprint(np.asarray(turn.sent, dtype=np.uint32)) == answer.prompt_fingerprint
    assert answer.prompt_ids_echoed is True
    assert (answer.status, answer.backend) == ("ok", f"openai:{model_server.model}")
    assert f"received {len(turn.sent)} prompt tokens" in answer.content

    # And the cached IDs are the server tokenizer's, which round-trip to the chunk text.
    tokenizer = get_tokenizer(served.tokenizer_spec)
    for text, ids in zip(texts, cached_ids, strict=True):
        assert tokenizer.encode(text).tolist() == ids
        assert tokenizer.decode(ids) == text


def test_asking_again_serves_every_chunk_from_the_cache_without_the_server_tokenizing_it_again(
    served: Agent, alice: User, model_server: FakeModelServer, lookups: Lookups
) -> None:
    first = _turn(served, alice, model_server)
    first_texts, first_ids = lookups.last()
    second = _turn(served, alice, model_server)  # a new conversation: no history, the same prompt
    second_texts, second_ids = lookups.last()

    assert second.answer.conversation_id != first.answer.conversation_id
    assert second_texts == first_texts
    assert {o["outcome"] for o in second.answer.chunk_outcomes} == {"hit"}
    assert second.answer.tokens_tokenized == 0
    assert second.answer.tokens_from_cache == first.answer.tokens_tokenized
    assert not set(second.tokenized) & set(second_texts), "a cached chunk went to /tokenize again"
    # Only the question is new: the framing pieces (system prompt, titles, separators) are not re-sent.
    assert list(second.tokenized) == [f"User: {QUESTION}\n\nAssistant:"]
    assert second_ids == first_ids
    assert second.sent == first.sent
    assert second.answer.prompt_fingerprint == first.answer.prompt_fingerprint
    assert prompt_fingerprint(np.asarray(second.sent, dtype=np.uint32)) == second.answer.prompt_fingerprint
    assert second.answer.prompt_ids_echoed is True


def test_a_model_server_down_before_its_tokenizer_loads_fails_the_turn_as_model_unavailable(
    served: Agent, alice: User, model_server: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "clock", FakeClock())  # the load takes no time on it: never "slow"
    model_server.stop()

    with pytest.raises(ModelUnavailable) as raised:
        run_turn(user=alice, agent=served, message=QUESTION)

    error = raised.value
    assert (error.code, error.status) == ("model_unavailable", 503)
    question, answer = Conversation.objects.get(pk=error.conversation_id).messages.order_by("id")
    assert (question.role, question.content, question.status) == ("user", QUESTION, "ok")
    assert (answer.pk, answer.role, answer.status, answer.content) == (error.message_id, "assistant", "error", "")
    assert "did not answer POST /tokenize" in answer.error and model_server.base_url in answer.error

    # A failed load is not remembered: once the server is back, the next turn answers.
    model_server.start()
    assert run_turn(user=alice, agent=served, message=QUESTION).answer_message.status == "ok"


def _outage_after_the_tokenizer_loaded(
    served: Agent, alice: User, model_server: FakeModelServer, outage: str, question: str
) -> None:
    _turn(served, alice, model_server)  # loads the server tokenizer and caches QUESTION's chunks
    if outage == "refused":
        model_server.stop()
    else:
        model_server.knobs.error_status = 503
    run_turn(user=alice, agent=served, message=question)


OUTAGES = [
    pytest.param("refused", QUESTION, id="refused-chunks-cached"),
    pytest.param("refused", OTHER_QUESTION, id="refused-chunks-missing"),
    pytest.param("http-503", QUESTION, id="503-chunks-cached"),
    pytest.param("http-503", OTHER_QUESTION, id="503-chunks-missing"),
]


@pytest.mark.parametrize(("outage", "question"), OUTAGES)
def test_a_tokenizer_outage_after_it_loaded_is_model_unavailable_and_keeps_the_question(
    served: Agent, alice: User, model_server: FakeModelServer, outage: str, question: str
) -> None:
    with pytest.raises(ModelUnavailable) as raised:
        _outage_after_the_tokenizer_loaded(served, alice, model_server, outage, question)

    asked, answer = Conversation.objects.get(pk=raised.value.conversation_id).messages.order_by("id")
    assert (asked.role, asked.content, asked.status) == ("user", question, "ok")
    assert (answer.pk, answer.role, answer.status, answer.content) == (
        raised.value.message_id,
        "assistant",
        "error",
        "",
    )
    assert model_server.base_url in answer.error


def test_a_tokenizer_outage_mid_lookup_leaves_no_claim_for_the_next_turn_to_wait_on(
    served: Agent, alice: User, model_server: FakeModelServer, redis_server: RedisProcess
) -> None:
    with pytest.raises(ModelUnavailable):
        _outage_after_the_tokenizer_loaded(served, alice, model_server, "refused", OTHER_QUESTION)
    assert redis_server.client().keys(LOCKS_PREFIX + "*") == []
