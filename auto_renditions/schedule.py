"""The django-q2 schedule that runs :func:`auto_renditions.tasks.sweep` (installed by ``migrate``)."""

from __future__ import annotations

from typing import Any

from .conf import get_settings

SWEEP_NAME = "auto_renditions.sweep"
SWEEP_FUNC = "auto_renditions.tasks.sweep"


def install_sweep(*args: Any, using: str = "default", **kwargs: Any) -> None:
    """Create, update or remove the sweep schedule to match ``AUTO_RENDITIONS["SWEEP_MINUTES"]``."""
    from django_q.models import Schedule

    conf = get_settings()
    schedules = Schedule.objects.using(using)
    if conf.SWEEP_MINUTES <= 0:
        schedules.filter(name=SWEEP_NAME).delete()
        return
    defaults = {"func": SWEEP_FUNC, "schedule_type": Schedule.MINUTES, "minutes": conf.SWEEP_MINUTES, "repeats": -1}
    if conf.Q_CLUSTER:
        defaults["cluster"] = conf.Q_CLUSTER
    schedules.update_or_create(name=SWEEP_NAME, defaults=defaults)
