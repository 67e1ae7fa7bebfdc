"""The ownership ledger: claims written in the caller's transaction, under a per-image lock.

Every transaction that adds or removes a claim, or deletes a released rendition, first locks the rows of
:class:`~auto_renditions.models.ImageLock` for the images it touches (:func:`lock_images`). That makes
"is this rendition still claimed?" and "does this rendition exist?" stable for the rest of the transaction:

- a claim that commits before a deletion takes the lock is seen by the deletion, which then keeps the rendition;
- a deletion that commits first is seen by the claim, which then finds the rendition missing and queues it.

So no interleaving leaves a live post with a missing rendition and nothing queued to make it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import IntegrityError, connection, models, transaction
from django.db.models import F, Lookup, Prefetch, Q, Value
from django.utils import timezone
from wagtail.images.models import Rendition

from . import planning, queue, signals
from .conf import get_settings
from .models import Claim, Failure, ImageLock, PendingDeletion, QueuedImage
from .planning import Key

logger = logging.getLogger(__name__)

#: ``filter_spec`` of a :class:`Failure` that is about the whole image (it could not be planned at all).
WHOLE_IMAGE = "*"


@dataclass
class LedgerChange:
    """What one ledger transaction did; handed to :mod:`auto_renditions.queue` to run on commit."""

    added: set[Key] = field(default_factory=set)
    removed: set[Key] = field(default_factory=set)
    released: set[Key] = field(default_factory=set)
    queued_images: set[int] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.released or self.queued_images)


def lock_images(image_ids: Iterable[int]) -> None:
    """Lock the given images for the rest of the current transaction (call inside ``atomic``).

    PostgreSQL: row locks in ascending id order (no deadlock between two lockers of overlapping sets), taken by
    one upsert (a no-op update of an unchanged key is a HOT update: no index entry, no bloat to speak of).
    SQLite: the insert takes the database write lock, which serialises all writers; it must be the first
    statement of a transaction that has not written yet, so that later reads see the latest commit.
    """
    ids = sorted(set(image_ids))
    if not ids:
        return
    if connection.vendor == "postgresql":
        # A new row is ours until commit, an existing one is row-locked by the update: one round trip, not two.
        table, column = (connection.ops.quote_name(n) for n in (ImageLock._meta.db_table, "image_id"))
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} ({column}) SELECT unnest(%s::bigint[]) "
                f"ON CONFLICT ({column}) DO UPDATE SET {column} = EXCLUDED.{column}",
                [ids],
            )
        return
    insert_new(ImageLock, ("image_id",), [(i,) for i in ids])
    if connection.features.has_select_for_update:
        list(
            ImageLock.objects.select_for_update().filter(among("image_id", ids)).order_by("image_id").values_list("pk")
        )


class _AnyOf(Lookup):
    """``column = ANY(array)``: PostgreSQL gets the ids as one parameter. Building and sending an ``IN`` list of
    100 ids costs Django and psycopg about half a millisecond more per query (``benchmarks/planning_cost.py``)."""

    lookup_name = "any_of"  # used as an expression, never registered on a field
    prepare_rhs = False

    def as_sql(self, compiler, connection):
        lhs, lhs_params = self.process_lhs(compiler, connection)
        return f"{lhs} = ANY(%s)", [*lhs_params, self.rhs]


def among(field_name: str, values: Iterable[int]) -> Q | Lookup:
    """A filter ``field_name IN values`` for integer ids, as ``= ANY(array)`` on PostgreSQL."""
    values = sorted(values)
    if connection.vendor == "postgresql":
        return _AnyOf(F(field_name), values)
    return Q(**{f"{field_name}__in": values})


def lock_posts(post_ids: Iterable[int]) -> None:
    """Lock the posts' rows (PostgreSQL; SQLite's write lock covers it), so their requirement cannot change
    under us: a publish holds the same row while it writes the post and its media relations.

    Lock order everywhere: posts, then images.
    """
    from cast.models import Post

    ids = sorted(set(post_ids))
    if ids and connection.features.has_select_for_update:
        list(Post.objects.select_for_update(of=("self",)).filter(pk__in=ids).order_by("pk").values_list("pk"))


def _live_posts(post_ids: Collection[int]) -> list:
    """The live posts with their images, loading only what planning reads (a post may show hundreds)."""
    from cast.models import Post

    images = Post._meta.get_field("images").related_model.objects.only("pk", "file", "width", "height")
    return list(
        Post.objects.live()
        .filter(pk__in=post_ids)
        .only("pk")  # get_all_images() reads the relations only; a page row has dozens of columns
        .prefetch_related(Prefetch("images", queryset=images), Prefetch("galleries__images", queryset=images))
    )


def requirement_for_posts(post_ids: Collection[int]) -> dict[int, planning.Requirement]:
    """Plan every live post among ``post_ids``; posts that are not live (or gone) require nothing."""
    requirements = {post_id: planning.Requirement() for post_id in post_ids}
    for post in _live_posts(post_ids):
        requirements[post.pk] = planning.required_renditions(post.get_all_images())
    return requirements


def sync_posts(post_ids: Iterable[int]) -> LedgerChange:
    """Make the claims of these posts equal their current requirement; queue what that needs on commit."""
    post_ids = set(post_ids)
    if not post_ids:
        return LedgerChange()
    with transaction.atomic():
        lock_posts(post_ids)
        requirements = requirement_for_posts(post_ids)  # planned under the post lock: current, not stale
        return _apply(requirements)


def release_posts(post_ids: Iterable[int]) -> LedgerChange:
    """Drop every claim of these posts (unpublished or being deleted)."""
    post_ids = set(post_ids)
    if not post_ids:
        return LedgerChange()
    with transaction.atomic():
        lock_posts(post_ids)
        return _apply({post_id: planning.Requirement() for post_id in post_ids})


def _claims_of(post_ids: Collection[int]) -> dict[Key, list[tuple[int, int]]]:
    """``{(image_id, spec): [(claim_pk, post_id), ...]}`` for the given posts."""
    claims: dict[Key, list[tuple[int, int]]] = {}
    rows = Claim.objects.filter(post_id__in=post_ids).values_list("pk", "post_id", "image_id", "filter_spec")
    for pk, post_id, image_id, spec in rows:
        claims.setdefault((image_id, spec), []).append((pk, post_id))
    return claims


def _apply(requirements: dict[int, planning.Requirement]) -> LedgerChange:
    post_ids = set(requirements)
    required_images = set().union(*(r.image_ids for r in requirements.values()))
    claimed_before = set(Claim.objects.filter(post_id__in=post_ids).values_list("image_id", flat=True).distinct())
    lock_images(required_images | claimed_before)
    claims = _claims_of(post_ids)  # re-read under the lock
    late = {image_id for image_id, _ in claims} - required_images - claimed_before
    lock_images(late)  # a concurrent transaction claimed an image we had not locked yet (rare)
    locked = required_images | claimed_before | late

    change = LedgerChange()
    to_create: list[tuple[int, int, str]] = []
    to_delete: list[int] = []
    for post_id, requirement in requirements.items():
        claimed = {key for key, holders in claims.items() if any(p == post_id for _, p in holders)}
        delta = planning.diff(claimed, requirement.keys)
        to_create += [(post_id, i, s) for i, s in sorted(delta.add)]
        to_delete += [pk for key in delta.remove for pk, p in claims[key] if p == post_id]
        change.added |= delta.add
        change.removed |= delta.remove
    insert_claims(to_create)
    if to_delete:
        Claim.objects.filter(pk__in=to_delete).delete()

    state = ImageState.read(locked)
    _cancel_pending_deletions(change.added, state)
    change.released = change.removed - _still_claimed(change.removed)
    mark_released(change.released, state)
    required = set().union(*(r.keys for r in requirements.values()))
    change.queued_images = queue_missing(required, state)
    _record_unplannable(requirements.values())
    if change.added or change.removed:
        signals.claims_changed.send(sender=LedgerChange, change=change)
    queue.dispatch(change)
    return change


def insert_claims(rows: list[tuple[int, int, str]]) -> None:
    """Insert new ``(post_id, image_id, filter_spec)`` claims (call under the images' lock).

    The caller read the posts' claims under the lock, so none of these exists and a plain INSERT will do:
    ``ON CONFLICT`` costs PostgreSQL a speculative insertion per row, about 40 % of a first publish's claim
    INSERT. Should one exist after all, the savepoint rolls the INSERT back and it is repeated skipping duplicates,
    so a publish never fails over it.
    """
    if not rows:
        return
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    fields, rows = ("post", "image", "filter_spec", "created_at"), [(*row, now) for row in rows]
    try:
        with transaction.atomic():
            insert_new(Claim, fields, rows, skip_existing=False)
    except IntegrityError:
        logger.warning("A claim to insert existed already; inserting the others (%d rows)", len(rows))
        insert_new(Claim, fields, rows)


def insert_new(
    model: type[models.Model], field_names: Sequence[str], rows: list[tuple], *, skip_existing: bool = True
) -> None:
    """INSERT ``rows`` (values ready for the database) in one statement, by default skipping those that exist.

    A first publish of a 100-image post writes about 1,000 claims, 100 lock and 100 queue rows; ``bulk_create``
    spent most of the publish's ledger time building model instances for them (``benchmarks/planning_cost.py``).
    """
    if not rows:
        return
    fields = [model._meta.get_field(name) for name in field_names]
    if connection.vendor not in {"sqlite", "postgresql"}:
        objects = [model(**{f.attname: value for f, value in zip(fields, row, strict=True)}) for row in rows]
        model.objects.bulk_create(objects, ignore_conflicts=skip_existing)
        return
    quote = connection.ops.quote_name
    into = f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(quote(f.column) for f in fields)})"
    on_conflict = " ON CONFLICT DO NOTHING" if skip_existing else ""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            sql, params = _unnest_insert(into, fields, rows)
            cursor.execute(sql + on_conflict, params)
        else:
            values = ", ".join(["%s"] * len(fields))
            cursor.executemany(f"{into} VALUES ({values}){on_conflict}", rows)


def _unnest_insert(into: str, fields: list, rows: list[tuple]) -> tuple[str, list]:
    """PostgreSQL: one array per column, unnested into rows; a column with one value for all rows (the post, the
    time) is sent once instead."""
    items, scalars, arrays, array_params = [], [], [], []
    for n, (model_field, column) in enumerate(zip(fields, zip(*rows, strict=True), strict=True)):
        db_type = model_field.db_type(connection)
        if len(set(column)) == 1:
            items.append(f"%s::{db_type}")
            scalars.append(column[0])
        else:
            items.append(f"c{n}")
            arrays.append((f"c{n}", f"%s::{db_type}[]"))
            array_params.append(list(column))
    select = f"SELECT {', '.join(items)}"
    if arrays:
        names, casts = (", ".join(part) for part in zip(*arrays, strict=True))
        select += f" FROM unnest({casts}) AS u ({names})"
    return f"{into} {select}", scalars + array_params


def _still_claimed(keys: Collection[Key]) -> set[Key]:
    if not keys:
        return set()
    images, specs = {i for i, _ in keys}, {s for _, s in keys}
    rows = Claim.objects.filter(among("image_id", images), filter_spec__in=specs).values_list(
        "image_id", "filter_spec"
    )
    return set(rows) & set(keys)


def _cancel_pending_deletions(keys: Collection[Key], state: ImageState) -> None:
    """A re-claim within the grace period keeps the rendition."""
    doomed = [state.pending[key] for key in keys if key in state.pending]
    if doomed:
        PendingDeletion.objects.filter(pk__in=doomed).delete()


def mark_released(keys: Collection[Key], state: ImageState | None = None) -> None:
    """Schedule the deletion of renditions that lost their last claim (call under the images' lock)."""
    if not keys:
        return
    now = timezone.now()
    due = now + timedelta(seconds=get_settings().DELETE_GRACE_SECONDS)
    PendingDeletion.objects.bulk_create(
        [PendingDeletion(image_id=i, filter_spec=s, released_at=now, due_at=due) for i, s in keys],
        ignore_conflicts=True,
    )
    # A failure of a rendition nobody needs any more is nothing to retry or to show.
    state = state or ImageState.read({i for i, _ in keys})
    stale = [key for key in keys if key in state.failures]
    if stale:
        query = Q()
        for image_id, spec in stale:
            query |= Q(image_id=image_id, filter_spec=spec)
        Failure.objects.filter(query).delete()


@dataclass
class ImageState:
    """What the ledger needs to know about some images besides their claims, read in one query under their lock:
    a publish pays a round trip and a query build per statement, so four reads become one."""

    renditions: set[Key] = field(default_factory=set)
    #: ``(image_id, spec) -> (attempts, last_failed_at)``
    failures: dict[Key, tuple[int, datetime]] = field(default_factory=dict)
    #: ``(image_id, spec) -> PendingDeletion pk``
    pending: dict[Key, int] = field(default_factory=dict)
    queued: set[int] = field(default_factory=set)

    @classmethod
    def read(cls, image_ids: Collection[int]) -> ImageState:
        state = cls()
        if not image_ids:
            return state
        no_number = Value(None, output_field=models.BigIntegerField())
        no_time = Value(None, output_field=models.DateTimeField())
        ids = among("image_id", image_ids)
        parts = [
            Rendition.objects.filter(ids).values_list(Value("r"), "image_id", "filter_spec", no_number, no_time),
            Failure.objects.filter(ids).values_list(
                Value("f"), "image_id", "filter_spec", "attempts", "last_failed_at"
            ),
            PendingDeletion.objects.filter(ids).values_list(Value("p"), "image_id", "filter_spec", "pk", no_time),
            QueuedImage.objects.filter(ids).values_list(Value("q"), "image_id", Value(""), no_number, no_time),
        ]
        parts = [part.order_by() for part in parts]  # a compound statement takes no ORDER BY in its parts
        for kind, image_id, spec, number, time in parts[0].union(*parts[1:], all=True):
            if kind == "r":
                state.renditions.add((image_id, spec))
            elif kind == "f":
                state.failures[image_id, spec] = (number, time)
            elif kind == "p":
                state.pending[image_id, spec] = number
            else:
                state.queued.add(image_id)
        return state

    def blocked(self, now: datetime | None = None) -> set[Key]:
        """Specs not to try now: failures past MAX_ATTEMPTS, or whose retry back-off has not run out yet."""
        conf, now = get_settings(), now or timezone.now()
        return {
            key
            for key, (attempts, last_failed_at) in self.failures.items()
            if attempts >= conf.MAX_ATTEMPTS
            or last_failed_at + timedelta(seconds=conf.RETRY_BACKOFF_SECONDS * 2 ** (attempts - 1)) > now
        }

    def missing(self, required: Collection[Key]) -> set[Key]:
        """Required renditions that do not exist and may be tried now."""
        blocked = self.blocked()
        return {
            key
            for key in set(required) - self.renditions
            if key not in blocked and (key[0], WHOLE_IMAGE) not in blocked
        }


def missing(required: Collection[Key]) -> set[Key]:
    """Required renditions that do not exist and may be tried now."""
    if not required:
        return set()
    return ImageState.read({i for i, _ in required}).missing(required)


def queue_missing(required: Collection[Key], state: ImageState | None = None) -> set[int]:
    """Mark images with missing renditions as queued; return those that need a new task (call under lock).

    An image already queued only gets a new token: its task, queued or running, picks the new work up.
    """
    if not required:
        return set()
    state = state or ImageState.read({i for i, _ in required})
    return mark_queued({image_id for image_id, _ in state.missing(required)}, already_queued=state.queued)


def mark_queued(image_ids: Collection[int], *, already_queued: Collection[int] | None = None) -> set[int]:
    if not image_ids:
        return set()
    if already_queued is None:
        already_queued = QueuedImage.objects.filter(among("image_id", image_ids)).values_list("image_id", flat=True)
    already = set(image_ids) & set(already_queued)
    if already:
        # One token for all: each row only needs to differ from what its running task read.
        QueuedImage.objects.filter(among("image_id", already)).update(token=uuid.uuid4())
    new = set(image_ids) - already
    token = QueuedImage._meta.get_field("token").get_db_prep_value(uuid.uuid4(), connection)
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    insert_new(QueuedImage, ("image", "token", "queued_at"), [(i, token, now) for i in sorted(new)])
    return new


def _record_unplannable(requirements: Iterable[planning.Requirement]) -> None:
    for requirement in requirements:
        for item in requirement.unplannable:
            logger.warning("Cannot plan renditions for image %s: %s", item.image_id, item.error)
            Failure.objects.update_or_create(
                image_id=item.image_id,
                filter_spec=WHOLE_IMAGE,
                defaults={
                    "error": item.error,
                    "attempts": get_settings().MAX_ATTEMPTS,
                    "last_failed_at": timezone.now(),
                },
            )


def posts_using_images(image_ids: Collection[int]) -> set[int]:
    """Live posts showing any of these images, directly or through a gallery."""
    from cast.models import Post

    if not image_ids:
        return set()
    query = Q(images__in=image_ids) | Q(galleries__images__in=image_ids)
    return set(Post.objects.live().filter(query).values_list("pk", flat=True).distinct())


def claimed_keys(image_id: int) -> set[str]:
    return set(Claim.objects.filter(image_id=image_id).values_list("filter_spec", flat=True).distinct())
