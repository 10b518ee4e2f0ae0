from django.apps import AppConfig
from django.db.models.signals import post_save, pre_save


class AgentsConfig(AppConfig):
    name = "agents"
    verbose_name = "Agents"

    def ready(self) -> None:
        from agents import policy_history
        from agents.models import TTLPolicy

        pre_save.connect(policy_history.remember_before_save, sender=TTLPolicy, dispatch_uid="policy_history_before")
        post_save.connect(policy_history.record_after_save, sender=TTLPolicy, dispatch_uid="policy_history_after")
