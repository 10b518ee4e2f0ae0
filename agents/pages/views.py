"""Pages for support staff: thin views over the selectors and services, rendered with templates.

Each view settles who may see what through `selectors` (the same rules as the APIs), calls a
service for any change, and renders; refusals become the site's 403 and 404 pages (`page`).
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from agents import conversations, selectors
from agents.errors import InvalidMessage
from agents.interfaces.bodies import ascii_int
from agents.models import Agent, Conversation
from agents.pages.presenters import present
from agents.pages.responses import error_page, page, wants_fragment

RECENT_CONVERSATIONS = 10
SIDEBAR_CONVERSATIONS = 50


@require_GET
@page
def home(request: HttpRequest) -> HttpResponse:
    """The landing page: the agents this person may use and their latest conversations."""
    agents = selectors.agent_cards_for_user(request.user)
    recent = selectors.conversation_list_for_user(request.user)[:RECENT_CONVERSATIONS]
    return render(request, "agents/home.html", {"agents": agents, "conversations": recent, "nav": "agents"})


@require_GET
@page
def chat(request: HttpRequest, slug: str, conversation_id: int | None = None) -> HttpResponse:
    """A new conversation with the agent, or one of the person's own, with its whole history."""
    agent = selectors.get_agent_for_user(request.user, slug)
    conversation = (
        selectors.get_conversation_with_agent(request.user, agent, conversation_id)
        if conversation_id is not None
        else None
    )
    history = conversation.messages.order_by("created", "id") if conversation is not None else []
    return render(
        request,
        "agents/chat.html",
        {
            "agent": agent,
            "conversation": conversation,
            "messages": [present(m, agent=agent) for m in history],
            "conversations": selectors.conversation_list_for_user(request.user, agent=agent)[:SIDEBAR_CONVERSATIONS],
            "max_message_chars": settings.TOKENCACHE_MAX_MESSAGE_CHARS,
            "nav": "agents",
        },
    )


@require_GET
@page
def message_fragment(request: HttpRequest, message_id: int) -> HttpResponse:
    """One answer as the conversation page shows it: the chat script swaps it in when streaming ends."""
    answer = selectors.get_answer_for_user(request.user, message_id)
    agent = _agent_of(request, answer.conversation)
    return render(request, "agents/partials/message.html", {"m": present(answer, agent=agent)})


@require_POST
@page
def feedback(request: HttpRequest, message_id: int) -> HttpResponse:
    answer = selectors.get_answer_for_user(request.user, message_id)
    agent = _agent_of(request, answer.conversation)
    try:
        conversations.rate_answer(
            answer=answer, verdict=request.POST.get("verdict", ""), comment=request.POST.get("comment", "")
        )
    except InvalidMessage as error:
        return error_page(request, error)
    if wants_fragment(request):
        return render(request, "agents/partials/message.html", {"m": present(answer, agent=agent)})
    return redirect(_conversation_url(answer.conversation) + f"#m{answer.pk}")


@require_POST
@page
def rename(request: HttpRequest, slug: str, conversation_id: int) -> HttpResponse:
    agent = selectors.get_agent_for_user(request.user, slug)
    conversation = selectors.get_conversation_with_agent(request.user, agent, conversation_id)
    try:
        conversations.rename_conversation(conversation=conversation, title=request.POST.get("title", ""))
    except InvalidMessage as error:
        return error_page(request, error)
    return redirect(_conversation_url(conversation))


@require_POST
@page
def delete(request: HttpRequest, slug: str, conversation_id: int) -> HttpResponse:
    agent = selectors.get_agent_for_user(request.user, slug)
    conversation = selectors.get_conversation_with_agent(request.user, agent, conversation_id)
    conversations.delete_conversation(conversation=conversation)
    return redirect("agent_chat", slug=agent.slug)


@require_GET
@page
def document(request: HttpRequest, slug: str, document_id: int) -> HttpResponse:
    """A knowledge document, chunk by chunk, with the cited chunk (`?chunk=<id>`) highlighted."""
    doc = selectors.get_document_for_user(request.user, slug, document_id)
    cited = ascii_int(request.GET.get("chunk", ""))
    return render(
        request,
        "agents/document.html",
        {"agent": doc.agent, "document": doc, "chunks": list(doc.chunks.all()), "cited": cited, "nav": "agents"},
    )


def _agent_of(request: HttpRequest, conversation: Conversation) -> Agent:
    # The person must still be allowed to use the conversation's agent to see or rate its answers here.
    return selectors.get_agent_for_user(request.user, conversation.agent.slug)


def _conversation_url(conversation: Conversation) -> str:
    return reverse("agent_conversation", kwargs={"slug": conversation.agent.slug, "conversation_id": conversation.pk})
