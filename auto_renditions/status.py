"""Read-only questions about the rendition state, shared by ``manage.py auto_renditions status`` and the admin."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.db.models import Count, Exists, OuterRef, Q, QuerySet
from django.utils import timezone
from wagtail.images.models import Rendition

from .conf import get_settings
from .models import ClaimedRendition, Failure, PendingDeletion, QueuedImage


@dataclass(frozen=True)
class PostProgress:
    post_id: int
    title: str
    required: int
    pending: int
    failed: int

    @property
    def ready(self) -> bool:
        return self.pending == 0


def _missing_claims() -> QuerySet[ClaimedRendition]:
    has_rendition = Rendition.objects.filter(image_id=OuterRef("image_id"), filter_spec=OuterRef("filter_spec"))
    has_failure = Failure.objects.filter(
        Q(filter_spec=OuterRef("filter_spec")) | Q(filter_spec="*"), image_id=OuterRef("image_id")
    )
    return ClaimedRendition.objects.annotate(made=Exists(has_rendition), failed=Exists(has_failure))


def post_progress(post_ids: Iterable[int] | QuerySet | None = None) -> list[PostProgress]:
    """Per live post (among ``post_ids``, ids or a subquery): claimed renditions, how many are not made yet, and
    how many of those failed."""
    claims = _missing_claims()
    if post_ids is not None:
        claims = claims.filter(post_id__in=post_ids if isinstance(post_ids, QuerySet) else list(post_ids))
    rows = (
        claims.values("post_id", "post__title")
        .annotate(
            required=Count("filter_spec"),
            pending=Count("filter_spec", filter=Q(made=False)),
            failed=Count("filter_spec", filter=Q(made=False, failed=True)),
        )
        .order_by("post_id")
    )
    return [PostProgress(r["post_id"], r["post__title"], r["required"], r["pending"], r["failed"]) for r in rows]


def posts_not_ready(post_ids: Iterable[int] | QuerySet | None = None) -> list[PostProgress]:
    return [p for p in post_progress(post_ids) if not p.ready]


def failures() -> QuerySet[Failure]:
    """Failed renditions, newest first (``image``, ``filter_spec``, ``error``, ``attempts``)."""
    # Without the file: an image with no usable size would make Django's ImageField open the original.
    return Failure.objects.select_related("image").defer("image__file").order_by("-last_failed_at")


def exhausted_failures() -> QuerySet[Failure]:
    return failures().filter(attempts__gte=get_settings().MAX_ATTEMPTS)


def pending_deletions() -> QuerySet[PendingDeletion]:
    return PendingDeletion.objects.select_related("image").defer("image__file").order_by("due_at")


def overdue_deletions() -> QuerySet[PendingDeletion]:
    return pending_deletions().filter(due_at__lte=timezone.now())


def queued_images() -> QuerySet[QueuedImage]:
    return QueuedImage.objects.order_by("queued_at")


def in_flight() -> QuerySet[QueuedImage]:
    return QueuedImage.objects.filter(leased_until__gt=timezone.now())


def broker_queue_size() -> int | None:
    """Tasks waiting in django-q2's broker (``None`` if the broker cannot tell)."""
    from django_q.brokers import get_broker

    try:
        return get_broker().queue_size()
    except Exception:  # noqa: BLE001
        return None
