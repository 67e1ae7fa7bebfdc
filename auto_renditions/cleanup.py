"""Delete rendition rows and, durably, their files; remove the files a task wrote that got no row.

Wagtail's own ``post_delete`` handler deletes a rendition's file once the transaction commits. If that fails (a
storage error) or never runs (the process is killed between commit and callback), the file stays behind with no
row. So every deleted rendition (whoever deletes it) is written down as a :class:`FileDeletion` in the same
transaction; after commit, and again from the sweep, each recorded file is deleted until it is gone.

Every file operation goes to the storage of the Rendition model's ``file`` field (``WAGTAILIMAGES_RENDITION_STORAGE``
or the default storage): that is where Wagtail writes rendition files.
"""

from __future__ import annotations

import bisect
import logging
import posixpath
import re
import threading
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from django.core.files.storage import Storage
from django.db import transaction
from django.db.models.signals import post_init
from django.utils import timezone
from wagtail.images.models import IMAGE_FORMAT_EXTENSIONS, Rendition

from . import signals
from .conf import get_settings
from .models import FileDeletion, OrphanCheck

#: Where Wagtail puts rendition files (``AbstractRendition.get_upload_to``).
RENDITION_FOLDER = "images"

logger = logging.getLogger(__name__)


def rendition_storage() -> Storage:
    """The storage Wagtail writes rendition files to (the field's own, as resolved when the model was loaded)."""
    return Rendition._meta.get_field("file").storage


def delete_renditions(renditions: Iterable[Rendition]) -> int:
    """Delete these rendition rows (call inside ``atomic``, under the image lock); their files follow on commit.

    Sends ``renditions_deleted`` once per image: every deletion path of the app comes through here.
    """
    deleted: dict[int, set[str]] = {}
    for rendition in renditions:
        rendition.delete()  # one by one: the post_delete handlers (file record, Wagtail's cleanup) run for each
        deleted.setdefault(rendition.image_id, set()).add(rendition.filter_spec)
    for image_id, filter_specs in sorted(deleted.items()):
        signals.renditions_deleted.send(sender=Rendition, image_id=image_id, filter_specs=filter_specs)
    return sum(len(specs) for specs in deleted.values())


def remember_file(rendition: Rendition) -> None:
    """Record a deleted rendition's file in the deleting transaction, and try to delete it once that commits."""
    name = rendition.file.name
    if not name:
        return
    FileDeletion.objects.bulk_create([FileDeletion(name=name)], ignore_conflicts=True)
    transaction.on_commit(lambda: delete_files([name]), robust=True)


def delete_files(names: Iterable[str] | None = None) -> int:
    """Delete recorded files that no rendition uses any more; keep the record of any that fail, for the sweep."""
    storage = rendition_storage()
    pending = FileDeletion.objects.all() if names is None else FileDeletion.objects.filter(name__in=list(names))
    done, deleted = [], 0
    for record in pending:
        if Rendition.objects.filter(file=record.name).exists():
            done.append(record.pk)  # a new rendition got the same file name: the file is in use again
            continue
        try:
            if storage.exists(record.name):
                if storage.get_modified_time(record.name) > record.requested_at:
                    done.append(record.pk)  # written again after the deletion was decided: a new rendition's
                    continue
                storage.delete(record.name)
                deleted += 1
            done.append(record.pk)
        except Exception as error:  # noqa: BLE001 - a storage outage: the sweep tries again
            FileDeletion.objects.filter(pk=record.pk).update(attempts=record.attempts + 1, error=str(error)[:500])
            logger.warning("Could not delete rendition file %s: %s", record.name, error)
    FileDeletion.objects.filter(pk__in=done).delete()
    return deleted


# Rendition instances that Wagtail builds for an image being rendered, by ``id(image)``. Wagtail builds them in
# its thread pool (``create_renditions``) or in the calling thread (``create_rendition``), always with the image
# object it was called on, so the image object, not the thread, tells whose they are.
_new_renditions: dict[int, list[Rendition]] = {}
_new_renditions_lock = threading.Lock()


def _note_new_rendition(sender: Any, instance: Rendition, **kwargs: Any) -> None:
    image = instance._state.fields_cache.get("image")
    if image is None or id(image) not in _new_renditions:
        return
    if instance.file and not instance.file._committed:  # built with new content, not loaded from the database
        with _new_renditions_lock:
            _new_renditions[id(image)].append(instance)


@contextmanager
def removing_files_without_rows(image: Any) -> Iterator[None]:
    """Delete, on the way out, every file Wagtail wrote for ``image`` inside this block that no row uses.

    Wagtail writes a rendition's file while inserting its row (the file field's ``pre_save``). When the insert
    fails (the image was deleted meanwhile, a lost database connection) or is dropped as a duplicate
    (``bulk_create(ignore_conflicts=True)``), the file has no row. Only the names written here are candidates,
    read from the rendition instances Wagtail built for this image object: never a folder scan, which would
    take other images' files whose rows are still being inserted.
    """
    model = image.get_rendition_model()
    post_init.connect(
        _note_new_rendition, sender=model, weak=False, dispatch_uid=f"auto_renditions.new_rendition.{model._meta}"
    )
    with _new_renditions_lock:
        _new_renditions[id(image)] = []
    try:
        yield
    finally:
        with _new_renditions_lock:
            built = _new_renditions.pop(id(image), [])
        written = {r.file.name for r in built if r.file and r.file._committed}  # Wagtail's clash delete clears it
        if written:
            try:
                _delete_unused(model, written)
            except Exception:  # noqa: BLE001 - never hide the task's own outcome; the file is only an orphan
                logger.exception("Could not remove rendition files without rows: %s", sorted(written))


def _delete_unused(model: type[Rendition], names: set[str]) -> None:
    unused = names - set(model.objects.filter(file__in=names).values_list("file", flat=True))
    if unused:
        # Recorded first, so that a storage error leaves the names to the sweep.
        FileDeletion.objects.bulk_create([FileDeletion(name=name) for name in unused], ignore_conflicts=True)
        delete_files(unused)
        logger.info("Removed %d rendition file(s) whose row was not inserted: %s", len(unused), sorted(unused))


class RenditionNames:
    """Tells whether a file name in the rendition folder is how Wagtail names a rendition of one of ``originals``.

    Wagtail (``AbstractImage.generate_rendition_file``) names a rendition ``{stem}.{key.}{spec}{ext}``: the
    original's stem cut so the name stays under 60 characters, the focal point's 8-hex cache key when the spec
    depends on it, the spec with ``|`` as ``.``, the output format's extension. Django's storage inserts
    ``_XXXXXXX`` before the first dot when the name is taken. Anything else (a site's ``images/site-logo.png``)
    is not a rendition, whatever folder it shares.
    """

    _TAKEN = re.compile(r"_[A-Za-z0-9]{7}$")
    _CACHE_KEY = re.compile(r"^[0-9a-f]{8}\.")
    _EXTENSIONS = tuple(sorted(set(IMAGE_FORMAT_EXTENSIONS.values())))

    def __init__(self, originals: Iterable[str]) -> None:
        self._stems = sorted({posixpath.splitext(posixpath.basename(name))[0] for name in originals if name})
        self._exact = set(self._stems)
        self._operations: set[str] | None = None

    def match(self, name: str) -> bool:
        base = posixpath.basename(name)
        root, dot, rest = base.partition(".")
        if not dot:
            return False
        candidates = [base]
        if self._TAKEN.search(root):
            candidates.append(f"{root[:-8]}.{rest}")
        return any(self._match_unsuffixed(candidate) for candidate in candidates)

    def _match_unsuffixed(self, base: str) -> bool:
        extension = next((ext for ext in self._EXTENSIONS if base.endswith(ext)), None)
        if extension is None:
            return False
        for at, char in enumerate(base):
            if char != ".":
                continue
            stem, output_extension = base[:at], base[at + 1 :]
            spec = self._CACHE_KEY.sub("", output_extension)[: -len(extension)]
            if not stem or not self._is_spec(spec):
                continue
            limit = 59 - len(output_extension)
            if len(stem) < limit and stem in self._exact:
                return True
            if len(stem) == limit and self._some_stem_starts_with(stem):
                return True
        return False

    def _some_stem_starts_with(self, prefix: str) -> bool:
        at = bisect.bisect_left(self._stems, prefix)
        return at < len(self._stems) and self._stems[at].startswith(prefix)

    def _is_spec(self, spec: str) -> bool:
        """Every ``.``-separated part starts with a registered Wagtail filter operation (``width-96``, ``srgb``)."""
        if self._operations is None:
            from wagtail import hooks

            self._operations = {op for hook in hooks.get_hooks("register_image_operations") for op, _ in hook()}
        return bool(spec) and all(part.split("-", 1)[0] in self._operations for part in spec.split("."))


def rendition_names() -> RenditionNames:
    """The naming test for the site's current originals."""
    from wagtail.images import get_image_model

    return RenditionNames(get_image_model().objects.values_list("file", flat=True).iterator())


def note_lost_workers(image_ids: Collection[int]) -> None:
    """Remember images whose lease expired (their worker died or overran): the files it wrote may have no rows."""
    from wagtail.images import get_image_model

    now = timezone.now()
    for image_id, original in get_image_model().objects.filter(pk__in=image_ids).values_list("pk", "file"):
        OrphanCheck.objects.update_or_create(image_id=image_id, defaults={"original": original, "lost_at": now})


def orphan_safe_age() -> timedelta:
    """How long a rendition file may wait for its row: a live worker inserts it before its lease expires."""
    return timedelta(seconds=get_settings().TASK_TIMEOUT + 60)


def sweep_orphans() -> int:
    """Delete rendition-named files without rows of images whose worker died, once no live process can still be
    inserting their rows; files written after the death (the redelivered task's) are left alone.

    The rendition folder is listed only when such a check is due, so the sweep's cost follows dead workers, not
    the size of the site.
    """
    due = list(OrphanCheck.objects.filter(lost_at__lte=timezone.now() - orphan_safe_age()))
    if not due:
        return 0
    storage = rendition_storage()
    try:
        _, files = storage.listdir(RENDITION_FOLDER)
    except (FileNotFoundError, NotImplementedError):
        files = []
    candidates: set[str] = set()
    for check in due:
        names = RenditionNames([check.original])
        for name in files:
            path = f"{RENDITION_FOLDER}/{name}"
            try:
                if names.match(path) and storage.get_modified_time(path) < check.lost_at:
                    candidates.add(path)
            except (OSError, NotImplementedError):
                continue  # cannot tell its age: leave it to ``check --fix``
    orphans = candidates - set(Rendition.objects.filter(file__in=candidates).values_list("file", flat=True))
    if orphans:
        FileDeletion.objects.bulk_create([FileDeletion(name=name) for name in orphans], ignore_conflicts=True)
    OrphanCheck.objects.filter(pk__in=[check.pk for check in due]).delete()
    return delete_files(orphans) if orphans else 0
