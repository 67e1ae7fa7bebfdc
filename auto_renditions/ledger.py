"""The ownership ledger: claims written in the caller's transaction, under a per-image lock.

Every transaction that adds or removes a claim, or deletes a released rendition, first locks the rows of
:class:`~auto_renditions.models.ImageLock` for the images it touches (:func:`lock_images`). That makes
"is this rendition still claimed?" and "does this rendition exist?" stable for the rest of the transaction:

- a claim that commits before a deletion takes the lock is seen by the deletion, which then keeps the rendition;
- a deletion that commits first is seen by the claim, which then finds the rendition missing and queues it.

So no interleaving leaves a live post with a missing rendition and nothing queued to make it.
"""

from __future__ import annotations

import functools
import json
import logging
import uuid
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import OperationalError, connection, models, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import F, Lookup, Q
from django.db.models.constants import OnConflict
from django.db.models.sql.compiler import SQLCompiler
from django.utils import timezone
from wagtail.images.models import Rendition

from . import page_specs, planning, queue, signals
from .conf import get_settings
from .models import Claim, DraftClaim, Failure, ImageLock, PendingDeletion, QueuedImage
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


class _HeldImageLocks:
    """A no-op on-commit callback that records which image locks its transaction took.

    Django drops on-commit callbacks with the savepoint they were registered in, exactly when the database
    releases the locks taken in it, and with the transaction: so the callbacks pending on the connection say
    which image locks the current transaction holds, without any bookkeeping of ours.
    """

    def __init__(self, image_ids: frozenset[int]) -> None:
        self.image_ids = image_ids

    def __call__(self) -> None:
        pass


def held_image_locks() -> set[int]:
    """The images whose lock the current transaction holds (taken by :func:`lock_images`)."""
    pending = transaction.get_connection().run_on_commit
    return {i for _, callback, *_ in pending if isinstance(callback, _HeldImageLocks) for i in callback.image_ids}


def lock_images(image_ids: Iterable[int]) -> None:
    """Lock the given images for the rest of the current transaction (call inside ``atomic``).

    PostgreSQL: row locks in ascending id order (no deadlock between two lockers of overlapping sets), taken by
    one upsert (a no-op update of an unchanged key is a HOT update: no index entry, no bloat to speak of).
    MySQL/MariaDB: the same with ``ON DUPLICATE KEY UPDATE``, which takes InnoDB's exclusive lock on an existing
    row (``INSERT IGNORE`` would take a shared one, which two transactions can hold at once).
    SQLite: the insert takes the database write lock, which serialises all writers; with ``transaction_mode``
    IMMEDIATE (check W003) a transaction holds it from its first statement, so what it read before is current.

    Images this transaction already holds are not locked again. Ascending order only protects transactions
    that lock once: one that holds image 5 and then asks for 3 and 5 waits for 3 while holding 5. Callers
    therefore collect a transaction's whole set first and lock it in one call.
    """
    ids = set(image_ids)
    if connection.in_atomic_block:
        held = held_image_locks()
        ids -= held
        if ids and held and min(ids) < max(held):
            logger.debug("image locks taken out of order: held up to %s, now %s", max(held), sorted(ids))
        if ids:
            transaction.on_commit(_HeldImageLocks(frozenset(ids)))
    ordered = sorted(ids)
    if not ordered:
        return
    if connection.vendor == "mysql":
        insert_rows(ImageLock, ("image_id",), [(i,) for i in ordered], update=("image_id",), unique=("image_id",))
        return
    if connection.vendor == "postgresql":
        # A new row is ours until commit, an existing one is row-locked by the update: one round trip, not two.
        table, column = (connection.ops.quote_name(n) for n in (ImageLock._meta.db_table, "image_id"))
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} ({column}) SELECT unnest(%s::bigint[]) "
                f"ON CONFLICT ({column}) DO UPDATE SET {column} = EXCLUDED.{column}",
                [int_array(ordered)],
            )
        return
    insert_rows(ImageLock, ("image_id",), [(i,) for i in ordered])


def int_array(values: Iterable[int]) -> str:
    """A PostgreSQL array literal of integers (``{1,2,3}``), for a ``%s::bigint[]`` parameter.

    psycopg (which Django drives with client-side binding) quotes a Python list element by element; the text
    takes it less than half as long for 100 ids, and a publish sends several such arrays.
    """
    return "{" + ",".join(str(int(value)) for value in values) + "}"


class _AnyOf(Lookup[int]):
    """``column = ANY(array)``: PostgreSQL gets the ids as one parameter. Building and sending an ``IN`` list of
    100 ids costs Django and psycopg about half a millisecond more per query (``benchmarks/planning_cost.py``)."""

    lookup_name = "any_of"  # used as an expression, never registered on a field
    prepare_rhs = False

    def as_sql(self, compiler: SQLCompiler, connection: BaseDatabaseWrapper) -> tuple[str, tuple[str | int, ...]]:
        lhs, lhs_params = self.process_lhs(compiler, connection)
        return f"{lhs} = ANY(%s::bigint[])", (*lhs_params, int_array(self.rhs))


def among(field_name: str, values: Iterable[int]) -> Q | Lookup[int]:
    """A filter ``field_name IN values`` for integer ids, as ``= ANY(array)`` on PostgreSQL."""
    values = sorted(values)
    if connection.vendor == "postgresql":
        return _AnyOf(F(field_name), values)
    return Q(**{f"{field_name}__in": values})


def _ids_in(column: str, ids: Iterable[int]) -> tuple[str, str]:
    """Raw SQL ``column IN ids`` with the ids as one parameter: an array on PostgreSQL, a JSON list elsewhere
    (``json_each`` on SQLite, ``JSON_TABLE`` on MySQL 8 / MariaDB 10.6+)."""
    ids = sorted(ids)
    if connection.vendor == "postgresql":
        return f"{column} = ANY(%s::bigint[])", int_array(ids)
    if connection.vendor == "mysql":
        rows = "JSON_TABLE(%s, '$[*]' COLUMNS (id BIGINT PATH '$')) AS j"
        return f"{column} IN (SELECT j.id FROM {rows})", json.dumps(ids)
    return f"{column} IN (SELECT value FROM json_each(%s))", json.dumps(ids)


def _converter(model_field: models.Field[Any, Any]) -> Callable[[Any], Any]:
    """Turn a raw value of ``model_field`` into what the ORM returns (SQLite hands datetimes over as text)."""
    col = model_field.get_col(model_field.model._meta.db_table)
    converters = connection.ops.get_db_converters(col) + col.get_db_converters(connection)

    def convert(value: Any) -> Any:
        for converter in converters:
            value = converter(value, col, connection)
        return value

    return convert


def lock_posts(post_ids: Iterable[int]) -> None:
    """Lock the posts' rows (PostgreSQL, MySQL/MariaDB; SQLite's write lock covers it), so their requirement
    cannot change under us: a publish holds the same row while it writes the post and its media relations.

    Lock order everywhere: posts, then images. Every transaction that writes a post's claims holds its lock.
    """
    from cast.models import Post

    ids = sorted(set(post_ids))
    if ids and connection.features.has_select_for_update:
        # MariaDB has no FOR UPDATE OF: it locks the joined page rows too, which a publish holds anyway.
        of = ("self",) if connection.features.has_select_for_update_of else ()
        list(Post.objects.select_for_update(of=of).filter(among("pk", ids)).order_by("pk").values_list("pk"))


def post_images(post_ids: Collection[int]) -> dict[int, list[tuple[str, planning.ImageRow]]]:
    """What django-cast's ``Post.get_all_images()`` yields for each live post among ``post_ids``: its regular
    images and the images of its galleries, as rows (a post may show hundreds).

    One hand-written query: this runs in every publish, and the ORM took four times as long to build and read
    the same two joins (``benchmarks/planning_cost.py``). ``tests/test_ledger.py`` keeps it equal to
    ``get_all_images()``.
    """
    found: dict[int, list[tuple[str, planning.ImageRow]]] = {post_id: [] for post_id in post_ids}
    if not post_ids:
        return found
    ids_sql, ids = _ids_in("x.post_id", post_ids)
    with connection.cursor() as cursor:
        cursor.execute(_post_images_sql().format(ids=ids_sql), [ids, ids])
        for image_type, post_id, image_id, width, height, file_name in cursor.fetchall():
            found[post_id].append((image_type, planning.ImageRow(image_id, width, height, file_name)))
    return found


@functools.cache
def _post_images_sql() -> str:
    from cast.models import Gallery, Post
    from wagtail.models import Page

    quote = connection.ops.quote_name

    def through(model: type[models.Model], name: str) -> tuple[str, str, str]:
        """A many-to-many field's table with its two columns."""
        m2m = model._meta.get_field(name)
        assert isinstance(m2m, models.ManyToManyField)
        return quote(m2m.m2m_db_table()), quote(m2m.m2m_column_name()), quote(m2m.m2m_reverse_name())

    regular, galleries, in_gallery = through(Post, "images"), through(Post, "galleries"), through(Gallery, "images")
    page, image = quote(Page._meta.db_table), quote(Post.images.field.related_model._meta.db_table)
    columns = "i.id, i.width, i.height, i.file"
    return (
        f"SELECT 'regular', x.post_id, {columns} FROM "
        f"(SELECT {regular[1]} AS post_id, {regular[2]} AS image_id FROM {regular[0]}) x"
        f" JOIN {page} p ON p.id = x.post_id AND p.live JOIN {image} i ON i.id = x.image_id WHERE {{ids}}"
        f" UNION ALL SELECT 'gallery', x.post_id, {columns} FROM "
        f"(SELECT {galleries[1]} AS post_id, {galleries[2]} AS gallery_id FROM {galleries[0]}) x"
        f" JOIN {page} p ON p.id = x.post_id AND p.live JOIN {in_gallery[0]} g ON g.{in_gallery[1]} = x.gallery_id"
        f" JOIN {image} i ON i.id = g.{in_gallery[2]} WHERE {{ids}}"
    )


def requirement_for_posts(
    post_ids: Collection[int], rows: dict[int, list[tuple[str, planning.ImageRow]]] | None = None
) -> dict[int, planning.Requirement]:
    """Plan every live post among ``post_ids`` (from ``rows``, :func:`post_images` read for them, if given); posts
    that are not live (or gone) require nothing."""
    requirements = {post_id: planning.Requirement() for post_id in post_ids}
    for post_id, images in (post_images(post_ids) if rows is None else rows).items():
        if images:
            requirements[post_id] = planning.required_renditions(images)
    for post_id, covers in page_specs.cover_requirements(post_ids).items():
        specs = requirements[post_id].specs  # the page renders its cover outside the body
        for image_id, cover in covers.items():
            specs[image_id] = specs.get(image_id, frozenset()) | cover
    return requirements


def sync_posts(post_ids: Iterable[int]) -> LedgerChange:
    """Make the claims of these posts equal their current requirement; queue what that needs on commit."""
    post_ids = set(post_ids)
    if not post_ids:
        return LedgerChange()
    with transaction.atomic():
        lock_posts(post_ids)
        return _sync_locked(post_ids)


def _sync_locked(post_ids: set[int], also_lock: Collection[int] = ()) -> LedgerChange:
    """Sync posts whose rows the caller locked: find their images, lock those (with the images their claims
    name, and ``also_lock``) in one call, then read the image rows and plan.

    The planning reads the images' sizes and files after their lock: an image replaced by a transaction that
    held the lock is planned with its new size (read before, the post kept the old size's claims). An image
    that joined a post's galleries between the two reads is left to the sync of that gallery change, which
    waits for this transaction's post lock.
    """
    claims = _claims_of(post_ids)  # current: only holders of the post lock change them
    shown = {row.pk for rows in post_images(post_ids).values() for _, row in rows}
    locked = shown | {i for c in claims.values() for i in c} | set(also_lock)
    lock_images(locked)
    rows = {
        post_id: [(kind, row) for kind, row in images if row.pk in locked]
        for post_id, images in post_images(post_ids).items()
    }
    return _apply(requirement_for_posts(post_ids, rows), claims)


def is_lock_conflict(error: BaseException) -> bool:
    """A deadlock or serialization failure (PostgreSQL), or a busy database (SQLite): trying again may succeed."""
    if not isinstance(error, OperationalError):
        return False
    sqlstate = getattr(error.__cause__, "sqlstate", None)
    return sqlstate in {"40P01", "40001"} or "database is locked" in str(error)


class _MorePosts(Exception):
    """Raised inside a savepoint to give its locks back: more posts show the image than were locked."""


def sync_image_posts(image_id: int, attempts: int = 3) -> set[int]:
    """Sync every live post showing ``image_id`` (its file was replaced), with the image locked; return them.

    The posts are found again under the image's lock: a publish that committed while we waited for it shows
    the image too. Its post must be locked before the image (lock order: posts, then images), so the
    savepoint gives every lock back and the sync starts again with the larger set of posts.
    """
    posts = posts_using_images([image_id])
    for _ in range(attempts):
        try:
            with transaction.atomic():
                lock_posts(posts)
                _sync_locked(posts, also_lock=[image_id])
                now = posts_using_images([image_id])
                if not now <= posts:
                    raise _MorePosts(now)
            return posts
        except _MorePosts as more:
            posts |= more.args[0]
    raise RuntimeError(f"posts showing image {image_id} kept changing; {sorted(posts)} not synced")


def release_posts(post_ids: Iterable[int]) -> LedgerChange:
    """Drop every claim of these posts (unpublished or being deleted)."""
    post_ids = set(post_ids)
    if not post_ids:
        return LedgerChange()
    with transaction.atomic():
        lock_posts(post_ids)
        return _apply({post_id: planning.Requirement() for post_id in post_ids})


def _claims_of(post_ids: Collection[int]) -> dict[int, dict[int, tuple[int, frozenset[str]]]]:
    """``{post_id: {image_id: (claim_pk, specs)}}`` for the given posts (hand-written like :func:`post_images`;
    the photos of one camera share one list of specs, parsed once)."""
    claims: dict[int, dict[int, tuple[int, frozenset[str]]]] = {}
    ids_sql, ids = _ids_in("post_id", post_ids)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id, post_id, image_id, filter_specs FROM {_table(Claim)} WHERE {ids_sql}", [ids])
        rows = cursor.fetchall()
    parsed: dict[str, frozenset[str]] = {}
    for pk, post_id, image_id, specs in rows:
        if specs not in parsed:
            parsed[specs] = frozenset(json.loads(specs))
        claims.setdefault(post_id, {})[image_id] = (pk, parsed[specs])
    return claims


def _table(model: type[models.Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _apply(
    requirements: dict[int, planning.Requirement],
    claims: dict[int, dict[int, tuple[int, frozenset[str]]]] | None = None,
) -> LedgerChange:
    # Read before the images are locked, and still current: only transactions that hold the post's lock (taken
    # by the caller) add or change its claims; an image deletion that removes one meanwhile changes nothing here.
    if claims is None:
        claims = _claims_of(set(requirements))
    locked = {i for r in requirements.values() for i in r.specs} | {i for c in claims.values() for i in c}
    lock_images(locked)

    rows = planning.claim_changes(
        {post_id: {i: specs for i, (_, specs) in c.items()} for post_id, c in claims.items()}, requirements
    )
    write_claims(rows.write)
    if rows.drop:
        Claim.objects.filter(pk__in=[claims[post_id][image_id][0] for post_id, image_id in rows.drop]).delete()

    change = LedgerChange(added=rows.add, removed=rows.remove)
    state = ImageState.read(locked)
    _cancel_pending_deletions(change.added, state)
    change.released = change.removed - _still_claimed(change.removed)
    mark_released(change.released, state)
    required = set().union(*(r.keys for r in requirements.values()))
    change.queued_images = queue_missing(required, state, new_work={image_id for image_id, _ in change.added})
    _record_unplannable(requirements.values())
    if change.added or change.removed:
        signals.claims_changed.send(sender=LedgerChange, change=change)
    queue.dispatch(change)
    return change


def write_claims(rows: Sequence[tuple[int, int, Sequence[str]]]) -> None:
    """Write ``(post_id, image_id, filter_specs)`` claims, new or with other specs (call under the images' lock).

    One statement for all: an upsert on ``(image, post)`` that keeps a changed claim's ``created_at``.
    """
    if not rows:
        return
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    as_json = functools.cache(lambda specs: json.dumps(sorted(specs)))  # one list of specs per camera, mostly
    values = [(post_id, image_id, as_json(tuple(specs)), now) for post_id, image_id, specs in rows]
    fields = ("post", "image", "filter_specs", "created_at")
    insert_rows(Claim, fields, values, update=("filter_specs",), unique=("image", "post"))


def write_claims_of(
    model: type[models.Model], post_id: int, specs: dict[int, frozenset[str]], **fields: object
) -> None:
    """Upsert one post's claim rows of ``model`` (``post``, ``image``, ``filter_specs`` and ``fields``)."""
    if not specs:
        return
    names = ("post", "image", "filter_specs", *fields)
    extra = [_concrete_field(model, n).get_db_prep_save(v, connection) for n, v in fields.items()]
    rows = [(post_id, i, json.dumps(sorted(s)), *extra) for i, s in sorted(specs.items())]
    insert_rows(model, names, rows, update=("filter_specs", *fields), unique=("image", "post"))


def insert_rows(
    model: type[models.Model],
    field_names: Sequence[str],
    rows: list[tuple],
    *,
    update: Sequence[str] = (),
    unique: Sequence[str] = (),
) -> None:
    """INSERT ``rows`` (values ready for the database) in one statement; a row that exists is skipped, or, with
    ``update`` and the ``unique`` fields that find it, gets those fields overwritten.

    A first publish of a 100-image post writes 100 claim, lock and queue rows each; ``bulk_create`` spent most
    of the publish's ledger time building model instances for them (``benchmarks/planning_cost.py``).
    """
    if not rows:
        return
    opts = model._meta
    fields = [_concrete_field(model, name) for name in field_names]
    quote = connection.ops.quote_name
    conflict = OnConflict.UPDATE if update else OnConflict.IGNORE
    # SQLite skips with INSERT OR IGNORE, MySQL with INSERT IGNORE; the others with a suffix.
    insert = connection.ops.insert_statement(on_conflict=conflict)
    into = f"{insert} {quote(opts.db_table)} ({', '.join(quote(_column(f)) for f in fields)})"
    on_conflict = connection.ops.on_conflict_suffix_sql(
        fields,
        conflict,
        [_concrete_field(model, n).column for n in update],
        [_concrete_field(model, n).column for n in unique],
    )
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            sql, params = _unnest_insert(into, fields, rows)
            cursor.execute(f"{sql} {on_conflict}", params)
        else:  # mysqlclient sends one multi-row INSERT for these; SQLite runs the prepared statement per row
            values = ", ".join(["%s"] * len(fields))
            cursor.executemany(f"{into} VALUES ({values}) {on_conflict}", rows)


def _concrete_field(model: type[models.Model], name: str) -> models.Field[Any, Any]:
    model_field = model._meta.get_field(name)
    assert isinstance(model_field, models.Field), f"{name} is a relation, not a column"
    return model_field


def _column(model_field: models.Field[Any, Any]) -> str:
    assert model_field.column is not None, f"{model_field.name} has no column"
    return model_field.column


def _unnest_insert(
    into: str, fields: Sequence[models.Field[Any, Any]], rows: Sequence[tuple[Any, ...]]
) -> tuple[str, list[Any]]:
    """PostgreSQL: one array per column, unnested into rows.

    A column with one value for all rows (the post, the time) is sent once; a text column with repeated values
    (the specs of a camera's photos) as its distinct values and one index per row: psycopg escapes the quotes of
    every JSON text in an array in Python, 6 ms for a 100-image post's specs.
    """
    items: list[str] = []
    item_params: list[Any] = []
    arrays: list[tuple[str, str]] = []
    array_params: list[str | list[Any]] = []
    for n, (model_field, column) in enumerate(zip(fields, zip(*rows, strict=True), strict=True)):
        db_type = model_field.db_type(connection)
        distinct = list(dict.fromkeys(column))
        if len(distinct) == 1:
            items.append(f"%s::{db_type}")
            item_params.append(distinct[0])
        elif isinstance(distinct[0], str) and len(distinct) < len(column):
            position = {value: k for k, value in enumerate(distinct, start=1)}
            items.append(f"(%s::{db_type}[])[c{n}]")
            item_params.append(distinct)
            arrays.append((f"c{n}", "%s::integer[]"))
            array_params.append(int_array(position[value] for value in column))
        else:
            items.append(f"c{n}")
            arrays.append((f"c{n}", f"%s::{db_type}[]"))
            is_int = isinstance(distinct[0], int) and not isinstance(distinct[0], bool)
            array_params.append(int_array(column) if is_int else list(column))
    select = f"SELECT {', '.join(items)}"
    if arrays:
        names, casts = (", ".join(part) for part in zip(*arrays, strict=True))
        select += f" FROM unnest({casts}) AS u ({names})"
    return f"{into} {select}", item_params + array_params


def _still_claimed(keys: Collection[Key]) -> set[Key]:
    if not keys:
        return set()
    rows = Claim.objects.filter(among("image_id", {i for i, _ in keys})).values_list("image_id", "filter_specs")
    return {(image_id, spec) for image_id, specs in rows for spec in specs} & set(keys)


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
        # Raw SQL: this runs in every publish, and Django spends longer compiling a four-part UNION than the
        # database spends answering it.
        ids_sql, ids = _ids_in("image_id", image_ids)
        sql = " UNION ALL ".join(
            [
                f"SELECT 'r', image_id, filter_spec, NULL, NULL FROM {_table(Rendition)} WHERE {ids_sql}",
                f"SELECT 'f', image_id, filter_spec, attempts, last_failed_at FROM {_table(Failure)} WHERE {ids_sql}",
                f"SELECT 'p', image_id, filter_spec, id, NULL FROM {_table(PendingDeletion)} WHERE {ids_sql}",
                f"SELECT 'q', image_id, '', NULL, NULL FROM {_table(QueuedImage)} WHERE {ids_sql}",
            ]
        )
        to_datetime = _converter(Failure._meta.get_field("last_failed_at"))
        with connection.cursor() as cursor:
            cursor.execute(sql, [ids] * 4)
            rows = cursor.fetchall()
        for kind, image_id, spec, number, time in rows:
            if kind == "r":
                state.renditions.add((image_id, spec))
            elif kind == "f":  # int(): MySQL types the union's column of int and bigint as DECIMAL
                state.failures[image_id, spec] = (int(number), to_datetime(time))
            elif kind == "p":
                state.pending[image_id, spec] = int(number)
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


def queue_missing(
    required: Collection[Key], state: ImageState | None = None, *, new_work: Collection[int] | None = None
) -> set[int]:
    """Mark images with missing renditions as queued; return those that need a new task (call under lock).

    An image already queued only gets a new token: its task, queued or running, picks the new work up. With
    ``new_work`` (the images whose claims this transaction added), only those get one: the task of an image
    whose claims did not grow has nothing to pick up (a re-publish of an unchanged post writes nothing here).
    """
    if not required:
        return set()
    state = state or ImageState.read({i for i, _ in required})
    missing = {image_id for image_id, _ in state.missing(required)}
    return mark_queued(missing, already_queued=state.queued, refresh=new_work)


def mark_queued(
    image_ids: Collection[int],
    *,
    already_queued: Collection[int] | None = None,
    refresh: Collection[int] | None = None,
) -> set[int]:
    """Queue these images: a row for each new one; a new token for those already queued (or those among
    ``refresh``). Returns the newly queued images."""
    if not image_ids:
        return set()
    if already_queued is None:
        already_queued = QueuedImage.objects.filter(among("image_id", image_ids)).values_list("image_id", flat=True)
    queued = set(image_ids) & set(already_queued)
    already = queued if refresh is None else queued & set(refresh)
    if already:
        # One token for all: each row only needs to differ from what its running task read.
        QueuedImage.objects.filter(among("image_id", already)).update(token=uuid.uuid4())
    new = set(image_ids) - queued
    token = QueuedImage._meta.get_field("token").get_db_prep_value(uuid.uuid4(), connection)
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    insert_rows(QueuedImage, ("image", "token", "queued_at"), [(i, token, now) for i in sorted(new)])
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
    """The specs of ``image_id`` that any post claims, live or as a previewed draft (:class:`DraftClaim`)."""
    rows = Claim.objects.filter(image_id=image_id).values_list("filter_specs", flat=True)
    drafts = DraftClaim.objects.filter(image_id=image_id).values_list("filter_specs", flat=True)
    return {spec for specs in (*rows, *drafts) for spec in specs}
