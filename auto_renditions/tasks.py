"""What the django-q2 workers run. Every task is idempotent and reads the ledger when it runs."""

from __future__ import annotations

import logging
import random
import threading
import time
import traceback
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import DatabaseError, IntegrityError, OperationalError, connection, transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone
from django_q.exceptions import TimeoutException
from PIL import Image as PILImage
from wagtail.images.exceptions import InvalidFilterSpecError
from wagtail.images.models import Image, Rendition

from . import cleanup, compat, generation, ledger, page_specs, preview, queue, signals
from .conf import get_settings
from .models import Claim, ClaimedRendition, Failure, PendingDeletion, QueuedImage

logger = logging.getLogger(__name__)

#: Errors that no retry can mend besides a spec Wagtail refuses for this image (``compat.refused_by_wagtail``):
#: an original over Pillow's MAX_IMAGE_PIXELS. Anything else (a storage outage, a file being replaced) is retried.
PERMANENT_ERRORS: tuple[type[Exception], ...] = (InvalidFilterSpecError, PILImage.DecompressionBombError)

#: How often one task goes round when new work for its image arrives while it generates.
MAX_ROUNDS = 5

#: Seconds an image's lease lasts without renewal. A running task renews it every quarter of that (a heartbeat
#: thread), so a worker that was killed is taken over about this long after it died, not after TASK_TIMEOUT.
LEASE_SECONDS = 60

#: What an attempt that ended without a word is recorded as (SIGKILL, out of memory, a power cut).
DIED = "the worker stopped before it finished (killed, out of memory, or timed out)"


@dataclass(frozen=True)
class Lease:
    image_id: int
    holder: uuid.UUID
    token: uuid.UUID
    attempts: int


def lease_seconds() -> int:
    """A lease never needs to outlast the task: django-q2 stops it after TASK_TIMEOUT (and kills it 3 s later)."""
    return min(LEASE_SECONDS, get_settings().TASK_TIMEOUT + 10)


def generate_image_renditions(image_id: int) -> str:
    """Make every claimed, missing rendition of one image with one read of its original.

    Holds the image's lease while it works (renewed by a heartbeat), so a duplicate task (or a second worker
    host) leaves it alone. Taking the lease uses one of the image's ``MAX_ATTEMPTS``, whatever ends the task;
    a task that finds them used up records the missing renditions as failures instead of trying again.
    """
    lease = _acquire_lease(image_id)
    if lease is None:
        return f"image {image_id}: another worker holds the lease"
    if lease.attempts > get_settings().MAX_ATTEMPTS:
        with transaction.atomic():
            ledger.lock_images([image_id])
            given_up = _give_up(image_id, holder=lease.holder)
        return f"image {image_id}: gave up on {given_up} rendition(s) after {lease.attempts - 1} attempts"
    try:
        with Heartbeat(lease):
            return _generate(lease)
    except BaseException as error:  # a timeout is a SystemExit: count it and say why, then let django-q2 see it
        _stopped(lease, error)
        raise


def _generate(lease: Lease) -> str:
    image_id, token = lease.image_id, lease.token
    made: set[str] = set()
    for _ in range(MAX_ROUNDS):
        image = Image.objects.filter(pk=image_id).first()
        if image is None:
            return f"image {image_id}: deleted"
        specs = ledger.missing({(image_id, spec) for spec in ledger.claimed_keys(image_id)})
        made_now = _render(image, {spec for _, spec in specs}) if specs else set()
        made |= made_now
        next_token = _finish(image_id, token, made, source=(image.file.name, image.file_hash), made_now=made_now)
        if next_token is None:
            return f"image {image_id}: made {len(made)} rendition(s)"
        token = next_token
    with transaction.atomic():  # more work keeps arriving: hand it to a fresh task, with fresh attempts
        ledger.lock_images([image_id])
        if QueuedImage.objects.filter(image_id=image_id, leased_by=lease.holder).update(
            leased_until=None, leased_by=None, attempts=0, error=""
        ):
            transaction.on_commit(lambda: queue.enqueue_generation([image_id]))
    return f"image {image_id}: made {len(made)} rendition(s), more queued"


def enqueue_generation_tasks(image_ids: list[int]) -> str:
    """Queue one generation task per image: a large publish hands this to a worker (``queue.FAN_OUT_ABOVE``)."""
    queue.enqueue_generation(image_ids)
    return f"queued {len(image_ids)} image task(s)"


#: Attempts of a deferred sync that loses a deadlock, with a back-off starting at SYNC_BACKOFF_SECONDS: django-q2
#: does not retry a failed task on every broker (Redis), and the posts' claims would stay stale.
SYNC_ATTEMPTS = 5
SYNC_BACKOFF_SECONDS = 0.2


def sync_posts(post_ids: list[int]) -> str:
    """Sync posts whose sync failed in the editor's request (``signal_handlers.sync_or_defer``)."""
    for attempt in range(1, SYNC_ATTEMPTS + 1):
        try:
            change = ledger.sync_posts(post_ids)
            break
        except OperationalError as error:
            if attempt == SYNC_ATTEMPTS or not ledger.is_lock_conflict(error):
                raise
            logger.warning("syncing posts %s: %s; trying again (attempt %d)", post_ids, error, attempt + 1)
            time.sleep(SYNC_BACKOFF_SECONDS * 2 ** (attempt - 1) * random.uniform(1, 2))
    return f"posts {post_ids}: {len(change.added)} claim(s) added, {len(change.removed)} removed"


def _acquire_lease(image_id: int) -> Lease | None:
    """Take the image's lease and count the attempt in the same update; ``None`` if another task holds it."""
    now = timezone.now()
    if not Image.objects.filter(pk=image_id).exists():
        QueuedImage.objects.filter(image_id=image_id).delete()  # queued while the image was being deleted
        return None
    try:
        QueuedImage.objects.get_or_create(image_id=image_id)  # a duplicate or re-queued task finds it gone
    except IntegrityError:  # the image was deleted meanwhile
        return None
    holder = uuid.uuid4()
    free = Q(leased_until__isnull=True) | Q(leased_until__lt=now)
    taken = QueuedImage.objects.filter(free, image_id=image_id).update(
        leased_until=now + timedelta(seconds=lease_seconds()), leased_by=holder, attempts=F("attempts") + 1
    )
    if not taken:
        return None
    row = QueuedImage.objects.filter(image_id=image_id, leased_by=holder).values_list("token", "attempts").first()
    return Lease(image_id, holder, *row) if row else None


class Heartbeat:
    """Renews a lease from a thread while its task runs; stops when the lease is no longer this task's.

    Not inside a transaction (a test, a caller's ``atomic``): nobody else can see that lease before it commits.
    """

    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        self.seconds = lease_seconds()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Heartbeat:
        if not connection.in_atomic_block:
            self._thread = threading.Thread(target=self._run, name=f"lease-{self.lease.image_id}", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            # Not for long: a renewal that comes late matches no row once the task has returned its lease.
            self._thread.join(timeout=5)

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.seconds / 4):
                try:
                    renewed = QueuedImage.objects.filter(
                        image_id=self.lease.image_id, leased_by=self.lease.holder
                    ).update(leased_until=timezone.now() + timedelta(seconds=self.seconds))
                except DatabaseError as error:  # a dropped connection: try again with a new one next beat
                    logger.warning("Could not renew the lease of image %s: %s", self.lease.image_id, error)
                    connection.close()
                    continue
                if not renewed:
                    return  # returned, or taken over after the task stalled longer than a lease
        finally:
            connection.close()  # this thread's own connection


def _stopped(lease: Lease, error: BaseException) -> None:
    """The task ended with an exception: say why on its queue entry, and hand the image back to the sweep at
    once (or record its failures, if that was its last attempt). Best effort: the attempt is counted already."""
    reason = _reason(error)
    conf = get_settings()
    logger.warning(
        "Generating renditions of image %s stopped (attempt %s of %s): %s",
        lease.image_id,
        lease.attempts,
        conf.MAX_ATTEMPTS,
        reason,
    )
    try:
        if not connection.in_atomic_block:
            connection.close()  # it may be broken (a lost connection, a query cut off by the timeout)
        with transaction.atomic():
            ledger.lock_images([lease.image_id])
            mine = QueuedImage.objects.filter(image_id=lease.image_id, leased_by=lease.holder)
            if lease.attempts >= conf.MAX_ATTEMPTS:
                if mine.exists():
                    _give_up(lease.image_id, reason)
            else:
                mine.update(leased_until=timezone.now(), leased_by=None, error=reason)
    except Exception:  # noqa: BLE001 - the lease runs out by itself and the sweep takes it from there
        logger.warning("Could not record why image %s stopped", lease.image_id, exc_info=True)


def _reason(error: BaseException) -> str:
    if isinstance(error, TimeoutException):
        return f"timed out: {error}"
    if isinstance(error, DatabaseError):
        return f"lost the database connection ({type(error).__name__}: {error})".strip()
    return f"{type(error).__name__}: {error}"


def _give_up(image_id: int, reason: str = "", *, holder: uuid.UUID | None = None) -> int:
    """The image used up its attempts: its claimed, missing renditions become failures an operator sees
    (``status``, the admin report) and nothing queues them again until a retry (call under the image's lock)."""
    entry = QueuedImage.objects.filter(image_id=image_id)
    if holder is not None:
        entry = entry.filter(leased_by=holder)
    row = entry.values_list("attempts", "error").first()
    if row is None:
        return 0
    conf, now = get_settings(), timezone.now()
    attempts = min(row[0], conf.MAX_ATTEMPTS)
    message = f"{reason or row[1] or DIED} (gave up after {attempts} attempt(s))"
    claimed = ledger.claimed_keys(image_id)
    made = set(Rendition.objects.filter(image_id=image_id).values_list("filter_spec", flat=True))
    missing = sorted(claimed - made)
    Failure.objects.bulk_create(
        [
            Failure(
                image_id=image_id,
                filter_spec=spec,
                error=message,
                attempts=conf.MAX_ATTEMPTS,
                first_failed_at=now,
                last_failed_at=now,
            )
            for spec in missing
        ],
        update_conflicts=True,
        # MySQL's ON DUPLICATE KEY UPDATE names no conflict target (and must not be given one).
        unique_fields=["image", "filter_spec"] if connection.features.supports_update_conflicts_with_target else None,
        update_fields=["error", "attempts", "last_failed_at"],
    )
    entry.delete()
    logger.warning("Gave up on %s rendition(s) of image %s: %s", len(missing), image_id, message)
    if missing:
        errors = dict.fromkeys(missing, message)

        def announce() -> None:
            image = Image.objects.filter(pk=image_id).first()
            if image is not None:
                signals.renditions_failed.send(sender=Image, image=image, errors=errors)

        transaction.on_commit(announce)
    return len(missing)


def _finish(
    image_id: int, token: uuid.UUID, made: set[str], *, source: tuple[str, str], made_now: set[str]
) -> uuid.UUID | None:
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
    """Generate ``specs``; files written for rows that failed to insert (the image deleted meanwhile, a clash) are
    removed on the way out."""
    with cleanup.removing_files_without_rows(image):
        return _render_specs(image, specs)


def _render_specs(image: Image, specs: set[str]) -> set[str]:
    """Generate ``specs`` through Wagtail's batch API; on error, spec by spec, recording failures."""
    image.prefetched_renditions = list(image.renditions.all())  # the database, not a stale per-process cache
    ordered = sorted(specs)
    errors: dict[str, str] = {}
    permanent: set[str] = set()
    try:
        generation.render(image, ordered)  # one read, one decode, one resize per size
        made = set(ordered)
    except Exception:  # noqa: BLE001 - one broken original must not stop the worker
        if not Image.objects.filter(pk=image.pk).exists():
            return set()  # deleted while we rendered: the rows failed
        made = set()
        for spec in ordered:
            try:
                image.get_rendition(spec)
                made.add(spec)
            except Exception as error:  # noqa: BLE001
                errors[spec] = f"{type(error).__name__}: {error}"
                if isinstance(error, PERMANENT_ERRORS) or compat.refused_by_wagtail(image, error):
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


def _delete_for_image(image_id: int, now: datetime) -> int:
    keep = set(get_settings().KEEP_FILTER_SPECS)
    with transaction.atomic():
        ledger.lock_images([image_id])  # first statement: see the latest claims, block new ones until commit
        pending = list(PendingDeletion.objects.filter(image_id=image_id, due_at__lte=now))
        specs = {p.filter_spec for p in pending}
        doomed = specs - ledger.claimed_keys(image_id) - (keep - page_specs.claimable_specs())
        count = 0
        if doomed:
            count = cleanup.delete_renditions(Rendition.objects.filter(image_id=image_id, filter_spec__in=doomed))
        PendingDeletion.objects.filter(pk__in=[p.pk for p in pending]).delete()
    return count


def sweep() -> str:
    """Housekeeping, run by a django-q2 schedule: due deletions, due retries, and work whose task was lost."""
    _release_stale_claims()
    preview.release_drafts(expired=True)  # a draft never published leaves nothing behind
    deleted = delete_due_renditions()
    cleanup.delete_files()  # files whose deletion failed or never ran (a storage outage, a killed worker)
    now = timezone.now()
    lost = set(QueuedImage.objects.filter(leased_until__lt=now).values_list("image_id", flat=True))
    cleanup.note_lost_workers(lost)  # their files without rows are removed once old enough
    orphans = cleanup.sweep_orphans()
    wanted = _due_retries()
    if _broker_idle():
        # Nothing waits in the broker, so queue entries without a lease lost their task (a broker restart),
        # and claims whose rendition is missing with nothing queued (deleted behind our back) get one.
        lost |= set(QueuedImage.objects.filter(leased_until__isnull=True).values_list("image_id", flat=True))
        wanted |= _images_with_missing_renditions()
    with transaction.atomic():
        ledger.lock_images(lost | wanted)
        requeued, given_up = _take_back(lost, now)
        new = ledger.mark_queued(wanted - lost)
    queue.enqueue_generation(requeued | new)
    return (
        f"{deleted}; {orphans} orphan file(s) removed; re-queued {len(requeued)} lost and {len(new)} new image "
        f"task(s), gave up on {given_up} image(s)"
    )


def _take_back(lost: set[int], now: datetime) -> tuple[set[int], int]:
    """Free the leases read as lost that still are (a redelivered task may have taken one since: it keeps it);
    an image whose attempts are used up gets its failures recorded instead of another task."""
    free = Q(leased_until__isnull=True) | Q(leased_until__lt=now)
    requeued: set[int] = set()
    given_up = 0
    for image_id in sorted(lost):
        entry = QueuedImage.objects.filter(free, image_id=image_id)
        attempts = entry.values_list("attempts", flat=True).first()
        if attempts is None:
            continue
        if attempts >= get_settings().MAX_ATTEMPTS:
            given_up += bool(_give_up(image_id))
        elif entry.update(leased_until=None, leased_by=None):  # conditional: a lease taken meanwhile stays
            requeued.add(image_id)
    return requeued, given_up


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
