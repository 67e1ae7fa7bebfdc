"""Drive the app's own recovery in this process: retries after the back-off, sweeps, due deletions."""

from __future__ import annotations

from django.db import close_old_connections
from django.test import override_settings

from auto_renditions import tasks
from tests.harness import settle_in_process


def recover(rounds: int, **auto_renditions) -> None:
    """Run ``rounds`` times what the worker and its schedule would: queued generation, sweep, deletions.

    The broker is purged between rounds because no worker consumes it here; the sweep only re-queues lost work
    when the broker is idle, exactly as in production.
    """
    from django.conf import settings
    from django_q.brokers import get_broker

    conf = {**settings.AUTO_RENDITIONS, "RETRY_BACKOFF_SECONDS": 0, **auto_renditions}
    with override_settings(AUTO_RENDITIONS=conf):
        for _ in range(rounds):
            close_old_connections()
            settle_in_process()
            get_broker().purge_queue()
            tasks.sweep()
            get_broker().purge_queue()
        settle_in_process()
