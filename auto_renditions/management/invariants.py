"""The invariants ``manage.py auto_renditions check`` verifies, and the repairs ``--fix`` makes.

Each violation names what is wrong and where; repairs go through the ledger (under the per-image lock) and
Wagtail's own delete path, never around them.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import asdict, dataclass
from datetime import timedelta

from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone
from wagtail.images.models import Rendition

from .. import cleanup, inventory, ledger, planning, preview, queue, status, tasks
from ..models import ClaimedRendition, Failure, QueuedImage

KINDS = {
    "drift": "live post requirement and its claims differ",
    "unqueued": "required rendition missing with nothing queued and no failure recorded",
    "stale_claim": "claim held by a post that is not live",
    "overdue_deletion": "released rendition still present past its due time",
    "missing_file": "claimed rendition row whose file is missing from storage",
    "orphan_file": "file named like a rendition of an existing original, with no Rendition row",
    "expired_draft": "draft claim past its expiry (the sweep releases it)",
}

#: Files in the rendition folder that are not named like a rendition: another app's, never touched.
UNKNOWN = "unknown, left alone"


@dataclass(frozen=True)
class Violation:
    kind: str
    post_id: int | None = None
    image_id: int | None = None
    filter_spec: str | None = None
    file: str | None = None

    def describe(self) -> str:
        where = [
            f"post {self.post_id}" if self.post_id is not None else "",
            f"image {self.image_id}" if self.image_id is not None else "",
            self.filter_spec or "",
            self.file or "",
        ]
        return f"{self.kind}: {' '.join(w for w in where if w)} ({KINDS[self.kind]})"

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def find(wrap: inventory.Wrap = inventory.no_progress, min_orphan_age: float = 0) -> list[Violation]:
    requirements = inventory.live_requirements()
    found = _ledger_violations(requirements)
    found += _overdue()
    found += _missing_files(wrap)
    found += _orphans(min_orphan_age)
    found += [Violation("expired_draft", post_id, image_id) for post_id, image_id in preview.expired_draft_claims()]
    return found


def _ledger_violations(requirements: dict) -> list[Violation]:
    found: list[Violation] = []
    claims: dict[int, set] = {}
    for post_id, image_id, spec in ClaimedRendition.objects.values_list("post_id", "image_id", "filter_spec"):
        claims.setdefault(post_id, set()).add((image_id, spec))
    for post_id, requirement in sorted(requirements.items()):
        delta = planning.diff(claims.get(post_id, set()), requirement.keys)
        found += [Violation("drift", post_id, i, s) for i, s in sorted(delta.add | delta.remove)]
    for post_id in sorted(set(claims) - set(requirements)):
        found += [Violation("stale_claim", post_id, i, s) for i, s in sorted(claims[post_id])]
    required = inventory.union(requirements.values())
    existing = set(
        Rendition.objects.filter(inventory.post_image_filter(prefix="image__")).values_list("image_id", "filter_spec")
    )
    queued = set(QueuedImage.objects.values_list("image_id", flat=True))
    failed = set(Failure.objects.values_list("image_id", "filter_spec"))
    for image_id, spec in sorted(required - existing):
        if image_id in queued or (image_id, spec) in failed or (image_id, ledger.WHOLE_IMAGE) in failed:
            continue
        found.append(Violation("unqueued", None, image_id, spec))
    return found


def _overdue() -> list[Violation]:
    has_rendition = Rendition.objects.filter(image_id=OuterRef("image_id"), filter_spec=OuterRef("filter_spec"))
    rows = status.overdue_deletions().filter(Exists(has_rendition)).values_list("image_id", "filter_spec")
    return [Violation("overdue_deletion", None, i, s) for i, s in rows]


def _claimed_rows() -> list[inventory.RenditionRow]:
    claimed = ClaimedRendition.objects.filter(image_id=OuterRef("image_id"), filter_spec=OuterRef("filter_spec"))
    rows = Rendition.objects.filter(Exists(claimed)).values_list("pk", "image_id", "filter_spec", "file")
    return list(map(inventory.RenditionRow._make, rows))


def _missing_files(wrap: inventory.Wrap) -> list[Violation]:
    storage = cleanup.rendition_storage()
    rows = _claimed_rows()
    return [
        Violation("missing_file", None, row.image_id, row.filter_spec, row.file)
        for row in wrap(rows, len(rows), "Checking rendition files")
        if not storage.exists(row.file)
    ]


def _orphans(min_age: float) -> list[Violation]:
    """Rendition-named files with no row; younger than ``min_age`` seconds they may be a rendition whose row is
    being inserted. Files not named like a rendition of an existing original are :func:`unknown_files`."""
    return [Violation("orphan_file", file=name) for name in _unused_files(min_age)[0]]


def unknown_files(min_age: float = 0) -> list[str]:
    """Files without a row in the rendition folder that are not named like a rendition: listed, left alone."""
    return _unused_files(min_age)[1]


def _unused_files(min_age: float) -> tuple[list[str], list[str]]:
    storage = cleanup.rendition_storage()
    try:
        _, files = storage.listdir(inventory.RENDITION_FOLDER)
    except (FileNotFoundError, NotImplementedError):
        return [], []
    known = set(Rendition.objects.values_list("file", flat=True))
    names = cleanup.rendition_names()
    cutoff = timezone.now() - timedelta(seconds=min_age)
    orphans, unknown = [], []
    for name in sorted(files):
        path = f"{inventory.RENDITION_FOLDER}/{name}"
        if path in known:
            continue
        if not names.match(path):
            unknown.append(path)
            continue
        if min_age > 0:
            try:
                if storage.get_modified_time(path) > cutoff:
                    continue
            except (OSError, NotImplementedError):
                pass
        orphans.append(path)
    return orphans, unknown


def fix(violations: Collection[Violation]) -> list[str]:
    """Repair what can be repaired; return one line per repair made."""
    done: list[str] = []
    by_kind: dict[str, list[Violation]] = {}
    for violation in violations:
        by_kind.setdefault(violation.kind, []).append(violation)
    if drift := {v.post_id for v in by_kind.get("drift", []) if v.post_id is not None}:
        for batch in inventory.batches(drift):
            ledger.sync_posts(batch)
        done.append(f"re-synced the claims of {len(drift)} post(s)")
    if stale := {v.post_id for v in by_kind.get("stale_claim", []) if v.post_id is not None}:
        for batch in inventory.batches(stale):
            ledger.release_posts(batch)
        done.append(f"released the claims of {len(stale)} post(s) that are not live")
    # Released claims may be due at once (no grace period): delete those together with the overdue ones.
    due = {
        v.image_id
        for v in by_kind.get("overdue_deletion", []) + by_kind.get("stale_claim", [])
        if v.image_id is not None
    }
    if due:
        done.append(f"ran due deletions for {len(due)} image(s): {tasks.delete_due_renditions(due)}")
    if missing := by_kind.get("missing_file", []):
        for image_id in sorted({v.image_id for v in missing if v.image_id is not None}):
            with transaction.atomic():
                ledger.lock_images([image_id])
                files = [v.file for v in missing if v.image_id == image_id]
                cleanup.delete_renditions(Rendition.objects.filter(image_id=image_id, file__in=files))
        done.append(f"deleted {len(missing)} rendition row(s) whose file was missing")
    requeue = {(v.image_id, v.filter_spec) for v in missing + by_kind.get("unqueued", [])}
    if requeue:
        done.append(f"queued {len(_queue(requeue))} image(s) for generation")
    if by_kind.get("expired_draft"):
        done.append(f"released {preview.release_drafts(expired=True)} expired draft claim(s)")
    if orphans := by_kind.get("orphan_file", []):
        storage = cleanup.rendition_storage()
        names = cleanup.rendition_names()  # again: an original may have gone since the check
        for violation in orphans:
            name = violation.file or ""
            if names.match(name) and not Rendition.objects.filter(file=name).exists():
                storage.delete(name)
        done.append(f"deleted {len(orphans)} orphan file(s)")
    return done


def _queue(keys: set) -> set[int]:
    images = {image_id for image_id, _ in keys}
    with transaction.atomic():
        ledger.lock_images(images)
        ledger.mark_queued({image_id for image_id, _ in ledger.missing(keys)})
        queued = set(QueuedImage.objects.filter(image_id__in=images).values_list("image_id", flat=True))
        transaction.on_commit(lambda: queue.enqueue_generation(queued))
    return queued
