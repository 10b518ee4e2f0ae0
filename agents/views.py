"""Browser pages of the agents app."""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from agents import selectors

RECENT_CONVERSATIONS = 10


@login_required
def home(request: HttpRequest) -> HttpResponse:
    """The landing page: the agents this person may use and their latest conversations."""
    agents = selectors.agent_cards_for_user(request.user)
    conversations = selectors.conversations_for_user(request.user).select_related("agent")[:RECENT_CONVERSATIONS]
    return render(request, "agents/home.html", {"agents": agents, "conversations": conversations})
