"""Questions left without an answer by a process that died mid-turn get an `interrupted` error answer.

A turn stores the user's message first and its answer (or error answer) last; a web worker
killed in between (`kill -9`, out of memory, a crash) leaves the question hanging in the
history with neither. No living turn can still be working on a question older than the
model's total timeout (plus a margin for retrieval, the cache lookup and storing), so such a
question gets an error answer of kind `interrupted`, placed right after it.

Which questions are unanswered is decided per conversation, in order: each answer answers the
latest question still waiting before it. So a question followed by its answer is answered;
so are two turns of one conversation that ran at once (U1 U2 A1 A2); after a killed turn the
user's retry (U1 U2 A2) leaves U1 unanswered, not U2; and an `interrupted` answer, stored
right after its question, answers it: running this again changes nothing (idempotent).

Called at start-up by `manage.py mark_interrupted_turns` (scripts/run.sh) and every few
minutes by Celery beat (`tokencache_project.celery.mark_interrupted_turns`).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from agents.errors import INTERRUPTED_ERROR_CODE
from agents.models import Conversation, Message

logger = logging.getLogger(__name__)

# Beyond the model's total timeout: connecting to it, retrieval, the token lookup, storing.
MARGIN_SECONDS = 60.0


def interrupted_cutoff(*, now: datetime | None = None) -> datetime:
    """Questions stored before this moment can no longer be answered by a running turn."""
    now = now or timezone.now()
    return now - timedelta(seconds=settings.TOKENCACHE_MODEL_TOTAL_TIMEOUT + MARGIN_SECONDS)


def mark_interrupted_turns(*, now: datetime | None = None) -> list[Message]:
    """Give every question older than the cutoff that has no answer an `interrupted` error answer.

    Returns the error answers created (none when run again).
    """
    cutoff = interrupted_cutoff(now=now)
    # Only conversations with more questions than answers can hold an unanswered one.
    suspects = (
        Conversation.objects.annotate(
            questions=Count("messages", filter=Q(messages__role=Message.Role.USER)),
            answers=Count("messages", filter=Q(messages__role=Message.Role.ASSISTANT)),
        )
        .filter(questions__gt=F("answers"))
        .values_list("pk", flat=True)
    )
    created: list[Message] = []
    for conversation_id in list(suspects):
        created.extend(_mark_conversation(conversation_id=conversation_id, cutoff=cutoff))
    if created:
        logger.warning(
            "interrupted turns answered with an error",
            extra={"count": len(created), "conversations": sorted({m.conversation_id for m in created})},
        )
    return created


def _mark_conversation(*, conversation_id: int, cutoff: datetime) -> list[Message]:
    with transaction.atomic():
        # Locks the row that a turn's answer also updates (`_touch`): the answer of a turn that
        # is finishing now waits for us, or we see it (PostgreSQL; SQLite writes one at a time).
        if not Conversation.objects.select_for_update().filter(pk=conversation_id).exists():
            return []  # deleted meanwhile
        messages = list(
            Message.objects.filter(conversation_id=conversation_id)
            .order_by("created", "id")
            .values_list("id", "role", "created")
        )
        created = []
        for question_id, question_created in _unanswered(messages):
            if question_created >= cutoff:
                continue  # may still be streaming
            answer = Message.objects.create(
                conversation_id=conversation_id,
                role=Message.Role.ASSISTANT,
                content="",
                status=Message.Status.ERROR,
                error_code=INTERRUPTED_ERROR_CODE,
                error=(
                    f"No answer within {settings.TOKENCACHE_MODEL_TOTAL_TIMEOUT + MARGIN_SECONDS:g} s of the "
                    f"question (message {question_id}): the process serving the turn stopped."
                ),
            )
            # Right after its question in the history (ordered by created, then id), not at the end.
            Message.objects.filter(pk=answer.pk).update(created=question_created)
            answer.created = question_created
            created.append(answer)
        return created


def _unanswered(messages: list[tuple[int, str, datetime]]) -> list[tuple[int, datetime]]:
    """The (id, created) of the questions that no answer took, in order."""
    waiting: list[tuple[int, datetime]] = []
    for message_id, role, created in messages:
        if role == Message.Role.USER:
            waiting.append((message_id, created))
        elif waiting:
            waiting.pop()
    return waiting
