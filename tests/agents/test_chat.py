"""The chat turn (`run_turn`): permission first, the user's message stored first, a full record after."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import override_settings

from agents.backends import BackendUnavailable
from agents.chat import run_turn
from agents.errors import (
    AgentNotFound,
    ConversationForbidden,
    ConversationNotFound,
    InvalidMessage,
    MessageTooLong,
    ModelRejected,
    ModelUnavailable,
)
from agents.knowledge import upsert_document
from agents.models import Agent, Conversation, KnowledgeDocument, Message
from cachecore.breaker import Breaker, State
from cachecore.keys import text_digest, token_key
from cachecore.store import TokenStore
from cachecore.store import default as default_store
from cachecore.tokenizers import get_tokenizer
from tests.conftest import Demo
from tests.redis_process import RedisProcess
from tests.support.fake_model_server import FakeModelServer

WITH_QUESTION = "how does the with statement work"
REDIS_QUESTION = "what should I do when Redis is down"


def _cited_sources(citations: list[dict]) -> list[str]:
    ids = [c["document_id"] for c in citations]
    sources = dict(KnowledgeDocument.objects.filter(pk__in=ids).values_list("pk", "source"))
    return [sources[i] for i in ids]


@pytest.fixture
def modeled(demo: Demo, model_server: FakeModelServer) -> Agent:
    """An agent served by the loopback model server, which records the token IDs it receives."""
    return Agent.objects.create(
        slug="modeled",
        name="Modeled",
        system_prompt="Answer from the context.",
        backend_kind=Agent.BackendKind.OPENAI,
        backend_base_url=model_server.base_url,
        backend_model=model_server.model,
        backend_accepts_token_ids=True,
        ttl_policy=demo.agents["support"].ttl_policy,
    )


def test_a_turn_stores_the_question_and_a_complete_answer(demo: Demo, alice: User) -> None:
    result = run_turn(user=alice, agent=demo.agents["support"], message=f"  {REDIS_QUESTION}  ")

    question, answer = result.conversation.messages.order_by("id")
    assert (question.role, question.content, question.status) == ("user", REDIS_QUESTION, "ok")
    assert answer == result.answer_message
    assert (answer.role, answer.status, answer.backend) == ("assistant", "ok", "extractive")
    assert answer.content == result.answer and "extractive" in answer.content.lower()
    assert answer.citations == result.citations and result.citations
    assert all(c.keys() == {"document_id", "title", "chunk_id", "excerpt"} for c in result.citations)
    assert len(answer.chunk_outcomes) == demo.agents["support"].top_k
    assert {o["outcome"] for o in answer.chunk_outcomes} == {"miss"}
    assert answer.cache_misses == len(answer.chunk_outcomes) and answer.cache_hits == 0
    assert answer.tokens_tokenized > 0 and answer.context_tokens > 0 and answer.prompt_tokens > answer.context_tokens
    assert len(answer.prompt_fingerprint) == 64
    assert answer.total_ms >= answer.generation_ms > 0
    assert result.conversation.title == REDIS_QUESTION and result.conversation.user == alice
    assert result.cache["misses"] == answer.cache_misses
    assert set(result.timings) == {"retrieval_ms", "tokens_ms", "generation_ms", "total_ms"}
    assert result.usage == {"prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens}


def test_asking_again_takes_every_chunk_from_the_cache(demo: Demo, alice: User) -> None:
    first = run_turn(user=alice, agent=demo.agents["support"], message=REDIS_QUESTION)
    second = run_turn(user=alice, agent=demo.agents["support"], message=REDIS_QUESTION)

    record = second.answer_message
    assert {o["outcome"] for o in record.chunk_outcomes} == {"hit"}
    assert record.tokens_tokenized == 0
    assert record.tokens_from_cache == first.answer_message.tokens_tokenized
    assert second.answer == first.answer and second.citations == first.citations


def test_the_documentation_agent_cites_the_with_topic(demo: Demo, alice: User) -> None:
    result = run_turn(user=alice, agent=demo.agents["documentation"], message=WITH_QUESTION)
    assert "pydoc/with" in _cited_sources(result.citations)


def test_the_support_agent_cites_the_redis_down_article(demo: Demo, alice: User) -> None:
    result = run_turn(user=alice, agent=demo.agents["support"], message=REDIS_QUESTION)
    assert _cited_sources(result.citations)[0] == "support/redis-down"


def test_a_superuser_may_use_every_agent(demo: Demo, root: User) -> None:
    for agent in demo.agents.values():
        assert run_turn(user=root, agent=agent, message="invoice").answer_message.status == "ok"


def test_a_disabled_agent_answers_no_one(demo: Demo, root: User) -> None:
    agent = demo.agents["support"]
    agent.enabled = False
    with pytest.raises(AgentNotFound):
        run_turn(user=root, agent=agent, message=REDIS_QUESTION)


@pytest.mark.parametrize("message", ["", "   \n\t", None, 42, "nul \x00 byte"])
def test_an_invalid_message_is_refused_and_nothing_is_stored(demo: Demo, alice: User, message: object) -> None:
    with pytest.raises(InvalidMessage):
        run_turn(user=alice, agent=demo.agents["support"], message=message)  # type: ignore[arg-type]
    assert not Message.objects.exists()


@override_settings(TOKENCACHE_MAX_MESSAGE_CHARS=10)
def test_a_message_over_the_limit_is_refused_with_413(demo: Demo, alice: User) -> None:
    with pytest.raises(MessageTooLong) as raised:
        run_turn(user=alice, agent=demo.agents["support"], message="x" * 11)
    assert raised.value.status == 413
    assert not Message.objects.exists()


def test_someone_elses_conversation_is_forbidden(demo: Demo, alice: User, root: User) -> None:
    theirs = run_turn(user=root, agent=demo.agents["support"], message=REDIS_QUESTION).conversation
    with pytest.raises(ConversationForbidden):
        run_turn(user=alice, agent=demo.agents["support"], message="and then?", conversation=theirs)
    assert theirs.messages.count() == 2


@pytest.mark.parametrize(
    ("server_status", "server_says", "kind", "code", "status"),
    [
        (500, "the GPU caught fire", ModelUnavailable, "model_unavailable", 503),  # retry later
        (400, "This model's maximum context length is 8192 tokens", ModelRejected, "model_rejected", 502),  # won't help
    ],
)
def test_a_failing_model_keeps_the_question_and_stores_an_error_answer_of_its_kind(
    modeled: Agent,
    root: User,
    model_server: FakeModelServer,
    server_status: int,
    server_says: str,
    kind: type[ModelUnavailable | ModelRejected],
    code: str,
    status: int,
) -> None:
    model_server.knobs.error_status = server_status
    model_server.knobs.error_message = server_says

    with pytest.raises(kind) as raised:
        run_turn(user=root, agent=modeled, message="is anyone there?")

    error = raised.value
    assert (error.code, error.status) == (code, status)
    question, answer = Conversation.objects.get(pk=error.conversation_id).messages.order_by("id")
    assert (question.role, question.content, question.status) == ("user", "is anyone there?", "ok")
    assert (answer.pk, answer.role, answer.status, answer.content) == (error.message_id, "assistant", "error", "")
    assert answer.error_code == code and server_says in answer.error  # the reason, for operators
    assert "kept" in error.message and server_says not in error.message  # the client's fixed text


@pytest.fixture
def error_answers_cannot_be_stored(db: None) -> Iterator[None]:
    """The database refuses every error answer, as a full disk would: a real SQLite trigger."""
    if connection.vendor != "sqlite":
        pytest.skip("the refusing trigger is written for SQLite")
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TEMP TRIGGER refuse_error_answers BEFORE INSERT ON agents_message WHEN NEW.status = 'error' "
            "BEGIN SELECT RAISE(ABORT, 'database refused the error answer'); END"
        )
    yield
    with connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER IF EXISTS refuse_error_answers")


# Transactional: run_turn runs in autocommit in production, where a failed insert leaves the
# connection usable; inside a test's transaction it would poison every later query.
@pytest.mark.django_db(transaction=True)
def test_when_the_error_answer_cannot_be_stored_the_turns_own_error_is_raised_and_the_second_logged(
    modeled: Agent,
    root: User,
    model_server: FakeModelServer,
    error_answers_cannot_be_stored: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    model_server.knobs.error_status = 500
    model_server.knobs.error_message = "the GPU caught fire"

    with pytest.raises(BackendUnavailable, match="the GPU caught fire"):
        run_turn(user=root, agent=modeled, message="is anyone there?")

    assert list(Message.objects.filter(conversation__agent=modeled).values_list("role", "content")) == [
        ("user", "is anyone there?")
    ]
    secondary = [r for r in caplog.records if r.message == "could not store the error answer of a failed turn"]
    assert len(secondary) == 1 and "database refused the error answer" in str(secondary[0].exc_info[1])


def test_a_model_server_that_is_down_is_reported_the_same_way(modeled: Agent, root: User) -> None:
    modeled.backend_base_url = "http://127.0.0.1:9"  # discard port: nothing listens
    with pytest.raises(ModelUnavailable) as raised:
        run_turn(user=root, agent=modeled, message="hello?")
    assert Message.objects.get(pk=raised.value.message_id).status == "error"
    assert Message.objects.filter(role="user", content="hello?").exists()


def test_an_agent_row_naming_a_non_model_key_variable_never_sends_it(
    modeled: Agent, root: User, model_server: FakeModelServer
) -> None:
    # Written around the admin's validation (a shell, a fixture, a raw UPDATE).
    Agent.objects.filter(pk=modeled.pk).update(backend_api_key_env="SECRET_KEY")
    modeled.refresh_from_db()

    with pytest.raises(ModelRejected) as raised:
        run_turn(user=root, agent=modeled, message="hello?")

    assert model_server.requests == []
    assert "TOKENCACHE_MODEL_KEY_" in Message.objects.get(pk=raised.value.message_id).error


def test_a_model_server_without_its_api_key_variable_is_model_rejected(
    modeled: Agent, root: User, model_server: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TOKENCACHE_MODEL_KEY_UNSET_FOR_TEST", raising=False)
    modeled.backend_api_key_env = "TOKENCACHE_MODEL_KEY_UNSET_FOR_TEST"

    with pytest.raises(ModelRejected) as raised:
        run_turn(user=root, agent=modeled, message="hello?")

    assert model_server.requests == []
    assert "TOKENCACHE_MODEL_KEY_UNSET_FOR_TEST" in Message.objects.get(pk=raised.value.message_id).error


def test_a_conversation_deleted_after_admission_is_not_found_and_nothing_is_stored(demo: Demo, alice: User) -> None:
    conversation = run_turn(user=alice, agent=demo.agents["support"], message=REDIS_QUESTION).conversation
    Conversation.objects.filter(pk=conversation.pk).delete()  # by another request, after this one was admitted

    with pytest.raises(ConversationNotFound) as raised:
        run_turn(user=alice, agent=demo.agents["support"], message="and then?", conversation=conversation)

    assert raised.value.status == 404
    assert not Conversation.objects.exists() and not Message.objects.exists()


def _delete_on_first_delta(conversation: Conversation) -> Callable[[str], None]:
    def delete(text: str) -> None:
        Conversation.objects.filter(pk=conversation.pk).delete()  # another request, while the answer streams

    return delete


def test_a_conversation_deleted_during_generation_drops_the_answer_and_is_not_found(
    demo: Demo, alice: User, caplog: pytest.LogCaptureFixture
) -> None:
    conversation = Conversation.objects.create(agent=demo.agents["support"], user=alice, title="soon gone")

    with pytest.raises(ConversationNotFound):
        run_turn(
            user=alice,
            agent=demo.agents["support"],
            message=REDIS_QUESTION,
            conversation=conversation,
            on_delta=_delete_on_first_delta(conversation),
        )

    assert not Conversation.objects.exists() and not Message.objects.exists()
    assert "conversation deleted during the turn; its answer was dropped" in [r.message for r in caplog.records]


def test_a_conversation_deleted_while_the_model_fails_stores_no_error_answer_and_is_not_found(
    modeled: Agent, root: User, model_server: FakeModelServer
) -> None:
    model_server.knobs.close_after_chunks = 2
    conversation = Conversation.objects.create(agent=modeled, user=root, title="soon gone")

    with pytest.raises(ConversationNotFound):
        run_turn(
            user=root,
            agent=modeled,
            message="hello?",
            conversation=conversation,
            on_delta=_delete_on_first_delta(conversation),
        )

    assert not Conversation.objects.exists() and not Message.objects.exists()


def test_an_edited_document_never_serves_the_old_texts_tokens(
    modeled: Agent, root: User, model_server: FakeModelServer, redis_server: RedisProcess
) -> None:
    tokenizer = get_tokenizer(modeled.tokenizer_spec)
    old_text = "# Fire drill\n\nAssemble at the north gate when the alarm sounds."
    new_text = "# Fire drill\n\nAssemble at the south car park when the alarm sounds."
    upsert_document(agent=modeled, source="test/fire-drill", title="Fire drill", body=old_text)

    def ask() -> tuple[Message, list[int]]:
        answer = run_turn(user=root, agent=modeled, message="where do we assemble for the fire drill").answer_message
        return answer, model_server.last_body()["prompt"]

    def contains(ids: list[int], part: list[int]) -> bool:
        return any(ids[i : i + len(part)] == part for i in range(len(ids) - len(part) + 1))

    first, sent = ask()
    assert [o["outcome"] for o in first.chunk_outcomes] == ["miss"]
    assert contains(sent, tokenizer.encode(old_text).tolist())
    assert ask()[0].chunk_outcomes[0]["outcome"] == "hit"

    upsert_document(agent=modeled, source="test/fire-drill", title="Fire drill", body=new_text)
    edited, sent = ask()
    again, sent_again = ask()

    assert [o["outcome"] for o in edited.chunk_outcomes] == ["miss"]
    assert edited.chunk_outcomes[0]["chunk_id"] != first.chunk_outcomes[0]["chunk_id"]
    assert contains(sent, tokenizer.encode(new_text).tolist())
    assert "north gate" not in tokenizer.decode(sent) and "south car park" in tokenizer.decode(sent)
    assert [o["outcome"] for o in again.chunk_outcomes] == ["hit"] and sent_again == sent
    assert edited.prompt_fingerprint != first.prompt_fingerprint
    assert redis_server.client().exists(token_key(tokenizer.fingerprint, text_digest(new_text))) == 1


def test_the_conversation_history_goes_into_the_next_prompt(
    modeled: Agent, root: User, model_server: FakeModelServer
) -> None:
    tokenizer = get_tokenizer(modeled.tokenizer_spec)
    first = run_turn(user=root, agent=modeled, message="my name is Brian")
    run_turn(user=root, agent=modeled, message="what is my name?", conversation=first.conversation)

    sent = tokenizer.decode(model_server.last_body()["prompt"])
    assert (
        sent.index("User: my name is Brian")
        < sent.index(f"Assistant: {first.answer}")
        < sent.index("User: what is my name?")
    )


def test_given_history_replaces_the_stored_one_and_error_answers_are_never_history(
    modeled: Agent, root: User, model_server: FakeModelServer
) -> None:
    tokenizer = get_tokenizer(modeled.tokenizer_spec)
    model_server.knobs.error_status = 500
    with pytest.raises(ModelUnavailable) as raised:
        run_turn(user=root, agent=modeled, message="first try")
    model_server.knobs.error_status = None
    conversation = Conversation.objects.get(pk=raised.value.conversation_id)

    run_turn(user=root, agent=modeled, message="second try", conversation=conversation)
    stored = tokenizer.decode(model_server.last_body()["prompt"])
    run_turn(user=root, agent=modeled, message="third", history=[("user", "ping"), ("assistant", "pong")])
    given = tokenizer.decode(model_server.last_body()["prompt"])

    assert "User: first try" in stored and "fake model server failure" not in stored
    assert "User: ping\n\nAssistant: pong" in given and "first try" not in given


def test_a_caller_that_stops_listening_still_gets_the_answer_stored(demo: Demo, alice: User) -> None:
    received: list[str] = []

    def hang_up(text: str) -> None:
        received.append(text)
        raise ConnectionResetError("the browser went away")

    result = run_turn(user=alice, agent=demo.agents["support"], message=REDIS_QUESTION, on_delta=hang_up)

    assert len(received) == 1
    assert result.answer_message.status == "ok" and result.answer_message.content.startswith(received[0])


def test_deltas_join_to_the_stored_answer(demo: Demo, alice: User) -> None:
    received: list[str] = []
    result = run_turn(user=alice, agent=demo.agents["documentation"], message=WITH_QUESTION, on_delta=received.append)
    assert "".join(received) == result.answer_message.content


def test_with_redis_down_the_turn_still_answers_and_records_the_bypass(
    demo: Demo, alice: User, redis_factory: Callable[..., RedisProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Paused, not stopped: a call that reached it would wait out the 0.5 s read timeout, so a lookup
    # well under that shows the open breaker bypassed Redis without touching it.
    stalled = redis_factory()
    breaker = Breaker(name="chat-test", fail_max=1, reset_seconds=60)
    timeout = 0.5
    monkeypatch.setattr(
        default_store,
        "_default",
        TokenStore.from_url(stalled.url(0), breaker=breaker, connect_timeout=timeout, read_timeout=timeout),
    )
    monkeypatch.setattr(default_store, "_default_pid", os.getpid())
    stalled.pause(60_000)

    opening = run_turn(user=alice, agent=demo.agents["support"], message=REDIS_QUESTION)  # times out, opens
    assert opening.answer_message.lookup_ms >= timeout * 1000 and breaker.state is State.OPEN
    first, second = (run_turn(user=alice, agent=demo.agents["support"], message=REDIS_QUESTION) for _ in range(2))

    for result in (first, second):
        record = result.answer_message
        assert record.status == "ok"
        assert {o["outcome"] for o in record.chunk_outcomes} == {"bypass"}
        assert record.cache_bypassed == len(record.chunk_outcomes) and record.tokens_from_cache == 0
        assert (
            result.answer == opening.answer and record.prompt_fingerprint == opening.answer_message.prompt_fingerprint
        )
        assert record.lookup_ms < timeout * 1000  # the breaker is open: no waiting on the stalled socket
