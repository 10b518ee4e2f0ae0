"""Agents, their TTL policies and knowledge, conversations, and API tokens.

Models hold data and small derived properties; workflows live in the services
(`knowledge.py`, `chat.py`) and reads in `selectors.py`.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.core.validators import MinValueValidator, URLValidator
from django.db import models
from django.utils.text import capfirst

from agents.durations import format_duration
from agents.validators import API_KEY_ENV_PREFIX, api_key_env_refusal, server_root_refusal
from cachecore.exceptions import TokenizerUnavailable
from cachecore.tokenizers import get_tokenizer


class TTLPolicy(models.Model):
    class ExpiryMode(models.TextChoices):
        FIXED = "fixed", "fixed (expires after the TTL, hits do not extend it)"
        SLIDING = "sliding", "sliding (every hit restarts the TTL)"

    name = models.CharField(max_length=100, unique=True)
    # At least 1 s: Redis refuses a zero expiry, so a TTL of 0 would fail every chat turn.
    ttl_seconds = models.PositiveIntegerField(validators=[MinValueValidator(1)])
    expiry_mode = models.CharField(max_length=10, choices=ExpiryMode.choices, default=ExpiryMode.FIXED)
    rationale = models.TextField(blank=True, help_text="Why this TTL suits the content it caches.")
    tuning_guidance = models.TextField(
        blank=True, help_text="When and how to change the TTL, read from the dashboards."
    )
    # Bounds for automatic tuning: a tuner may move ttl_seconds only inside them, and only if auto_apply.
    min_ttl_seconds = models.PositiveIntegerField(default=300, validators=[MinValueValidator(1)])
    max_ttl_seconds = models.PositiveIntegerField(default=86400, validators=[MinValueValidator(1)])
    auto_apply = models.BooleanField(default=False)
    # However often the tuner runs, it changes this policy's TTL at most once per interval.
    tuning_interval_seconds = models.PositiveIntegerField(default=86400, validators=[MinValueValidator(3600)])

    class Meta:
        verbose_name = "TTL policy"
        verbose_name_plural = "TTL policies"
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(min_ttl_seconds__lte=models.F("max_ttl_seconds")),
                name="ttlpolicy_min_le_max",
            ),
            models.CheckConstraint(condition=models.Q(ttl_seconds__gte=1), name="ttlpolicy_ttl_at_least_1s"),
            # A tuner may set the TTL to the minimum, so the minimum must be a TTL Redis accepts.
            models.CheckConstraint(condition=models.Q(min_ttl_seconds__gte=1), name="ttlpolicy_min_at_least_1s"),
            models.CheckConstraint(
                condition=models.Q(
                    min_ttl_seconds__lte=models.F("ttl_seconds"), ttl_seconds__lte=models.F("max_ttl_seconds")
                ),
                name="ttlpolicy_ttl_within_bounds",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.describe()})"

    def clean(self) -> None:
        """Name the field that breaks min <= ttl <= max, instead of a bare constraint error."""
        ttl, low, high = self.ttl_seconds, self.min_ttl_seconds, self.max_ttl_seconds
        if ttl is None or low is None or high is None:
            return  # a missing value is already reported on its own field
        errors: dict[str, str] = {}
        if low > high:
            errors["min_ttl_seconds"] = f"The minimum ({low} s) must not exceed the maximum ({high} s)."
        elif not low <= ttl <= high:
            errors["ttl_seconds"] = f"The TTL must lie between the minimum ({low} s) and the maximum ({high} s)."
        if errors:
            raise ValidationError(errors)

    @property
    def sliding(self) -> bool:
        return self.expiry_mode == self.ExpiryMode.SLIDING

    def describe(self) -> str:
        """A human reading of the TTL, e.g. "1 h, fixed", for lists and logs."""
        return f"{format_duration(self.ttl_seconds)}, {self.expiry_mode}"


def _default_tokenizer() -> str:
    return settings.TOKENCACHE_DEFAULT_TOKENIZER


class Agent(models.Model):
    class BackendKind(models.TextChoices):
        EXTRACTIVE = "extractive", "extractive (no model: quotes the knowledge base)"
        OPENAI = "openai", "OpenAI-compatible server (vLLM, llama.cpp, Ollama, ...)"

    slug = models.SlugField(max_length=50, unique=True)
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    system_prompt = models.TextField(blank=True)
    tokenizer_spec = models.CharField(
        max_length=500,
        default=_default_tokenizer,
        help_text="tiktoken:<encoding>, hf:<path to tokenizer.json> or server:<base URL>.",
    )
    backend_kind = models.CharField(max_length=20, choices=BackendKind.choices, default=BackendKind.EXTRACTIVE)
    backend_base_url = models.URLField(blank=True, help_text="Server root, e.g. http://127.0.0.1:8001 (no /v1).")
    backend_model = models.CharField(max_length=200, blank=True)
    backend_api_key_env = models.CharField(
        max_length=100,
        blank=True,
        help_text=(
            f"The NAME of the environment variable holding the API key; it must start with "
            f"{API_KEY_ENV_PREFIX} (e.g. {API_KEY_ENV_PREFIX}VLLM), so no other secret of the process "
            f"can be sent to a model server."
        ),
    )
    backend_accepts_token_ids = models.BooleanField(
        default=False, help_text="The server takes token IDs as the prompt of /v1/completions (vLLM)."
    )
    top_k = models.PositiveSmallIntegerField(default=4)
    prompt_token_budget = models.PositiveIntegerField(default=3000)
    answer_token_limit = models.PositiveIntegerField(default=512)
    temperature = models.FloatField(default=0.2)
    ttl_policy = models.ForeignKey(TTLPolicy, on_delete=models.PROTECT, related_name="agents")
    allowed_groups = models.ManyToManyField(Group, blank=True, related_name="agents")
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.name

    def full_clean(
        self, exclude: Iterable[str] | None = None, validate_unique: bool = True, validate_constraints: bool = True
    ) -> None:
        """As Django's, but an error in an excluded field is reported for the whole agent.

        `clean()` checks every field, and a form that lacks one (the admin shows the backend
        read-only to staff) cannot show an error next to it: Django raises ValueError, a 500,
        instead of telling the person who saved the prompt of an agent whose stored URL no
        longer passes.
        """
        excluded = set(exclude or ())
        try:
            super().full_clean(excluded, validate_unique, validate_constraints)
        except ValidationError as error:
            if not excluded or not hasattr(error, "error_dict"):
                raise
            for name in [name for name in error.error_dict if name in excluded]:
                label = capfirst(self._meta.get_field(name).verbose_name)  # type: ignore[union-attr]
                moved = [f"{label}: {message}" for message in ValidationError(error.error_dict.pop(name)).messages]
                error.error_dict.setdefault(NON_FIELD_ERRORS, []).extend(ValidationError(m) for m in moved)
            raise

    def clean(self) -> None:
        """Refuse an agent that would fail on its first chat turn, naming what is wrong.

        A `server:` tokenizer is only checked for a well-formed URL: contacting the
        model server here would make the admin unusable while that server is down.
        """
        errors: dict[str, str] = {}
        kind, _, argument = self.tokenizer_spec.partition(":")
        if kind == "server":
            try:
                URLValidator(schemes=["http", "https"])(argument)
            except ValidationError:
                errors["tokenizer_spec"] = f"server: needs an http(s) base URL, not {argument!r}."
        else:
            try:
                get_tokenizer(self.tokenizer_spec)
            except TokenizerUnavailable as exc:
                errors["tokenizer_spec"] = str(exc)
        if kind == "server" and "tokenizer_spec" not in errors and (refusal := server_root_refusal(argument)):
            errors["tokenizer_spec"] = f"server: {refusal}"
        if self.backend_base_url and (refusal := server_root_refusal(self.backend_base_url)):
            errors["backend_base_url"] = refusal
        if self.backend_kind == self.BackendKind.OPENAI:
            if not self.backend_base_url:
                errors["backend_base_url"] = "An OpenAI-compatible backend needs the server's base URL."
            if not self.backend_model:
                errors["backend_model"] = "An OpenAI-compatible backend needs the model name the server serves."
        if self.backend_api_key_env:
            refusal = api_key_env_refusal(self.backend_api_key_env)
            if refusal:
                errors["backend_api_key_env"] = refusal
        if errors:
            raise ValidationError(errors)


class KnowledgeDocument(models.Model):
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="documents")
    title = models.CharField(max_length=300)
    source = models.CharField(max_length=300, help_text="Natural key within the agent, e.g. support/redis-down.")
    body = models.TextField()
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["agent", "source"]
        constraints = [models.UniqueConstraint(fields=["agent", "source"], name="document_source_unique_per_agent")]

    def __str__(self) -> str:
        return self.title


class Chunk(models.Model):
    document = models.ForeignKey(KnowledgeDocument, on_delete=models.CASCADE, related_name="chunks")
    position = models.PositiveIntegerField()
    text = models.TextField()
    content_hash = models.CharField(max_length=64, help_text="sha256 hex of the text.")
    token_count = models.PositiveIntegerField()

    class Meta:
        ordering = ["document", "position"]
        constraints = [models.UniqueConstraint(fields=["document", "position"], name="chunk_position_unique")]

    def __str__(self) -> str:
        return f"{self.document_id}#{self.position}"


class Conversation(models.Model):
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="conversations")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations")
    title = models.CharField(max_length=200, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated"]
        indexes = [models.Index(fields=["user", "-updated"])]

    def __str__(self) -> str:
        return self.title or f"Conversation {self.pk}"


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user", "user"
        ASSISTANT = "assistant", "assistant"

    class Status(models.TextChoices):
        OK = "ok", "ok"
        ERROR = "error", "error"

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=10, choices=Role.choices)
    content = models.TextField(blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OK)
    error = models.TextField(blank=True)  # the readable reason, for operators: never shown to clients
    # The kind of an error answer (model_unavailable, model_rejected, internal_error): what clients are told.
    error_code = models.CharField(max_length=32, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    # [{"document_id", "title", "chunk_id", "excerpt"}]
    citations = models.JSONField(default=list, blank=True)
    # [{"chunk_id", "outcome"}]
    chunk_outcomes = models.JSONField(default=list, blank=True)
    cache_hits = models.PositiveIntegerField(default=0)
    cache_misses = models.PositiveIntegerField(default=0)
    cache_bypassed = models.PositiveIntegerField(default=0)
    tokens_from_cache = models.PositiveIntegerField(default=0)
    tokens_tokenized = models.PositiveIntegerField(default=0)
    context_tokens = models.PositiveIntegerField(default=0)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    retrieval_ms = models.FloatField(default=0)
    lookup_ms = models.FloatField(default=0)
    generation_ms = models.FloatField(default=0)
    total_ms = models.FloatField(default=0)
    prompt_fingerprint = models.CharField(max_length=64, blank=True)
    backend = models.CharField(max_length=100, blank=True)
    # The model server echoed exactly the IDs we sent (the drift check); None when unknown.
    prompt_ids_echoed = models.BooleanField(null=True, blank=True)
    # The asker's verdict on an answer: +1 helped, -1 did not, None not rated; the comment is optional.
    feedback = models.SmallIntegerField(null=True, blank=True, choices=[(1, "helpful"), (-1, "not helpful")])
    feedback_comment = models.CharField(max_length=200, blank=True)
    feedback_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created", "id"]
        indexes = [
            models.Index(fields=["conversation", "created"]),
            models.Index(fields=["role", "created"]),
            # The dashboards' rollup re-reads the answers rated since its last minute.
            models.Index(fields=["feedback_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.role} #{self.pk}"


class ApiToken(models.Model):
    """A bearer token for scripts; the secret is shown once and only its hash is stored."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=8, db_index=True)
    token_hash = models.CharField(max_length=64, unique=True)
    created = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}...)"

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class TTLRecommendation(models.Model):
    """What the tuner (agents/tuner.py) would set a policy's TTL to, with the evidence it read."""

    policy = models.ForeignKey(TTLPolicy, on_delete=models.CASCADE, related_name="recommendations")
    created = models.DateTimeField(auto_now_add=True)
    window_seconds = models.PositiveIntegerField()
    answers = models.PositiveIntegerField()
    lookups = models.PositiveIntegerField()
    hits = models.PositiveIntegerField()
    misses = models.PositiveIntegerField()
    reuses = models.PositiveIntegerField()
    reuse_p50_seconds = models.FloatField(null=True)
    reuse_p90_seconds = models.FloatField(null=True)
    reuse_p99_seconds = models.FloatField(null=True)
    # The reuse interval that `target_share` of reuses came within: the TTL before clamping.
    reuse_target_seconds = models.FloatField(null=True)
    target_share = models.FloatField(help_text="Share of reuses the recommended TTL would have served.")
    current_ttl_seconds = models.PositiveIntegerField()
    recommended_ttl_seconds = models.PositiveIntegerField()
    applied_at = models.DateTimeField(null=True, blank=True)
    applied_by = models.CharField(max_length=150, blank=True)

    class Meta:
        verbose_name = "TTL recommendation"
        ordering = ["-created", "-id"]
        indexes = [models.Index(fields=["policy", "-created"])]

    def __str__(self) -> str:
        current, recommended = format_duration(self.current_ttl_seconds), format_duration(self.recommended_ttl_seconds)
        verdict = f"keep {current}" if current == recommended else f"{current} → {recommended}"
        lookups = self.hits + self.misses
        hit_rate = f"hit rate {self.hits / lookups:.0%} of {lookups} lookups" if lookups else "no lookups"
        evidence = (
            f"{self.reuses} chunk reuses, {self.target_share:.0%} within {format_duration(self.reuse_target_seconds)}"
            if self.reuses
            else "no chunk was reused"
        )
        applied = f"; applied by {self.applied_by}" if self.applied_at else ""
        return f"{verdict} ({evidence}; {hit_rate}; last {format_duration(self.window_seconds)}){applied}"


class TTLPolicyChange(models.Model):
    """One change of a TTL policy's settings, who made it and why: the policy's history."""

    class Source(models.TextChoices):
        ADMIN = "admin", "an administrator"
        TUNER = "tuner", "the automatic tuner"

    policy = models.ForeignKey(TTLPolicy, on_delete=models.CASCADE, related_name="changes")
    at = models.DateTimeField(db_index=True)
    field = models.CharField(max_length=40)
    old = models.CharField(max_length=100)
    new = models.CharField(max_length=100)
    source = models.CharField(max_length=10, choices=Source.choices)
    by = models.CharField(max_length=150, blank=True)
    reason = models.TextField(blank=True)

    class Meta:
        verbose_name = "TTL policy change"
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.field}: {self.old} → {self.new} by {self.get_source_display()}"


class WarmingRun(models.Model):
    """One pass that writes chunks' token IDs into the cache before anyone asks (agents/warming.py)."""

    class Status(models.TextChoices):
        QUEUED = "queued", "queued"
        RUNNING = "running", "running"
        DONE = "done", "done"
        SKIPPED = "skipped", "skipped (another run for this agent holds the lock)"
        FAILED = "failed", "failed"

    class Reason(models.TextChoices):
        ADMIN = "admin", "an administrator asked"
        API = "api", "the API was asked"
        COMMAND = "command", "manage.py warm_cache"
        COLD_START = "cold-start", "the cache came back empty"

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, null=True, blank=True, related_name="warming_runs")
    reason = models.CharField(max_length=20, choices=Reason.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    requested = models.DateTimeField(auto_now_add=True)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)
    total_chunks = models.PositiveIntegerField(default=0)
    done_chunks = models.PositiveIntegerField(default=0)
    already_cached = models.PositiveIntegerField(default=0)
    tokens_written = models.PositiveIntegerField(default=0)
    seconds = models.FloatField(default=0)
    error = models.TextField(blank=True)
    # The process carrying the run out: a run left `running` by a process that is gone is queued again.
    worker_host = models.CharField(max_length=255, blank=True)
    worker_pid = models.IntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-requested", "-id"]

    def __str__(self) -> str:
        return f"{self.agent or 'all agents'}: {self.progress}"

    @property
    def tokens_per_second(self) -> float | None:
        return self.tokens_written / self.seconds if self.seconds else None

    @property
    def progress(self) -> str:
        rate = f", {self.tokens_per_second:,.0f} tokens/s" if self.tokens_per_second else ""
        return f"{self.get_status_display()}: {self.done_chunks}/{self.total_chunks} chunks{rate}"
