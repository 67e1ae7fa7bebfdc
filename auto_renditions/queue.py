"""Hand work to django-q2 once the ledger transaction has committed.

Nothing here runs in the worker; nothing here generates or deletes. A task that is enqueued but never runs
(a broker restart, a killed worker) is found again by :func:`auto_renditions.tasks.sweep`. So an enqueue that
fails (the broker is down or does not answer) is logged and dropped, never raised: it runs after the editor's
transaction committed, and the queue rows that transaction wrote let the sweep queue the work again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from django.db import transaction

from .conf import get_settings

if TYPE_CHECKING:
    from .ledger import LedgerChange

GENERATE = "auto_renditions.tasks.generate_image_renditions"
FAN_OUT = "auto_renditions.tasks.enqueue_generation_tasks"
DELETE = "auto_renditions.tasks.delete_due_renditions"
SYNC = "auto_renditions.tasks.sync_posts"
GROUP = "auto_renditions"

#: A publish queues up to this many generation tasks itself; a post with more images gets one task that queues
#: them from a worker, so the publish request's work does not grow with the post (with django-q2's ORM broker
#: every task is an INSERT).
FAN_OUT_ABOVE = 10

#: Seconds an enqueue waits for a Redis broker to connect or answer, unless ``Q_CLUSTER["redis"]`` sets its own
#: ``socket_timeout``/``socket_connect_timeout``: an unreachable broker must not hold the editor's request (a
#: pushed task takes a millisecond).
BROKER_TIMEOUT = 2.0

#: Seconds this process skips enqueueing after an enqueue failed: ``publish_scheduled`` publishes many posts in
#: one process, and each would wait ``BROKER_TIMEOUT`` for a broker that is gone. The sweep queues the work.
BROKER_RETRY_AFTER = 15.0

logger = logging.getLogger(__name__)

_broker_failed_at: float | None = None


def _options() -> dict:
    conf = get_settings()
    options = {"group": GROUP, "timeout": conf.TASK_TIMEOUT}
    if conf.Q_CLUSTER:
        options["cluster"] = conf.Q_CLUSTER
    return options


def _bounded_redis(conf: str | dict) -> Any:
    """A Redis client like django-q2's own (``Q_CLUSTER["redis"]``, a URL or keyword arguments), with
    :data:`BROKER_TIMEOUT` where the configuration sets no socket timeout of its own."""
    import redis

    bound = {"socket_timeout": BROKER_TIMEOUT, "socket_connect_timeout": BROKER_TIMEOUT}
    if isinstance(conf, str):
        return redis.from_url(conf, **bound)  # options in the URL's query win over these
    return redis.Redis(**{**bound, **conf})


def _broker(cluster: str | None) -> Any:
    """django-q2's broker for ``cluster``; a Redis broker's connection bounded in time (see :func:`_bounded_redis`)."""
    from django_q.brokers import get_broker
    from django_q.brokers.redis_broker import Redis
    from django_q.conf import Conf

    broker = get_broker(cluster)
    if isinstance(broker, Redis) and not Conf.DJANGO_REDIS:
        broker.connection = _bounded_redis(Conf.REDIS)
    return broker


def _enqueue(tasks: Iterable[tuple[str, object, str]]) -> None:
    """``async_task`` for each ``(function, argument, task name)``, in one transaction; a failure is logged.

    With django-q2's ORM broker that is one commit for all tasks instead of one per task (measured: the publish
    of a 10-image post 0.62x as long, docs/BENCHMARKS.md), and the broker does not call
    ``close_old_connections()``, which it does outside a transaction: with ``CONN_MAX_AGE = 0`` that closed the
    editor's database connection in the middle of the request. Other brokers are unaffected.
    """
    from django_q.tasks import async_task

    global _broker_failed_at
    tasks = list(tasks)
    if not tasks:
        return
    names = sorted({name for _, _, name in tasks})
    if _broker_failed_at is not None and time.monotonic() - _broker_failed_at < BROKER_RETRY_AFTER:
        logger.warning("auto_renditions: broker failed moments ago, not queueing %s; the sweep will", names)
        return
    try:
        options = _options()
        with transaction.atomic():  # the ORM broker closes old connections when built outside a transaction too
            broker = _broker(options.get("cluster"))
            for func, argument, name in tasks:
                async_task(func, argument, task_name=name, broker=broker, **options)
    except Exception:  # noqa: BLE001 - runs after commit: the editor's action is done, the sweep re-queues
        _broker_failed_at = time.monotonic()
        logger.exception("auto_renditions: could not queue %s; the sweep will queue them again", names)
    else:
        _broker_failed_at = None


def enqueue_generation(image_ids: Iterable[int]) -> None:
    """One task per image, carrying nothing but its id: the task reads the ledger when it runs."""
    _enqueue((GENERATE, image_id, f"auto_renditions.generate.{image_id}") for image_id in sorted(set(image_ids)))


def enqueue_generation_soon(image_ids: Iterable[int]) -> None:
    """What a publish or an edit runs on commit: the image tasks, or for a large post one task that queues them."""
    ids = sorted(set(image_ids))
    if len(ids) > FAN_OUT_ABOVE:
        _enqueue([(FAN_OUT, ids, "auto_renditions.fan_out")])
    else:
        enqueue_generation(ids)


def enqueue_deletion(image_ids: Iterable[int]) -> None:
    ids = sorted(set(image_ids))
    if ids:
        _enqueue([(DELETE, ids, "auto_renditions.delete")])


def enqueue_sync(post_ids: Iterable[int]) -> None:
    """A worker syncs these posts' claims: what a listener does when the sync in the editor's request failed."""
    ids = sorted(set(post_ids))
    if ids:
        _enqueue([(SYNC, ids, "auto_renditions.sync")])


def dispatch(change: LedgerChange) -> None:
    """Enqueue on commit what a ledger change needs: generation now, deletion now if there is no grace."""
    if change.queued_images:
        images = set(change.queued_images)
        transaction.on_commit(lambda: enqueue_generation_soon(images))
    if change.released and get_settings().DELETE_GRACE_SECONDS <= 0:
        released_images = {image_id for image_id, _ in change.released}
        transaction.on_commit(lambda: enqueue_deletion(released_images))
