"""The admin: agents, TTL policies and knowledge are edited here; conversations are read here.

Writes with side effects go through the services: saving a document rebuilds its
chunks (`agents.knowledge`), creating an API token shows the secret once
(`agents.tokens`).
"""

from __future__ import annotations

from typing import Any, cast

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.db import models
from django.db.models import Count, QuerySet
from django.http import HttpRequest

from agents.knowledge import delete_document, save_document
from agents.models import Agent, ApiToken, Chunk, Conversation, KnowledgeDocument, Message, TTLPolicy
from agents.selectors import RECENT_DAYS, with_recent_cache_figures
from agents.tokens import create_api_token, revoke_api_token


class RecentCacheFigures:
    """Hit rate and turns of the last days, read from the answers' durable records.

    The figures an admin tunes a TTL by: the hit rate counts hits against misses only,
    since a lookup bypassed while Redis was down says nothing about the TTL.
    """

    @admin.display(description=f"hit rate ({RECENT_DAYS} days)")
    def recent_hit_rate(self, obj: Any) -> str:
        lookups = obj.recent_hits + obj.recent_misses
        return f"{obj.recent_hits / lookups:.0%} of {lookups}" if lookups else "—"

    @admin.display(description=f"turns ({RECENT_DAYS} days)", ordering="recent_turns")
    def turns(self, obj: Any) -> int:
        return int(obj.recent_turns)


@admin.register(TTLPolicy)
class TTLPolicyAdmin(RecentCacheFigures, admin.ModelAdmin):
    list_display = ["name", "ttl_seconds", "expiry_mode", "agents_using", "recent_hit_rate", "turns", "auto_apply"]
    fieldsets = [
        (None, {"fields": ["name", "ttl_seconds", "expiry_mode"]}),
        ("Why", {"fields": ["rationale", "tuning_guidance"]}),
        ("Automatic tuning", {"fields": ["min_ttl_seconds", "max_ttl_seconds", "auto_apply"]}),
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[TTLPolicy]:
        policies = super().get_queryset(request).prefetch_related("agents")
        return with_recent_cache_figures(policies, agent_field="ttl_policy")

    @admin.display(description="agents using it")
    def agents_using(self, policy: TTLPolicy) -> str:
        return ", ".join(agent.slug for agent in policy.agents.all()) or "—"


@admin.register(Agent)
class AgentAdmin(RecentCacheFigures, admin.ModelAdmin):
    list_display = [
        "slug",
        "name",
        "backend_kind",
        "tokenizer_spec",
        "ttl_policy",
        "documents",
        "recent_hit_rate",
        "turns",
        "enabled",
    ]
    list_filter = ["enabled", "backend_kind", "ttl_policy"]
    search_fields = ["slug", "name"]
    prepopulated_fields = {"slug": ["name"]}
    filter_horizontal = ["allowed_groups"]
    # Model servers usually sit on a private network over plain http; never guess https.
    formfield_overrides = {models.URLField: {"assume_scheme": "http"}}
    fieldsets = [
        (None, {"fields": ["slug", "name", "description", "enabled", "allowed_groups"]}),
        ("Prompt", {"fields": ["system_prompt", "top_k", "prompt_token_budget", "answer_token_limit", "temperature"]}),
        ("Tokens", {"fields": ["tokenizer_spec", "ttl_policy"]}),
        (
            "Model backend",
            {
                "fields": [
                    "backend_kind",
                    "backend_base_url",
                    "backend_model",
                    "backend_api_key_env",
                    "backend_accepts_token_ids",
                ]
            },
        ),
    ]

    # Where prompts and the API key are sent, and who may use an agent, are a superuser's
    # call: staff trusted to tune prompts and TTLs could otherwise point an agent, and the
    # key it sends, at a server of their own, or add themselves to its groups.
    SUPERUSER_FIELDS = (
        "allowed_groups",
        "tokenizer_spec",
        "backend_kind",
        "backend_base_url",
        "backend_model",
        "backend_api_key_env",
        "backend_accepts_token_ids",
    )

    def get_readonly_fields(self, request: HttpRequest, obj: Agent | None = None) -> tuple[str, ...]:
        readonly = tuple(super().get_readonly_fields(request, obj))
        return readonly if request.user.is_superuser else readonly + self.SUPERUSER_FIELDS

    def get_queryset(self, request: HttpRequest) -> QuerySet[Agent]:
        agents = super().get_queryset(request).select_related("ttl_policy").annotate(document_count=Count("documents"))
        return with_recent_cache_figures(agents, agent_field="")

    @admin.display(description="documents", ordering="document_count")
    def documents(self, agent: Agent) -> int:
        return agent.document_count  # type: ignore[attr-defined]


class ChunkInline(admin.TabularInline):
    """Chunks are derived from the body: shown for inspection, never edited by hand."""

    model = Chunk
    fields = readonly_fields = ("position", "token_count", "content_hash", "text")
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(KnowledgeDocument)
class KnowledgeDocumentAdmin(admin.ModelAdmin):
    list_display = ["title", "agent", "source", "chunk_count", "updated"]
    list_filter = ["agent"]
    search_fields = ["title", "source"]
    readonly_fields = ["created", "updated"]
    inlines = [ChunkInline]
    actions = ["delete_with_chunks"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[KnowledgeDocument]:
        return super().get_queryset(request).select_related("agent").annotate(chunk_total=Count("chunks"))

    @admin.display(description="chunks", ordering="chunk_total")
    def chunk_count(self, document: KnowledgeDocument) -> int:
        return document.chunk_total  # type: ignore[attr-defined]

    def save_model(self, request: HttpRequest, obj: KnowledgeDocument, form: forms.ModelForm, change: bool) -> None:
        save_document(document=obj)

    def delete_model(self, request: HttpRequest, obj: KnowledgeDocument) -> None:
        delete_document(document=obj)

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        # Deleting goes through the service, like every other write of a document.
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    @admin.action(description="Delete selected documents and their chunks", permissions=["delete"])
    def delete_with_chunks(self, request: HttpRequest, queryset: QuerySet[KnowledgeDocument]) -> None:
        count = 0
        for document in queryset:
            delete_document(document=document)
            count += 1
        self.message_user(request, f"Deleted {count} document(s).", messages.SUCCESS)


class MessageInline(admin.TabularInline):
    model = Message
    fields = readonly_fields = (
        "role",
        "status",
        "content",
        "error",
        "cache_hits",
        "cache_misses",
        "total_ms",
        "created",
    )
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ReadMostlyAdmin(admin.ModelAdmin):
    """Conversations are a record of what happened: viewable and deletable, never rewritten."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Conversation)
class ConversationAdmin(ReadMostlyAdmin):
    list_display = ["__str__", "agent", "user", "created", "updated"]
    list_filter = ["agent"]
    search_fields = ["title", "user__username"]
    list_select_related = ["agent", "user"]
    inlines = [MessageInline]


@admin.register(Message)
class MessageAdmin(ReadMostlyAdmin):
    list_display = [
        "id",
        "conversation",
        "role",
        "status",
        "error_code",
        "cache_hits",
        "cache_misses",
        "cache_bypassed",
        "tokens_from_cache",
        "lookup_ms",
        "total_ms",
        "backend",
        "created",
    ]
    list_filter = ["role", "status", "error_code", "backend", "conversation__agent"]
    list_select_related = ["conversation"]
    search_fields = ["content", "error"]


class ApiTokenCreationForm(forms.ModelForm):
    class Meta:
        model = ApiToken
        fields = ["user", "name"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """The secret is shown once, in the message after creation, and never again.

    A token acts as its user, so only a superuser may mint, see or revoke tokens of others:
    staff with the token permissions manage their own, or "add API token" would let them
    act as a superuser.
    """

    list_display = ["name", "user", "prefix", "created", "last_used_at", "revoked_at"]
    list_filter = ["revoked_at"]
    search_fields = ["name", "prefix", "user__username"]
    list_select_related = ["user"]
    readonly_fields = ["user", "name", "prefix", "created", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[ApiToken]:
        tokens = super().get_queryset(request)
        return tokens if _is_superuser(request) else tokens.filter(user_id=request.user.pk)

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "user" and not _is_superuser(request):
            # A posted id of anyone else is then "not one of the available choices".
            kwargs["queryset"] = get_user_model().objects.filter(pk=cast(int, request.user.pk))
            kwargs["initial"] = request.user.pk
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = ApiTokenCreationForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.readonly_fields if obj is not None else []

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.readonly_fields if obj is not None else ["user", "name"]

    def save_model(self, request: HttpRequest, obj: ApiToken, form: forms.ModelForm, change: bool) -> None:
        if change:
            return  # every field is read-only once created
        token, raw = create_api_token(user=form.cleaned_data["user"], name=form.cleaned_data["name"])
        obj.pk = token.pk
        obj.refresh_from_db()
        self.message_user(
            request,
            f"The token for {token.user} is {raw} — copy it now: it is shown only once and cannot be recovered.",
            messages.WARNING,
        )

    @admin.action(description="Revoke selected tokens", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        for token in queryset.filter(revoked_at__isnull=True):
            revoke_api_token(token=token)
        self.message_user(request, "Revoked.", messages.SUCCESS)


def _is_superuser(request: HttpRequest) -> bool:
    return bool(getattr(request.user, "is_superuser", False))
