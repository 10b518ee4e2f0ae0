from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_save, pre_save


class DashboardsConfig(AppConfig):
    name = "dashboards"
    verbose_name = "Dashboards"

    def ready(self) -> None:
        from agents.models import TTLPolicy

        pre_save.connect(_remember_policy, sender=TTLPolicy, dispatch_uid="dashboards_policy_before")
        post_save.connect(_record_policy_change, sender=TTLPolicy, dispatch_uid="dashboards_policy_after")


# A TTL policy's changes (the admin's or a tuner's) become markers on the hit-rate charts.
def _remember_policy(sender: Any, instance: Any, raw: bool = False, **kwargs: Any) -> None:
    from dashboards.rollup import TRACKED_POLICY_FIELDS

    if raw or instance.pk is None:
        return
    instance._dashboards_before = sender.objects.filter(pk=instance.pk).values(*TRACKED_POLICY_FIELDS).first()


def _record_policy_change(sender: Any, instance: Any, created: bool, raw: bool = False, **kwargs: Any) -> None:
    from dashboards.rollup import TRACKED_POLICY_FIELDS, record_policy_changes

    before = getattr(instance, "_dashboards_before", None)
    if raw or created or not before:
        return
    after = {name: getattr(instance, name) for name in TRACKED_POLICY_FIELDS}
    record_policy_changes(policy_id=instance.pk, before=before, after=after)
    instance._dashboards_before = after
