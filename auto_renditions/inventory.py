"""Site-wide diff of what live posts require against what exists: the seed notebook as reusable queries.

Everything is bulk: one query for the live posts' images per 500 posts, one for the renditions, set arithmetic in
between.
*Obsolete* means a rendition of a post image (an image any post shows) that no live post requires and the
keep-list does not protect; renditions of images no post shows (covers, avatars, admin uploads) are left alone.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from django.db import transaction
from django.db.models import Q
from wagtail.images.models import Rendition

from . import cleanup, ledger, planning
from .conf import get_settings
from .models import Claim, PendingDeletion
from .planning import Key

#: Wraps a long iteration for a progress bar: ``wrap(items, total, description)``.
Wrap = Callable[[Iterable, int, str], Iterable]
RENDITION_FOLDER = "images"
BATCH = 200


def no_progress(items: Iterable, total: int, description: str) -> Iterable:
    return items


class RenditionRow(NamedTuple):
    """A rendition's row as the plan needs it (a tuple: a site has tens of thousands)."""

    pk: int
    image_id: int
    filter_spec: str
    file: str

    @property
    def key(self) -> Key:
        return (self.image_id, self.filter_spec)


@dataclass
class Plan:
    """What a sync would change: ``missing`` keys to make, ``obsolete`` rows to delete."""

    post_ids: set[int]
    required: set[Key]
    existing: set[Key]
    missing: set[Key]
    obsolete: list[RenditionRow]
    unplannable: list[planning.Unplannable] = field(default_factory=list)
    sizes: dict[int, int | None] = field(default_factory=dict)

    @property
    def obsolete_bytes(self) -> int:
        return sum(size or 0 for size in self.sizes.values())

    def per_image(self) -> dict[int, dict[str, Any]]:
        images: dict[int, dict[str, Any]] = {}

        def entry(image_id: int) -> dict[str, Any]:
            return images.setdefault(image_id, {"missing": [], "obsolete": [], "obsolete_bytes": 0})

        for image_id, spec in sorted(self.missing):
            entry(image_id)["missing"].append(spec)
        for row in sorted(self.obsolete, key=lambda r: (r.image_id, r.filter_spec)):
            item = entry(row.image_id)
            item["obsolete"].append(row.filter_spec)
            item["obsolete_bytes"] += self.sizes.get(row.pk) or 0
        return dict(sorted(images.items()))


def live_requirements(post_ids: Collection[int] | None = None) -> dict[int, planning.Requirement]:
    """``{post_id: Requirement}`` for every live post (or the live ones among ``post_ids``), planned from the
    ledger's image rows (:func:`auto_renditions.ledger.post_images`), a batch of posts per query."""
    from cast.models import Post

    posts = Post.objects.live()
    if post_ids is not None:
        posts = posts.filter(pk__in=list(post_ids))
    requirements: dict[int, planning.Requirement] = {}
    for batch in batches(posts.values_list("pk", flat=True), size=500):
        requirements.update(ledger.requirement_for_posts(batch))
    return requirements


def post_image_filter(post_ids: Collection[int] | None = None, prefix: str = "") -> Q:
    """A filter on images shown by any post (or by ``post_ids``), directly or in a gallery; drafts included."""
    from cast.models import Gallery, Post

    direct = Post.images.through.objects.all()
    galleries = Post.galleries.through.objects.all()
    if post_ids is not None:
        direct, galleries = direct.filter(post_id__in=list(post_ids)), galleries.filter(post_id__in=list(post_ids))
    in_gallery = Gallery.images.through.objects.filter(gallery_id__in=galleries.values("gallery_id"))
    lookup = f"{prefix}pk__in"
    return Q(**{lookup: direct.values("image_id")}) | Q(**{lookup: in_gallery.values("image_id")})


def rendition_rows(query: Q) -> list[RenditionRow]:
    rows = Rendition.objects.filter(query).values_list("pk", "image_id", "filter_spec", "file")
    return list(map(RenditionRow._make, rows))


def union(requirements: Iterable[planning.Requirement]) -> set[Key]:
    return set().union(*(r.keys for r in requirements))


def make_plan(post_ids: Collection[int] | None = None) -> Plan:
    """Diff the whole site (``post_ids=None``) or some posts; obsolete ones consider every live post."""
    keep = set(get_settings().KEEP_FILTER_SPECS)
    if post_ids is None:
        requirements = live_requirements()
        required = required_anywhere = union(requirements.values())
        rows = rendition_rows(post_image_filter(prefix="image__"))
        scope = set(requirements)
    else:
        scope = set(post_ids)
        image_ids = _post_image_ids(scope)
        users = ledger.posts_using_images(image_ids) | scope
        requirements = live_requirements(users)
        required = union(r for p, r in requirements.items() if p in scope)
        required_anywhere = {key for key in union(requirements.values()) if key[0] in image_ids}
        rows = rendition_rows(Q(image_id__in=image_ids))
    existing = {row.key for row in rows}
    obsolete = [row for row in rows if row.key not in required_anywhere and row.filter_spec not in keep]
    unplannable = [item for r in requirements.values() for item in r.unplannable]
    return Plan(scope, required, existing, required - existing, obsolete, unplannable)


def _post_image_ids(post_ids: Collection[int]) -> set[int]:
    from wagtail.images import get_image_model

    return set(get_image_model().objects.filter(post_image_filter(post_ids)).values_list("pk", flat=True))


def measure(rows: Collection[RenditionRow], wrap: Wrap = no_progress) -> dict[int, int | None]:
    """Bytes on storage per rendition row (``None`` when the file is gone); one ``size()`` call per file."""
    storage = cleanup.rendition_storage()
    sizes: dict[int, int | None] = {}
    for row in wrap(rows, len(rows), "Measuring obsolete files"):
        try:
            sizes[row.pk] = storage.size(row.file)
        except (OSError, ValueError, NotImplementedError):
            sizes[row.pk] = None
    return sizes


def prune(rows: Collection[RenditionRow], wrap: Wrap = no_progress) -> int:
    """Delete obsolete rendition rows (Wagtail deletes their files on commit), re-checking claims under lock.

    A post published since the plan was made may have claimed one of them; that one stays.
    """
    keep = set(get_settings().KEEP_FILTER_SPECS)
    by_image: dict[int, list[RenditionRow]] = {}
    for row in rows:
        by_image.setdefault(row.image_id, []).append(row)
    deleted = 0
    for image_id in wrap(sorted(by_image), len(by_image), "Deleting obsolete renditions"):
        with transaction.atomic():
            ledger.lock_images([image_id])
            claimed = ledger.claimed_keys(image_id) | keep
            doomed = {row.pk for row in by_image[image_id] if row.filter_spec not in claimed}
            deleted += cleanup.delete_renditions(Rendition.objects.filter(pk__in=doomed))
            specs = {row.filter_spec for row in by_image[image_id] if row.pk in doomed}
            PendingDeletion.objects.filter(image_id=image_id, filter_spec__in=specs).delete()
    return deleted


def stale_claim_posts(live_post_ids: Collection[int]) -> set[int]:
    """Posts holding claims that are not live any more (unpublished, or deleted behind our back)."""
    holders = set(Claim.objects.values_list("post_id", flat=True).distinct())
    return holders - set(live_post_ids)


def batches(ids: Iterable[int], size: int = BATCH) -> Iterable[list[int]]:
    ordered = sorted(ids)
    for start in range(0, len(ordered), size):
        yield ordered[start : start + size]
