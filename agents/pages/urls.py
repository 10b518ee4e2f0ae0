"""Routes of the browser pages."""

from django.urls import URLPattern, path

from agents.pages import tokens, views

urlpatterns: list[URLPattern] = [
    path("", views.home, name="home"),
    path("agents/<slug:slug>/", views.chat, name="agent_chat"),
    path("agents/<slug:slug>/c/<int:conversation_id>/", views.chat, name="agent_conversation"),
    path("agents/<slug:slug>/c/<int:conversation_id>/rename", views.rename, name="conversation_rename"),
    path("agents/<slug:slug>/c/<int:conversation_id>/delete", views.delete, name="conversation_delete"),
    path("agents/<slug:slug>/documents/<int:document_id>/", views.document, name="agent_document"),
    path("answers/<int:message_id>/", views.message_fragment, name="answer_fragment"),
    path("answers/<int:message_id>/feedback", views.feedback, name="answer_feedback"),
    path("tokens/", tokens.api_tokens, name="api_tokens"),
    path("tokens/<int:token_id>/revoke", tokens.revoke, name="api_token_revoke"),
]
