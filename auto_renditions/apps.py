from django.apps import AppConfig
from django.db.models.signals import post_migrate


class AutoRenditionsConfig(AppConfig):
    name = "auto_renditions"
    verbose_name = "Auto renditions"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks, fingerprint, page_specs, preview, rendering, schedule, signal_handlers  # noqa: F401 - checks register

        signal_handlers.connect()
        page_specs.connect()
        rendering.install()
        preview.install()
        preview.connect()
        post_migrate.connect(schedule.install_sweep, sender=self, dispatch_uid="auto_renditions.install_sweep")
