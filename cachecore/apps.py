from django.apps import AppConfig


class CachecoreConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "cachecore"
    verbose_name = "Token cache"

    def ready(self) -> None:
        from cachecore import checks  # noqa: F401  (registers the system checks)
