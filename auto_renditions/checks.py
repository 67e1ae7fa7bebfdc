"""System checks for the mistakes that would make the app silently do nothing (or the wrong thing)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig, apps
from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register

from .signal_handlers import CAST_PUBLISH_DISPATCH_UID


@register("auto_renditions")
def check_settings(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    from .conf import get_settings

    try:
        conf = get_settings()
    except (TypeError, ValueError) as error:
        return [Error(str(error), hint="See the settings reference in the README.", id="auto_renditions.E001")]
    errors: list[CheckMessage] = []
    numeric = (
        "DELETE_GRACE_SECONDS",
        "TASK_TIMEOUT",
        "MAX_ATTEMPTS",
        "RETRY_BACKOFF_SECONDS",
        "SWEEP_MINUTES",
        "SERIAL_RENDER_PIXELS",
    )
    for name in numeric:
        value = getattr(conf, name)
        if not isinstance(value, int) or value < 0 or (name in {"TASK_TIMEOUT", "MAX_ATTEMPTS"} and value < 1):
            errors.append(
                Error(
                    f"AUTO_RENDITIONS['{name}'] must be a non-negative integer, not {value!r}.",
                    id="auto_renditions.E002",
                )
            )
    return errors


@register("auto_renditions")
def check_django_q(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    problems: list[CheckMessage] = []
    if not apps.is_installed("django_q"):
        problems.append(
            Error(
                "auto_renditions needs django-q2: renditions are made by its workers.",
                hint='Add "django_q" to INSTALLED_APPS, configure Q_CLUSTER and run `manage.py qcluster`.',
                id="auto_renditions.E003",
            )
        )
        return problems
    q_cluster = getattr(settings, "Q_CLUSTER", {}) or {}
    if q_cluster.get("sync") and not settings.DEBUG:
        problems.append(
            Warning(
                "Q_CLUSTER['sync'] is on with DEBUG off: renditions are made inside the publish request again.",
                hint="Turn sync off in production and run `manage.py qcluster`.",
                id="auto_renditions.W001",
            )
        )
    timeout = q_cluster.get("timeout")
    retry = q_cluster.get("retry")
    if timeout and retry and retry <= timeout:
        problems.append(
            Warning(
                f"Q_CLUSTER['retry'] ({retry}) must be larger than Q_CLUSTER['timeout'] ({timeout}), or a slow "
                "task is delivered twice.",
                id="auto_renditions.W002",
            )
        )
    return problems


@register("auto_renditions")
def check_cast_receiver(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    from wagtail.signals import page_published

    from . import preview, rendering

    problems: list[CheckMessage] = []
    if any(receiver[0][0] == CAST_PUBLISH_DISPATCH_UID for receiver in page_published.receivers):
        problems.append(
            Error(
                "django-cast's synchronous rendition receiver is still connected to page_published.",
                hint='Put "auto_renditions" after "cast" in INSTALLED_APPS.',
                id="auto_renditions.E004",
            )
        )
    if not rendering.installed():
        problems.append(
            Error(
                "The pending-rendition fallback is not installed in django-cast's rendering path.",
                hint="This django-cast version may have moved get_srcset_images_for_slots.",
                id="auto_renditions.E005",
            )
        )
    if not preview.installed():
        problems.append(
            Error(
                "Previews would make renditions in the request: the takeover of django-cast's preview media "
                "path is not installed.",
                hint=f"This django-cast version may have moved {preview.FUNCTION} out of {preview.CALLER}.",
                id="auto_renditions.E007",
            )
        )
    return problems


# Not tagged "database": it reads the settings only, so a plain `manage.py check` reports it.
@register("auto_renditions")
def check_sqlite_locking(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    db = settings.DATABASES.get("default", {})
    if "sqlite" in db.get("ENGINE", "") and db.get("OPTIONS", {}).get("transaction_mode") != "IMMEDIATE":
        return [
            Warning(
                "SQLite without OPTIONS['transaction_mode'] = 'IMMEDIATE': web and worker processes writing at "
                "once may fail with 'database is locked'.",
                hint='Add "OPTIONS": {"transaction_mode": "IMMEDIATE"} to DATABASES[\'default\'].',
                id="auto_renditions.W003",
            )
        ]
    return []


@register("auto_renditions", "database")
def check_database_supported(app_configs: Any = None, databases: Any = None, **kwargs: Any) -> list:
    """Runs before ``migrate`` (a database check), so an unsupported database stops it before any table exists."""
    from django.db import connections, router

    from .compat import unsupported_database
    from .models import Claim

    problems = []
    for alias in databases or ():
        problem = router.allow_migrate_model(alias, Claim) and unsupported_database(connections[alias])
        if problem:
            problems.append(Error(problem, hint=f"DATABASES[{alias!r}]", id="auto_renditions.E006"))
    return problems
