"""Hand work to django-q2 once the ledger transaction has committed.

Nothing here runs in the worker; nothing here generates or deletes. A task that is enqueued but never runs
(a broker restart, a killed worker) is found again by :func:`auto_renditions.tasks.sweep`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

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


def _options() -> dict:
    conf = get_settings()
    options = {"group": GROUP, "timeout": conf.TASK_TIMEOUT}
    if conf.Q_CLUSTER:
        options["cluster"] = conf.Q_CLUSTER
    return options


def _enqueue(tasks: Iterable[tuple[str, object, str]]) -> None:
    """``async_task`` for each ``(function, argument, task name)``, in one transaction.

    With django-q2's ORM broker that is one commit for all tasks instead of one per task (measured: the publish
    of a 10-image post 0.62x as long, docs/BENCHMARKS.md), and the broker does not call
    ``close_old_connections()``, which it does outside a transaction: with ``CONN_MAX_AGE = 0`` that closed the
    editor's database connection in the middle of the request. Other brokers are unaffected.
    """
    from django_q.tasks import async_task

    with transaction.atomic():
        for func, argument, name in tasks:
            async_task(func, argument, task_name=name, **_options())


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
