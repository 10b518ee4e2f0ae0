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
        seconds = self.ttl_seconds
        if seconds % 3600 == 0:
            amount = f"{seconds // 3600} h"
        elif seconds % 60 == 0:
            amount = f"{seconds // 60} min"
        else:
            amount = f"{seconds} s"
        return f"{amount}, {self.expiry_mode}"


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
        indexes = [models.Index(fields=["conversation", "created"]), models.Index(fields=["role", "created"])]

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
