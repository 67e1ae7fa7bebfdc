"""Delete rendition rows and, durably, their files.

Wagtail's own ``post_delete`` handler deletes a rendition's file once the transaction commits. If that fails (a
storage error) or never runs (the process is killed between commit and callback), the file stays behind with no
row. So every deleted rendition (whoever deletes it) is written down as a :class:`FileDeletion` in the same
transaction; after commit, and again from the sweep, each recorded file is deleted until it is gone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from django.db import transaction
from wagtail.images.models import Rendition

from .models import FileDeletion

if TYPE_CHECKING:
    from wagtail.images.models import AbstractImage

logger = logging.getLogger(__name__)


def delete_renditions(renditions: Iterable[Rendition]) -> int:
    """Delete these rendition rows (call inside ``atomic``, under the image lock); their files follow on commit."""
    count = 0
    for rendition in renditions:
        rendition.delete()  # one by one: the post_delete handlers (file record, Wagtail's cleanup) run for each
        count += 1
    return count


def remember_file(rendition: Rendition) -> None:
    """Record a deleted rendition's file in the deleting transaction, and try to delete it once that commits."""
    name = rendition.file.name
    if not name:
        return
    FileDeletion.objects.bulk_create([FileDeletion(name=name)], ignore_conflicts=True)
    transaction.on_commit(lambda: delete_files([name]), robust=True)


def delete_files(names: Iterable[str] | None = None) -> int:
    """Delete recorded files that no rendition uses any more; keep the record of any that fail, for the sweep."""
    from django.core.files.storage import default_storage

    pending = FileDeletion.objects.all() if names is None else FileDeletion.objects.filter(name__in=list(names))
    done, deleted = [], 0
    for record in pending:
        if Rendition.objects.filter(file=record.name).exists():
            done.append(record.pk)  # a new rendition got the same file name: the file is in use again
            continue
        try:
            if default_storage.exists(record.name):
                if default_storage.get_modified_time(record.name) > record.requested_at:
                    done.append(record.pk)  # written again after the deletion was decided: a new rendition's
                    continue
                default_storage.delete(record.name)
                deleted += 1
            done.append(record.pk)
        except Exception as error:  # noqa: BLE001 - a storage outage: the sweep tries again
            FileDeletion.objects.filter(pk=record.pk).update(attempts=record.attempts + 1, error=str(error)[:500])
            logger.warning("Could not delete rendition file %s: %s", record.name, error)
    FileDeletion.objects.filter(pk__in=done).delete()
    return deleted


def delete_stray_files(image: AbstractImage, since: datetime) -> int:
    """Delete rendition files written since ``since`` for an image that was deleted meanwhile.

    Wagtail saves each rendition's file before inserting its row; when the image is deleted during generation the
    insert fails and the files have no row. They are found by the image's file-name stem (how Wagtail names
    renditions), not used by any row, and not older than the task that wrote them.
    """
    from django.core.files.storage import default_storage

    folder, stem = "images", Path(image.file.name).stem[:20]
    try:
        _, files = default_storage.listdir(folder)
    except FileNotFoundError:
        return 0
    names = [f"{folder}/{name}" for name in files if name.startswith(stem)]
    used = set(Rendition.objects.filter(file__in=names).values_list("file", flat=True))
    deleted = 0
    for name in names:
        if name not in used and default_storage.get_modified_time(name) >= since:
            default_storage.delete(name)
            deleted += 1
    return deleted
