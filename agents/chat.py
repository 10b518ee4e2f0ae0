"""The chat turn: the one service every interface (JSON API, OpenAI API, websocket, tasks) calls.

Order matters for durability: the user's message is committed before anything that can
fail (retrieval, the token cache, the model), and every failure after that point leaves
an answer row with status `error` and a readable reason. No answer row is ever written
half-way: it is created once, complete, after generation.

A turn has three steps: `open_turn` (checks, the question stored, retrieval, tokens, prompt),
generation, and `OpenTurn.finish` (the answer stored) or `OpenTurn.fail` (the error answer).
`run_turn` runs them in the caller's thread; `arun_turn` runs the first and last in the turn pool
and awaits a model server's stream on the loop. Both share every step but the waiting.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NoReturn, cast

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from agents.backends import (
    Backend,
    BackendError,
    BackendUnavailable,
    ContextChunk,
    Generation,
    Prompt,
    backend_for,
)
from agents.backends.base import OnDelta
from agents.errors import (
    INTERNAL_ERROR_CODE,
    INTERNAL_ERROR_MESSAGE,
    AgentNotFound,
    ConversationForbidden,
    ConversationNotFound,
    InvalidMessage,
    MessageTooLong,
    ModelRejected,
    ModelUnavailable,
    TurnFailed,
)
from agents.models import Agent, Conversation, Message
from agents.prompt import build_prompt
from agents.retrieval import search_chunks
from agents.selectors import AnyUser
from agents.turn_loop import in_turn_thread
from cachecore import metrics
from cachecore.exceptions import CacheCoreError
from cachecore.store import LookupBatch, get_many
from cachecore.tokenizers import get_tokenizer

logger = logging.getLogger(__name__)

# Stored history beyond this many messages cannot fit a prompt budget anyway.
HISTORY_MESSAGES = 20
EXCERPT_CHARS = 240
TITLE_CHARS = 80


@dataclass(frozen=True)
class TurnResult:
    conversation: Conversation
    user_message: Message
    answer_message: Message
    answer: str
    citations: list[dict[str, Any]]
    cache: dict[str, float]
    timings: dict[str, float]
    usage: dict[str, int]


def run_turn(
    *,
    user: AnyUser,
    agent: Agent,
    message: str,
    conversation: Conversation | None = None,
    history: Sequence[tuple[str, str]] | None = None,
    on_delta: OnDelta | None = None,
    max_tokens: int | None = None,
    temperature: float | None = None,
) -> TurnResult:
    """Answer `message` with `agent` for `user`, storing both sides of the turn.

    The caller has admitted the turn (`agents.turns.prepare_turn`: the user may use the agent
    and the conversation, within the rate budget); this trusts that and repeats only checks
    that cost no query. Raises a `ChatError` before storing anything if the message is invalid,
    the agent disabled or the conversation not the user's with this agent. Raises
    `ModelUnavailable` (server down, slow, failing) or `ModelRejected` (it refused the request,
    or the agent is misconfigured) after storing the message and an error answer. If even the
    error answer cannot be stored, the turn's own error propagates and the second one is
    logged. A conversation deleted during the turn raises `ConversationNotFound`: the answer
    has nowhere to go and nothing is stored.
    """
    turn = open_turn(
        user=user,
        agent=agent,
        message=message,
        conversation=conversation,
        history=history,
        max_tokens=max_tokens,
        temperature=temperature,
    )
    generation_started = time.perf_counter()
    try:
        generation = turn.backend.generate(
            turn.prompt, max_tokens=turn.max_tokens, temperature=turn.temperature, on_delta=_listener(on_delta)
        )
    except Exception as exc:
        turn.fail(exc)
    return turn.finish(generation, generation_ms=_ms_since(generation_started))


async def arun_turn(
    *,
    user: AnyUser,
    agent: Agent,
    message: str,
    conversation: Conversation | None = None,
    history: Sequence[tuple[str, str]] | None = None,
    on_delta: OnDelta | None = None,
    max_tokens: int | None = None,
    temperature: float | None = None,
) -> TurnResult:
    """`run_turn` for an event loop: the same turn, the same guarantees, no thread held while generating.

    The synchronous parts (`open_turn`, storing the answer or the error) run in the turn pool
    (`agents.turn_loop.in_turn_thread`); a backend that can await its model server (`agenerate`)
    streams on the running loop, any other generates in the pool too. Run it on the turn loop
    (`agents.turn_loop.submit`) so that it finishes whoever listens.
    """
    turn = await in_turn_thread(
        open_turn,
        user=user,
        agent=agent,
        message=message,
        conversation=conversation,
        history=history,
        max_tokens=max_tokens,
        temperature=temperature,
    )
    generation_started = time.perf_counter()
    try:
        agenerate = getattr(turn.backend, "agenerate", None)
        if agenerate is not None:
            generation = await agenerate(
                turn.prompt, max_tokens=turn.max_tokens, temperature=turn.temperature, on_delta=_listener(on_delta)
            )
        else:
            generation = await in_turn_thread(
                turn.backend.generate,
                turn.prompt,
                max_tokens=turn.max_tokens,
                temperature=turn.temperature,
                on_delta=_listener(on_delta),
            )
    except Exception as exc:
        await in_turn_thread(turn.fail, exc)
    return await in_turn_thread(turn.finish, generation, generation_ms=_ms_since(generation_started))


def generates_async(agent: Agent) -> bool:
    """Whether the agent's backend waits on a model server (worth `arun_turn`) rather than computing."""
    return agent.backend_kind == Agent.BackendKind.OPENAI


def open_turn(
    *,
    user: AnyUser,
    agent: Agent,
    message: str,
    conversation: Conversation | None = None,
    history: Sequence[tuple[str, str]] | None = None,
    max_tokens: int | None = None,
    temperature: float | None = None,
) -> OpenTurn:
    """Everything before generation: checks, the question stored, then retrieval, tokens and the prompt.

    Raises as `run_turn` does; a failure after the question is stored leaves an error answer.
    """
    started = time.perf_counter()
    question = _validated(message)
    if not agent.enabled:
        raise AgentNotFound(f"No agent named {agent.slug!r}.")
    if conversation is not None and (conversation.user_id != user.pk or conversation.agent_id != agent.pk):
        raise ConversationForbidden("This conversation belongs to someone else or to another agent.")
    if max_tokens is not None and max_tokens < 1:
        raise InvalidMessage("max_tokens must be a positive integer.")
    if temperature is not None and not 0 <= temperature <= 2:
        raise InvalidMessage("temperature must be between 0 and 2.")

    new_conversation = conversation is None
    conversation, user_message = _store_user_message(user=user, agent=agent, conversation=conversation, text=question)
    if history is None and new_conversation:
        history = ()  # nothing said before: no query for it
    turn = OpenTurn(
        agent=agent,
        conversation=conversation,
        user_message=user_message,
        max_tokens=min(max_tokens or agent.answer_token_limit, agent.answer_token_limit),
        temperature=agent.temperature if temperature is None else temperature,
        started=started,
    )
    # Everything after the user's message is stored runs inside this try, reading the history
    # included: whatever fails, the message gets an error answer (invariant 6).
    try:
        turn.prepare(
            history=_stored_history(conversation=conversation, before=user_message) if history is None else history
        )
    except Exception as exc:
        turn.fail(exc)
    return turn


@dataclass
class OpenTurn:
    """A turn whose question is stored, between `open_turn` and its answer (`finish`) or error (`fail`)."""

    agent: Agent
    conversation: Conversation
    user_message: Message
    max_tokens: int
    temperature: float
    started: float
    retrieval_ms: float = 0.0
    backend: Backend = field(init=False)
    prompt: Prompt = field(init=False)
    batch: LookupBatch = field(init=False)
    chunks: list[ContextChunk] = field(init=False)

    def prepare(self, *, history: Sequence[tuple[str, str]]) -> None:
        agent = self.agent
        policy = agent.ttl_policy
        tokenizer = get_tokenizer(agent.tokenizer_spec)

        retrieval_started = time.perf_counter()
        retrieved = search_chunks(agent=agent, query=self.user_message.content, limit=agent.top_k)
        self.retrieval_ms = _ms_since(retrieval_started)

        # Each chunk's stored content_hash is text_digest(chunk.text): agents.knowledge computes it from
        # the same string when it writes the chunk, its only writer, and a document edit rewrites both.
        # The cache key is therefore the one hashing r.text would give, without a sha256 per chunk per turn.
        # (A raw UPDATE of Chunk.text outside agents.knowledge must set content_hash too, or turns
        # would read the old text's tokens: the full-text index follows such writes, the key does not.)
        self.batch = get_many(
            tokenizer,
            [r.text for r in retrieved],
            ttl=policy.ttl_seconds,
            sliding=policy.sliding,
            agent=agent.slug,
            digests=[r.content_hash for r in retrieved],
        )
        self.chunks = [
            ContextChunk(
                chunk_id=r.chunk_id,
                document_id=r.document_id,
                title=r.title,
                text=r.text,
                score=r.score,
                token_ids=item.ids,
            )
            for r, item in zip(retrieved, self.batch.items, strict=True)
        ]
        self.prompt = build_prompt(
            tokenizer=tokenizer,
            system_prompt=agent.system_prompt,
            chunks=self.chunks,
            history=history,
            question=self.user_message.content,
            budget=agent.prompt_token_budget,
        )
        self.backend = backend_for(agent)

    def finish(self, generation: Generation, *, generation_ms: float) -> TurnResult:
        """Store the answer and count the turn; a failure to store is handled as `fail` handles any."""
        try:
            return self._finish(generation, generation_ms=generation_ms)
        except Exception as exc:
            self.fail(exc)

    def _finish(self, generation: Generation, *, generation_ms: float) -> TurnResult:
        agent, prompt = self.agent, self.prompt
        citations = _citations(prompt, generation)
        answer = _store_answer(
            conversation=self.conversation,
            prompt=prompt,
            batch=self.batch,
            chunks=self.chunks,
            generation=generation,
            citations=citations,
            timings={"retrieval_ms": self.retrieval_ms, "generation_ms": generation_ms},
            started=self.started,
        )
        metrics.observe_turn(
            agent=agent.slug,
            ok=True,
            lookup_ms=answer.lookup_ms,
            context_tokens=answer.context_tokens,
            stage_ms={
                "retrieval": answer.retrieval_ms,
                "lookup": answer.lookup_ms,
                "generation": answer.generation_ms,
                "total": answer.total_ms,
            },
        )
        return TurnResult(
            conversation=self.conversation,
            user_message=self.user_message,
            answer_message=answer,
            answer=answer.content,
            citations=citations,
            cache={
                "hits": answer.cache_hits,
                "misses": answer.cache_misses,
                "bypassed": answer.cache_bypassed,
                "tokens_from_cache": answer.tokens_from_cache,
                "tokens_tokenized": answer.tokens_tokenized,
                "lookup_ms": answer.lookup_ms,
            },
            timings={
                "retrieval_ms": answer.retrieval_ms,
                "tokens_ms": answer.lookup_ms,
                "generation_ms": answer.generation_ms,
                "total_ms": answer.total_ms,
            },
            usage={"prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens},
        )

    def fail(self, exc: Exception) -> NoReturn:
        """Store the error answer of `exc`, count the turn, and raise what the caller should see."""
        agent, conversation = self.agent, self.conversation
        if isinstance(exc, ConversationNotFound):
            raise exc  # deleted during the turn: its question went with it, there is nothing to answer
        if isinstance(exc, BackendError | CacheCoreError):
            reason = exc.message if isinstance(exc, BackendError) else str(exc)
            # A server that is down or slow may answer later; one that refused the request (a 4xx) or
            # an agent without its API key will not, until someone changes something.
            failure: type[TurnFailed] = (
                ModelRejected
                if isinstance(exc, BackendError) and not isinstance(exc, BackendUnavailable)
                else ModelUnavailable
            )
            logger.warning(
                "chat turn failed",
                extra={"agent": agent.slug, "conversation": conversation.pk, "code": failure.code, "reason": reason},
            )
            failed = _store_error(conversation=conversation, code=failure.code, reason=reason, started=self.started)
            metrics.observe_turn(agent=agent.slug, ok=False)
            if failed is None:
                raise exc  # TurnFailed promises a stored error answer; there is none
            # Its message is the public text of its kind; the reason is in the log line above, the
            # error answer and the exception chain.
            raise failure(conversation_id=conversation.pk, message_id=failed.pk) from exc
        reason = f"{INTERNAL_ERROR_MESSAGE} ({type(exc).__name__})"
        _store_error(conversation=conversation, code=INTERNAL_ERROR_CODE, reason=reason, started=self.started)
        metrics.observe_turn(agent=agent.slug, ok=False)
        raise exc


def _validated(message: object) -> str:
    if not isinstance(message, str) or not message.strip():
        raise InvalidMessage("The message must be non-empty text.")
    if "\x00" in message:
        raise InvalidMessage("The message must not contain NUL characters.")
    limit = settings.TOKENCACHE_MAX_MESSAGE_CHARS
    if len(message) > limit:
        raise MessageTooLong(f"The message is {len(message)} characters long; the limit is {limit}.")
    return message.strip()


@contextmanager
def _one_writer() -> Iterator[None]:
    """Hold while writing a turn's rows: on SQLite, one writer of all web processes at a time.

    SQLite admits one writer at a time and a waiting one polls, sleeping up to 100 ms between
    tries (its busy timeout): with dozens of turn threads in two processes contending, turns spent
    most of their time asleep while the database was free (bench/concurrency.py, 500 streams).
    Writers queue here instead: on a lock of this process, then on an flock(2) of a file beside
    the database, which the kernel hands to the next waiter the moment it is released. Other
    databases lock rows, not the whole file: no lock.
    """
    if connection.vendor != "sqlite":
        yield
        return
    with _sqlite_writer:
        lock_file = _writer_lock_file()
        if lock_file is None:  # an in-memory database (the tests'): one process
            yield
            return
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


_sqlite_writer = threading.RLock()
_lock_files: dict[tuple[int, str], int] = {}


def _writer_lock_file() -> int | None:
    """A descriptor of `<database>.writer-lock`, opened once per process (held under `_sqlite_writer`)."""
    name = str(connection.settings_dict["NAME"])
    if name == ":memory:" or "mode=memory" in name or name.startswith("file:"):
        return None
    key = (os.getpid(), name)  # a forked child opens its own: flock belongs to the open file
    descriptor = _lock_files.get(key)
    if descriptor is None:
        descriptor = _lock_files[key] = os.open(f"{name}.writer-lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    return descriptor


def _store_user_message(
    *, user: AnyUser, agent: Agent, conversation: Conversation | None, text: str
) -> tuple[Conversation, Message]:
    with _one_writer(), transaction.atomic():
        return _insert_user_message(user=user, agent=agent, conversation=conversation, text=text)


def _insert_user_message(
    *, user: AnyUser, agent: Agent, conversation: Conversation | None, text: str
) -> tuple[Conversation, Message]:
    if conversation is None:
        conversation = Conversation.objects.create(agent=agent, user_id=cast(int, user.pk), title=_title(text))
    else:
        _touch(conversation)
    return conversation, Message.objects.create(conversation=conversation, role=Message.Role.USER, content=text)


def _touch(conversation: Conversation) -> None:
    """Mark the conversation updated, or raise `ConversationNotFound` if it was deleted meanwhile.

    Called inside the transaction that then adds a message: the UPDATE locks the row (PostgreSQL)
    or the database (SQLite) until commit, so a delete cannot slip in between this check and the
    insert; without it the insert fails on the foreign key, a 500.
    """
    if not Conversation.objects.filter(pk=conversation.pk).update(updated=timezone.now()):
        raise ConversationNotFound(f"Conversation {conversation.pk} was deleted.")


def _title(text: str) -> str:
    line = text.splitlines()[0]
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1].rsplit(" ", 1)[0] + "…"


def _stored_history(*, conversation: Conversation, before: Message) -> list[tuple[str, str]]:
    # Error answers are not part of the dialogue: the model never said them.
    recent = (
        conversation.messages.filter(status=Message.Status.OK, id__lt=before.pk)
        .order_by("-id")
        .values_list("role", "content")[:HISTORY_MESSAGES]
    )
    return [(role, content) for role, content in reversed(recent)]


def _listener(on_delta: OnDelta | None) -> OnDelta | None:
    """Forward deltas until the caller fails (a closed socket); the turn goes on regardless."""
    if on_delta is None:
        return None
    listening = True

    def deliver(text: str) -> None:
        nonlocal listening
        if listening:
            try:
                on_delta(text)
            except Exception:
                listening = False
                logger.info("caller stopped listening; the answer will still be stored", exc_info=True)

    return deliver


def _citations(prompt: Prompt, generation: Generation) -> list[dict[str, Any]]:
    by_id = {chunk.chunk_id: chunk for chunk in prompt.chunks}
    cited = [by_id[chunk_id] for chunk_id in dict.fromkeys(generation.cited_chunk_ids) if chunk_id in by_id]
    return [
        {"document_id": c.document_id, "title": c.title, "chunk_id": c.chunk_id, "excerpt": _excerpt(c.text)}
        for c in cited
    ]


def _excerpt(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= EXCERPT_CHARS else flat[: EXCERPT_CHARS - 1].rsplit(" ", 1)[0] + "…"


def _store_answer(**fields: Any) -> Message:
    with _one_writer(), transaction.atomic():
        return _insert_answer(**fields)


def _insert_answer(
    *,
    conversation: Conversation,
    prompt: Prompt,
    batch: LookupBatch,
    chunks: Sequence[ContextChunk],
    generation: Generation,
    citations: list[dict[str, Any]],
    timings: dict[str, float],
    started: float,
) -> Message:
    try:
        _touch(conversation)
    except ConversationNotFound:
        logger.warning(
            "conversation deleted during the turn; its answer was dropped",
            extra={"conversation": conversation.pk, "backend": generation.backend},
        )
        raise
    return Message.objects.create(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        content=generation.text,
        status=Message.Status.OK,
        citations=citations,
        chunk_outcomes=[
            {"chunk_id": chunk.chunk_id, "outcome": str(item.outcome)}
            for chunk, item in zip(chunks, batch.items, strict=True)
        ],
        cache_hits=batch.hits,
        cache_misses=batch.misses + batch.corrupt,  # a corrupt entry was re-tokenized: a miss (see chunk_outcomes)
        cache_bypassed=batch.bypassed,
        tokens_from_cache=batch.tokens_from_cache,
        tokens_tokenized=batch.tokens_tokenized,
        context_tokens=sum(int(chunk.token_ids.size) for chunk in prompt.chunks),
        prompt_tokens=generation.prompt_tokens or int(prompt.token_ids.size),
        completion_tokens=generation.completion_tokens,
        retrieval_ms=timings["retrieval_ms"],
        lookup_ms=batch.seconds * 1000,
        generation_ms=timings["generation_ms"],
        total_ms=_ms_since(started),
        prompt_fingerprint=prompt.fingerprint,
        backend=generation.backend,
        prompt_ids_echoed=generation.prompt_ids_echoed,
    )


def _store_error(*, conversation: Conversation, code: str, reason: str, started: float) -> Message | None:
    """The error answer; None, logged, if even that cannot be stored (the database failing too).

    Raises only `ConversationNotFound`, when the conversation was deleted during the turn: the
    error, like the question, has nowhere to go. Anything else is logged, never raised: the caller
    is handling the turn's own error, which is the one to report.
    """
    try:
        with _one_writer(), transaction.atomic():
            _touch(conversation)
            return Message.objects.create(
                conversation=conversation,
                role=Message.Role.ASSISTANT,
                content="",
                status=Message.Status.ERROR,
                error=reason,
                error_code=code,
                total_ms=_ms_since(started),
            )
    except ConversationNotFound:
        logger.warning(
            "conversation deleted during the turn; its error answer was dropped",
            extra={"conversation": conversation.pk, "reason": reason},
        )
        raise
    except Exception:
        logger.exception("could not store the error answer of a failed turn", extra={"conversation": conversation.pk})
        return None


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
