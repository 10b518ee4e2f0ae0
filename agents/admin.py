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
from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponseRedirect

from agents.errors import PUBLIC_ERROR_MESSAGES
from agents.invalidation import forget_agent, forget_document
from agents.knowledge import delete_document, save_document
from agents.models import (
    Agent,
    ApiToken,
    Chunk,
    Conversation,
    KnowledgeDocument,
    Message,
    TTLPolicy,
    TTLPolicyChange,
    TTLRecommendation,
    WarmingRun,
)
from agents.tokens import create_api_token, revoke_api_token
from agents.tuner import apply_recommendation
from agents.warming import request_warming
from dashboards.admin_figures import (
    DAY_LABEL,
    DAY_SHORT,
    WEEK_SHORT,
    policy_summary,
    policy_tuning_context,
    rolled_up_hit_rate,
)
from dashboards.figures import format_count, format_duration, format_ms, format_percent
from dashboards.live import breaker_summary
from dashboards.queries import agent_summaries


class CacheFigures:
    """Each row's cache figures over the last 24 h, read from the dashboards' rollups.

    The hit rate is `dashboards.figures`' (bypassed and corrupt lookups beside it, not in
    it), over the window the dashboards call "last 24 h", so the admin and the dashboards
    show the same numbers. Figures are attached to the listed rows after pagination: one
    read of the rollups per page, not one subquery per row.
    """

    def get_changelist_instance(self, request: HttpRequest) -> Any:
        changelist = super().get_changelist_instance(request)  # type: ignore[misc]
        changelist.result_list = list(changelist.result_list)
        figures = self.cache_figures([obj.pk for obj in changelist.result_list])  # type: ignore[attr-defined]
        for obj in changelist.result_list:
            obj.figures = figures.get(obj.pk)
        return changelist

    @admin.display(description=f"hit rate ({DAY_SHORT})", ordering="hit_rate_rolled_up")
    def hit_rate(self, obj: Any) -> str:
        figures = getattr(obj, "figures", None)
        return format_percent(figures.hit_rate) if figures else "—"

    @admin.display(description=f"lookups ({DAY_SHORT})")
    def lookups(self, obj: Any) -> str:
        figures = getattr(obj, "figures", None)
        if not figures or not figures.lookups:
            return "—"
        aside = f" ({format_count(figures.bypassed)} bypassed)" if figures.bypassed else ""
        return f"{format_count(figures.lookups)}{aside}"

    @admin.display(description=f"from cache ({DAY_SHORT})")
    def tokens_from_cache(self, obj: Any) -> str:
        figures = getattr(obj, "figures", None)
        return format_count(figures.tokens_from_cache) if figures else "—"


# Labels and help of the TTL policy form: "TTL", not Django's "Ttl seconds".
POLICY_LABELS = {
    "ttl_seconds": "TTL (seconds)",
    "min_ttl_seconds": "Minimum TTL (seconds)",
    "max_ttl_seconds": "Maximum TTL (seconds)",
    "auto_apply": "Let the tuner apply its recommendations",
    "tuning_interval_seconds": "Tuner changes the TTL at most once per (seconds)",
}
POLICY_HELP = {
    "ttl_seconds": "How long a chunk's tokens stay in Redis after they are written, e.g. 3600 = 1 h.",
    "auto_apply": (
        "When on, the automatic TTL tuner (a Celery beat task) may set the TTL itself, only between the minimum and "
        "the maximum above, and each change is recorded and marked on the dashboards' hit-rate charts. "
        "When off, its recommendations are only shown on this page, for a person to apply."
    ),
}


class TTLPolicyForm(forms.ModelForm):
    class Meta:
        model = TTLPolicy
        fields = [
            "name",
            "ttl_seconds",
            "expiry_mode",
            "rationale",
            "tuning_guidance",
            "min_ttl_seconds",
            "max_ttl_seconds",
            "auto_apply",
            "tuning_interval_seconds",
        ]
        labels = POLICY_LABELS
        help_texts = POLICY_HELP


class TTLPolicyChangeInline(admin.TabularInline):
    """The policy's history: every change of its settings, by whom and why (the tuner writes its reason)."""

    model = TTLPolicyChange
    verbose_name = "change"
    verbose_name_plural = "History"
    fields = readonly_fields = ("at", "field", "old", "new", "source", "by", "reason")
    extra = 0
    max_num = 0
    can_delete = False
    ordering = ["-at", "-id"]


@admin.register(TTLPolicy)
class TTLPolicyAdmin(CacheFigures, admin.ModelAdmin):
    form = TTLPolicyForm
    list_display = ["name", "ttl", "expiry_mode", "agents_using", "hit_rate", "hit_rate_week", "lookups", "tuning"]
    fieldsets = [
        (None, {"fields": ["name", "ttl_seconds", "expiry_mode"]}),
        ("Why", {"fields": ["rationale", "tuning_guidance"]}),
        (
            "Automatic tuning",
            {"fields": ["min_ttl_seconds", "max_ttl_seconds", "auto_apply", "tuning_interval_seconds"]},
        ),
    ]
    change_form_template = "admin/agents/ttlpolicy/change_form.html"
    inlines = [TTLPolicyChangeInline]
    actions = ["apply_latest_recommendation"]

    def response_change(self, request: HttpRequest, obj: TTLPolicy) -> Any:
        # "Save and apply the recommendation" on the change form: one click for the person tuning.
        chosen = request.POST.get("_apply_recommendation")
        if chosen:
            recommendation = obj.recommendations.filter(pk=chosen).first()
            if recommendation is not None and apply_recommendation(
                recommendation=recommendation, by=request.user.get_username(), source=TTLPolicyChange.Source.ADMIN
            ):
                obj.refresh_from_db()
                self.message_user(request, f"TTL set to {format_duration(obj.ttl_seconds)} as recommended.")
            else:
                self.message_user(request, "The recommendation was not applied: it matches the TTL already.")
            return HttpResponseRedirect(request.path)
        return super().response_change(request, obj)

    @admin.action(description="Apply each selected policy's latest recommendation", permissions=["change"])
    def apply_latest_recommendation(self, request: HttpRequest, queryset: QuerySet[TTLPolicy]) -> None:
        applied = []
        for policy in queryset:
            recommendation = policy.recommendations.first()
            if recommendation is not None and apply_recommendation(
                recommendation=recommendation, by=request.user.get_username(), source=TTLPolicyChange.Source.ADMIN
            ):
                applied.append(policy.name)
        if applied:
            self.message_user(request, f"TTL changed for {', '.join(applied)}; the reason is in each policy's history.")
        else:
            self.message_user(request, "Nothing changed: no recommendation differs from its policy's TTL.")

    def get_queryset(self, request: HttpRequest) -> QuerySet[TTLPolicy]:
        policies = super().get_queryset(request).prefetch_related("agents")
        return policies.annotate(hit_rate_rolled_up=rolled_up_hit_rate("pk", by="ttl_policy"))

    def cache_figures(self, pks: list[int]) -> dict[int, Any]:
        return {pk: policy_summary(pk, "day") for pk in pks}

    def get_changelist_instance(self, request: HttpRequest) -> Any:
        changelist = super().get_changelist_instance(request)
        for policy in changelist.result_list:
            policy.figures_week = policy_summary(policy.pk, "week")
        return changelist

    @admin.display(description="TTL", ordering="ttl_seconds")
    def ttl(self, policy: TTLPolicy) -> str:
        return format_duration(policy.ttl_seconds)

    @admin.display(description=f"hit rate ({WEEK_SHORT})")
    def hit_rate_week(self, policy: Any) -> str:
        figures = getattr(policy, "figures_week", None)
        return format_percent(figures.hit_rate) if figures else "—"

    @admin.display(description="automatic tuning")
    def tuning(self, policy: TTLPolicy) -> str:
        bounds = f"{format_duration(policy.min_ttl_seconds)} to {format_duration(policy.max_ttl_seconds)}"
        return f"applies, {bounds}" if policy.auto_apply else f"recommends only ({bounds})"

    @admin.display(description="agents using it")
    def agents_using(self, policy: TTLPolicy) -> str:
        return ", ".join(agent.slug for agent in policy.agents.all()) or "—"

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> Any:
        policy = self.get_object(request, object_id)
        if policy is not None:
            extra_context = {**(extra_context or {}), **policy_tuning_context(policy)}
        return super().change_view(request, object_id, form_url, extra_context)


@admin.register(Agent)
class AgentAdmin(CacheFigures, admin.ModelAdmin):
    # Narrow enough for 1280 px beside the admin's sidebar and filters: the figures must stay in view.
    list_display = [
        "slug",
        "policy",
        "documents",
        "hit_rate",
        "lookups",
        "tokens_from_cache",
        "enabled",
    ]
    list_filter = ["enabled", "backend_kind", "ttl_policy"]
    search_fields = ["slug", "name"]
    prepopulated_fields = {"slug": ["name"]}
    filter_horizontal = ["allowed_groups"]
    change_list_template = "admin/agents/agent/change_list.html"
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
        # Both figures are subqueries: a join on documents would multiply every other sum by
        # the number of documents (issue 12: 97 s for this page at 74,000 messages).
        documents = (
            KnowledgeDocument.objects.filter(agent=OuterRef("pk"))
            .order_by()
            .values("agent")
            .annotate(count=Count("pk"))
            .values("count")
        )
        agents = super().get_queryset(request).select_related("ttl_policy")
        return agents.annotate(
            document_count=Coalesce(Subquery(documents, output_field=IntegerField()), 0),
            hit_rate_rolled_up=rolled_up_hit_rate("pk", by="agent"),
        )

    def cache_figures(self, pks: list[int]) -> dict[int, Any]:
        return agent_summaries("day")

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        extra_context = {**(extra_context or {}), "breakers": breaker_summary(), "figures_window": DAY_LABEL}
        return super().changelist_view(request, extra_context=extra_context)

    actions = ["warm_cache", "forget_cached_tokens"]

    @admin.action(description="Warm the token cache for the selected agents", permissions=["change"])
    def warm_cache(self, request: HttpRequest, queryset: QuerySet[Agent]) -> None:
        runs = [request_warming(agent=agent, reason=WarmingRun.Reason.ADMIN) for agent in queryset]
        self.message_user(
            request,
            f"Queued {len(runs)} warming run{'s' if len(runs) != 1 else ''} for the Celery worker; "
            "their progress is under Warming runs.",
        )

    @admin.action(description="Remove the selected agents' cached tokens now", permissions=["change"])
    def forget_cached_tokens(self, request: HttpRequest, queryset: QuerySet[Agent]) -> None:
        deleted = sum(forget_agent(agent=agent) for agent in queryset)
        self.message_user(request, f"Removed {deleted} cached entries (0 when Redis is unavailable).")

    @admin.display(description="TTL policy", ordering="ttl_policy__name")
    def policy(self, agent: Agent) -> str:
        return f"{agent.ttl_policy.name}, {format_duration(agent.ttl_policy.ttl_seconds)}"

    @admin.display(description="backend", ordering="backend_kind")
    def backend(self, agent: Agent) -> str:
        return agent.backend_kind if not agent.backend_model else f"{agent.backend_kind}: {agent.backend_model}"

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
    actions = ["delete_with_chunks", "forget_cached_tokens"]

    @admin.action(description="Remove the selected documents' cached tokens now", permissions=["change"])
    def forget_cached_tokens(self, request: HttpRequest, queryset: QuerySet[KnowledgeDocument]) -> None:
        deleted = sum(forget_document(document=document) for document in queryset.select_related("agent"))
        self.message_user(request, f"Removed {deleted} cached entries (0 when Redis is unavailable).")

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
        "total_time",
        "feedback",
        "created",
    )
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="total")
    def total_time(self, message: Message) -> str:
        return format_ms(message.total_ms)


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


def _ms(field: str, label: str) -> Any:
    @admin.display(description=label, ordering=field)
    def shown(self: Any, message: Message) -> str:
        return format_ms(getattr(message, field))

    return shown


class ErrorKindFilter(admin.SimpleListFilter):
    title = "error kind"
    parameter_name = "error_code"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(code, code) for code in PUBLIC_ERROR_MESSAGES]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Message]) -> QuerySet[Message]:
        return queryset.filter(error_code=self.value()) if self.value() else queryset


@admin.register(Message)
class MessageAdmin(ReadMostlyAdmin):
    """Each message as recorded: its feedback, cache record and timings, read-only."""

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
        "lookup",
        "total",
        "feedback_shown",
        "created",
    ]
    # Fixed filter choices: a filter on a free field (backend, error_code) scans every message for
    # its distinct values on each page (about 20 ms each at 100,000 messages).
    list_filter = ["role", "status", ErrorKindFilter, "feedback", "conversation__agent"]
    list_select_related = ["conversation"]
    search_fields = ["content", "error"]
    # Newest first by primary key: ordering by `created` sorts the whole table (64 ms at 100,000).
    ordering = ["-id"]
    show_full_result_count = False
    readonly_fields = [
        "retrieval",
        "lookup",
        "generation",
        "total",
        "feedback_shown",
        "chunk_outcomes_shown",
    ]
    fieldsets = [
        (None, {"fields": ["conversation", "role", "status", "error_code", "error", "content", "created", "backend"]}),
        ("Feedback", {"fields": ["feedback_shown", "feedback_comment", "feedback_at"]}),
        (
            "Cache record",
            {
                "fields": [
                    "cache_hits",
                    "cache_misses",
                    "cache_bypassed",
                    "tokens_from_cache",
                    "tokens_tokenized",
                    "context_tokens",
                    "chunk_outcomes_shown",
                ]
            },
        ),
        ("Timings", {"fields": ["retrieval", "lookup", "generation", "total"]}),
        (
            "Prompt",
            {"fields": ["prompt_tokens", "completion_tokens", "prompt_fingerprint", "prompt_ids_echoed", "citations"]},
        ),
    ]

    retrieval = _ms("retrieval_ms", "retrieval")
    lookup = _ms("lookup_ms", "token lookup")
    generation = _ms("generation_ms", "generation")
    total = _ms("total_ms", "total")

    @admin.display(description="feedback", ordering="feedback")
    def feedback_shown(self, message: Message) -> str:
        return {1: "helpful (+1)", -1: "not helpful (-1)"}.get(message.feedback, "—")  # type: ignore[arg-type]

    @admin.display(description="chunk outcomes")
    def chunk_outcomes_shown(self, message: Message) -> str:
        outcomes = [o for o in message.chunk_outcomes or [] if isinstance(o, dict)]
        return ", ".join(f"chunk {o.get('chunk_id')}: {o.get('outcome')}" for o in outcomes) or "—"


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


@admin.register(WarmingRun)
class WarmingRunAdmin(ReadMostlyAdmin):
    """Warming runs and their progress, refreshed by the run after every batch."""

    list_display = ["requested", "agent", "reason", "status", "progress_shown", "rate", "finished"]
    list_filter = ["status", "reason", "agent"]
    readonly_fields = [f.name for f in WarmingRun._meta.fields]

    @admin.display(description="chunks done")
    def progress_shown(self, run: WarmingRun) -> str:
        cached = f" ({run.already_cached} already cached)" if run.already_cached else ""
        return f"{run.done_chunks} / {run.total_chunks}{cached}"

    @admin.display(description="tokens/s while working")
    def rate(self, run: WarmingRun) -> str:
        return format_count(round(run.tokens_per_second)) if run.tokens_per_second else "—"


@admin.register(TTLRecommendation)
class TTLRecommendationAdmin(ReadMostlyAdmin):
    """The tuner's recommendations with their evidence; applied ones say by whom."""

    list_display = ["created", "policy", "shown", "applied_at", "applied_by"]
    list_filter = ["policy"]
    readonly_fields = [f.name for f in TTLRecommendation._meta.fields]

    @admin.display(description="recommendation")
    def shown(self, recommendation: TTLRecommendation) -> str:
        return str(recommendation)
