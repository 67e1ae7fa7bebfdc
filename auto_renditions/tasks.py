"""What the django-q2 workers run. Every task is idempotent and reads the ledger when it runs."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterable
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone
from PIL import Image as PILImage
from wagtail.images.exceptions import InvalidFilterSpecError
from wagtail.images.models import Image, Rendition

from . import cleanup, generation, ledger, page_specs, preview, queue, signals
from .conf import get_settings
from .models import Claim, ClaimedRendition, Failure, PendingDeletion, QueuedImage

logger = logging.getLogger(__name__)

#: Errors that no retry can mend: a spec Wagtail refuses for this image (e.g. a raster format for an SVG), or
#: an original over Pillow's MAX_IMAGE_PIXELS. Anything else (a storage outage, a file being replaced) is retried.
PERMANENT_ERRORS: tuple[type[Exception], ...] = (InvalidFilterSpecError, PILImage.DecompressionBombError)

#: How often one task goes round when new work for its image arrives while it generates.
MAX_ROUNDS = 5


def generate_image_renditions(image_id: int) -> str:
    """Make every claimed, missing rendition of one image with one read of its original.

    Holds the image's lease while it works, so a duplicate task (or a second worker host) leaves it alone.
    """
    token = _acquire_lease(image_id)
    if token is None:
        return f"image {image_id}: another worker holds the lease"
    made: set[str] = set()
    for _ in range(MAX_ROUNDS):
        image = Image.objects.filter(pk=image_id).first()
        if image is None:
            return f"image {image_id}: deleted"
        specs = ledger.missing({(image_id, spec) for spec in ledger.claimed_keys(image_id)})
        made_now = _render(image, {spec for _, spec in specs}) if specs else set()
        made |= made_now
        token = _finish(image_id, token, made, source=(image.file.name, image.file_hash), made_now=made_now)
        if token is None:
            break
    return f"image {image_id}: made {len(made)} rendition(s)"


def enqueue_generation_tasks(image_ids: list[int]) -> str:
    """Queue one generation task per image: a large publish hands this to a worker (``queue.FAN_OUT_ABOVE``)."""
    queue.enqueue_generation(image_ids)
    return f"queued {len(image_ids)} image task(s)"


def sync_posts(post_ids: list[int]) -> str:
    """Sync posts whose sync failed in the editor's request (``signal_handlers.sync_or_defer``)."""
    change = ledger.sync_posts(post_ids)
    return f"posts {post_ids}: {len(change.added)} claim(s) added, {len(change.removed)} removed"


def _acquire_lease(image_id: int) -> object | None:
    """Take the image's lease; ``None`` if a live lease is held by another worker."""
    now = timezone.now()
    until = now + timedelta(seconds=get_settings().TASK_TIMEOUT + 60)
    if not Image.objects.filter(pk=image_id).exists():
        QueuedImage.objects.filter(image_id=image_id).delete()  # queued while the image was being deleted
        return None
    try:
        QueuedImage.objects.get_or_create(image_id=image_id)  # a duplicate or re-queued task finds it gone
    except IntegrityError:  # the image was deleted meanwhile
        return None
    free = Q(leased_until__isnull=True) | Q(leased_until__lt=now)
    if not QueuedImage.objects.filter(free, image_id=image_id).update(leased_until=until):
        return None
    return QueuedImage.objects.filter(image_id=image_id).values_list("token", flat=True).first()


def _finish(
    image_id: int, token: object, made: set[str], *, source: tuple[str, str], made_now: set[str]
) -> object | None:
    """Drop the queue entry if nothing new was queued meanwhile; else return the new token for another round.

    Renditions made for a spec that lost its claim while we worked are handed to deletion; renditions made
    from a file that was replaced while we worked are stale and deleted at once (and made again next round).
    """
    with transaction.atomic():
        ledger.lock_images([image_id])
        current = Image.objects.filter(pk=image_id).values_list("file", "file_hash").first()
        if current is None:
            return None  # the image was deleted: its renditions and queue entry went with it
        # Not the name alone: Wagtail's edit form deletes a replaced original, so a second replacement may be
        # stored under the first one's name. Its content hash is written in the same row update as the name (a
        # hash filled in later for the same content only costs one more round).
        if current != source:
            cleanup.delete_renditions(Rendition.objects.filter(image_id=image_id, filter_spec__in=made_now))
            ledger.mark_queued([image_id])
            return QueuedImage.objects.filter(image_id=image_id).values_list("token", flat=True).first()
        unclaimed = made - ledger.claimed_keys(image_id)
        ledger.mark_released({(image_id, spec) for spec in unclaimed})
        if QueuedImage.objects.filter(image_id=image_id, token=token).delete()[0]:
            if unclaimed and get_settings().DELETE_GRACE_SECONDS <= 0:
                transaction.on_commit(lambda: queue.enqueue_deletion([image_id]))
            return None
        return QueuedImage.objects.filter(image_id=image_id).values_list("token", flat=True).first()


def _render(image: Image, specs: set[str]) -> set[str]:
    """Generate ``specs`` through Wagtail's batch API; on error, spec by spec, recording failures."""
    image.prefetched_renditions = list(image.renditions.all())  # the database, not a stale per-process cache
    ordered = sorted(specs)
    errors: dict[str, str] = {}
    permanent: set[str] = set()
    started = timezone.now()
    try:
        generation.render(image, ordered)  # one read, one decode, one resize per size
        made = set(ordered)
    except Exception:  # noqa: BLE001 - one broken original must not stop the worker
        if not Image.objects.filter(pk=image.pk).exists():
            cleanup.delete_stray_files(image, since=started)  # deleted while we rendered: the rows failed
            return set()
        made = set()
        for spec in ordered:
            try:
                image.get_rendition(spec)
                made.add(spec)
            except Exception as error:  # noqa: BLE001
                errors[spec] = f"{type(error).__name__}: {error}"
                if isinstance(error, PERMANENT_ERRORS):
                    permanent.add(spec)
                logger.debug("rendition %s of image %s failed:\n%s", spec, image.pk, traceback.format_exc())
    if made:
        Failure.objects.filter(image=image, filter_spec__in=made).delete()
        signals.renditions_generated.send(sender=Image, image=image, filter_specs=made)
    if errors:
        _record_failures(image, errors, permanent)
        signals.renditions_failed.send(sender=Image, image=image, errors=errors)
    return made


def _record_failures(image: Image, errors: dict[str, str], permanent: set[str]) -> None:
    """Count an attempt per failed spec; an error that no retry can mend uses up all attempts at once."""
    now, max_attempts = timezone.now(), get_settings().MAX_ATTEMPTS
    for spec, error in errors.items():
        logger.warning("Could not make rendition %s of image %s: %s", spec, image.pk, error)
        failure, created = Failure.objects.get_or_create(
            image=image, filter_spec=spec, defaults={"error": error, "first_failed_at": now, "last_failed_at": now}
        )
        if not created:
            failure.attempts += 1
        if spec in permanent:
            failure.attempts = max(failure.attempts, max_attempts)
        failure.error, failure.last_failed_at = error, now
        failure.save(update_fields=["attempts", "error", "last_failed_at"])


def delete_due_renditions(image_ids: Iterable[int] | None = None) -> str:
    """Delete released renditions whose grace period is over and that nobody claimed again.

    Deleting the Rendition row lets Wagtail's own ``post_delete`` handlers remove the file on commit and purge
    the rendition cache.
    """
    now = timezone.now()
    due = PendingDeletion.objects.filter(due_at__lte=now)
    if image_ids is not None:
        due = due.filter(image_id__in=list(image_ids))
    deleted = 0
    for image_id in sorted(set(due.values_list("image_id", flat=True))):
        deleted += _delete_for_image(image_id, now)
    return f"deleted {deleted} rendition(s)"


def _delete_for_image(image_id: int, now) -> int:
    keep = set(get_settings().KEEP_FILTER_SPECS)
    with transaction.atomic():
        ledger.lock_images([image_id])  # first statement: see the latest claims, block new ones until commit
        pending = list(PendingDeletion.objects.filter(image_id=image_id, due_at__lte=now))
        specs = {p.filter_spec for p in pending}
        doomed = specs - ledger.claimed_keys(image_id) - (keep - page_specs.claimable_specs())
        count = 0
        if doomed:
            count = cleanup.delete_renditions(Rendition.objects.filter(image_id=image_id, filter_spec__in=doomed))
            signals.renditions_deleted.send(sender=Rendition, image_id=image_id, filter_specs=doomed)
        PendingDeletion.objects.filter(pk__in=[p.pk for p in pending]).delete()
    return count


def sweep() -> str:
    """Housekeeping, run by a django-q2 schedule: due deletions, due retries, and work whose task was lost."""
    _release_stale_claims()
    preview.release_drafts(expired=True)  # a draft never published leaves nothing behind
    deleted = delete_due_renditions()
    cleanup.delete_files()  # files whose deletion failed or never ran (a storage outage, a killed worker)
    lost = set(QueuedImage.objects.filter(leased_until__lt=timezone.now()).values_list("image_id", flat=True))
    wanted = _due_retries()
    if _broker_idle():
        # Nothing waits in the broker, so queue entries without a lease lost their task (a broker restart),
        # and claims whose rendition is missing with nothing queued (deleted behind our back) get one.
        lost |= set(QueuedImage.objects.filter(leased_until__isnull=True).values_list("image_id", flat=True))
        wanted |= _images_with_missing_renditions()
    with transaction.atomic():
        ledger.lock_images(lost | wanted)
        QueuedImage.objects.filter(image_id__in=lost).update(leased_until=None)
        new = ledger.mark_queued(wanted - lost)
    queue.enqueue_generation(lost | new)
    return f"{deleted}; re-queued {len(lost)} lost and {len(new)} new image task(s)"


def _release_stale_claims() -> None:
    """Claims that outlived their post or image (written while another editor deleted it) are released; other
    rows of a deleted image are removed."""
    from cast.models import Post

    holders = set(Claim.objects.values_list("post_id", flat=True).distinct())
    stale = holders - set(Post.objects.live().filter(pk__in=holders).values_list("pk", flat=True))
    if stale:
        ledger.sync_posts(stale)  # not release: one may have been published again since we looked
    gone = ~Exists(Image.objects.filter(pk=OuterRef("image_id")))
    for model in (Claim, QueuedImage, PendingDeletion, Failure):
        model.objects.filter(gone).delete()


def _due_retries() -> set[int]:
    """Images with a failed rendition that may be tried again now (back-off over, attempts left)."""
    retryable = Failure.objects.filter(attempts__lt=get_settings().MAX_ATTEMPTS).exclude(
        filter_spec=ledger.WHOLE_IMAGE
    )
    image_ids = set(retryable.values_list("image_id", flat=True))
    claimed = ClaimedRendition.objects.filter(image_id__in=image_ids).values_list("image_id", "filter_spec")
    return {image_id for image_id, _ in ledger.missing(set(claimed))}


def _broker_idle() -> bool:
    from django_q.brokers import get_broker

    try:
        return get_broker().queue_size() == 0
    except Exception:  # noqa: BLE001 - a broker that cannot tell is treated as busy
        return False


def _images_with_missing_renditions() -> set[int]:
    has_rendition = Rendition.objects.filter(image_id=OuterRef("image_id"), filter_spec=OuterRef("filter_spec"))
    candidates = ClaimedRendition.objects.filter(~Exists(has_rendition)).values_list("image_id", "filter_spec")
    return {image_id for image_id, _ in ledger.missing(set(candidates))}
