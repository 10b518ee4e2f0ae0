"""Every change of a TTL policy's settings becomes a `TTLPolicyChange` row: the policy's one history.

Saves of a policy (the admin's form, the seed) are recorded by these signal handlers, as an
administrator's; the tuner writes its own row, with its reason, and changes the TTL with a
queryset update, which sends no signal, so no change is recorded twice. The admin shows the
history on the policy's page and the dashboards mark it on the hit-rate charts.
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from agents.models import TTLPolicy, TTLPolicyChange

TRACKED_FIELDS = ("ttl_seconds", "expiry_mode", "auto_apply", "min_ttl_seconds", "max_ttl_seconds")


def remember_before_save(sender: type[TTLPolicy], instance: TTLPolicy, raw: bool = False, **kwargs: Any) -> None:
    if raw or instance.pk is None:
        return
    instance._history_before = sender.objects.filter(pk=instance.pk).values(*TRACKED_FIELDS).first()  # type: ignore[attr-defined]


def record_after_save(
    sender: type[TTLPolicy], instance: TTLPolicy, created: bool, raw: bool = False, **kwargs: Any
) -> None:
    before = getattr(instance, "_history_before", None)
    if raw or created or not before:
        return
    at = timezone.now()
    TTLPolicyChange.objects.bulk_create(
        TTLPolicyChange(
            policy=instance,
            at=at,
            field=name,
            old=str(before[name]),
            new=str(getattr(instance, name)),
            source=TTLPolicyChange.Source.ADMIN,
        )
        for name in TRACKED_FIELDS
        if before[name] != getattr(instance, name)
    )
    instance._history_before = {name: getattr(instance, name) for name in TRACKED_FIELDS}  # type: ignore[attr-defined]
