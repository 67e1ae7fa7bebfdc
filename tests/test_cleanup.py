"""Rendition files are deleted durably: a storage error or a killed worker leaves a record the sweep finishes."""

import os
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.storage import FileSystemStorage
from wagtail.images.models import Rendition

from auto_renditions import cleanup
from auto_renditions.models import FileDeletion
from tests.factories import make_image

pytestmark = pytest.mark.django_db


class FailingDeleteStorage(FileSystemStorage):
    """Fault injection only: ``delete`` raises while ``failures`` is above zero."""

    failures = 0

    def delete(self, name):
        if FailingDeleteStorage.failures > 0:
            FailingDeleteStorage.failures -= 1
            raise OSError("storage is down")
        return super().delete(name)


def test_a_failed_file_delete_is_retried_until_the_file_is_gone(settings, django_capture_on_commit_callbacks):
    settings.STORAGES = {**settings.STORAGES, "default": {"BACKEND": f"{__name__}.FailingDeleteStorage"}}
    rendition = make_image(800, 600).get_rendition("width-400")
    path = Path(settings.MEDIA_ROOT) / rendition.file.name
    FailingDeleteStorage.failures = 10  # Wagtail's own on-commit delete fails too
    with django_capture_on_commit_callbacks(execute=True):
        cleanup.delete_renditions([Rendition.objects.get(pk=rendition.pk)])
    assert not Rendition.objects.filter(pk=rendition.pk).exists()
    assert path.exists()
    record = FileDeletion.objects.get(name=rendition.file.name)
    assert record.attempts == 1 and "storage is down" in record.error

    FailingDeleteStorage.failures = 0  # storage recovers; the sweep finishes the job
    assert cleanup.delete_files() == 1
    assert not path.exists() and not FileDeletion.objects.exists()


def test_a_file_written_again_under_the_same_name_is_kept():
    rendition = make_image(800, 600).get_rendition("width-400")
    path = Path(settings.MEDIA_ROOT) / rendition.file.name
    FileDeletion.objects.create(name=rendition.file.name)
    assert cleanup.delete_files() == 0  # a row still uses the name
    assert path.exists() and not FileDeletion.objects.exists()

    Rendition.objects.filter(pk=rendition.pk).delete()  # any deletion is recorded (its on-commit part not run here)
    record = FileDeletion.objects.get(name=rendition.file.name)
    later = time.time() + 5
    os.utime(path, (later, later))  # the file was written after the deletion was decided
    assert cleanup.delete_files() == 0 and path.exists()
    assert not FileDeletion.objects.filter(pk=record.pk).exists()


def test_deleting_an_image_records_its_rendition_files(django_capture_on_commit_callbacks):
    from wagtail.images.models import Image

    image = make_image(800, 600)
    paths = [Path(settings.MEDIA_ROOT) / image.get_rendition(spec).file.name for spec in ("width-400", "width-200")]
    FailingDeleteStorage.failures = 0
    with django_capture_on_commit_callbacks(execute=True):
        Image.objects.get(pk=image.pk).delete()
    assert not any(path.exists() for path in paths)
    assert not FileDeletion.objects.exists()


class DeleteImageOnOpenStorage(FileSystemStorage):
    """Fault injection: the image is deleted by 'another editor' right after the worker opened its original."""

    image_id = None

    def open(self, name, mode="rb"):
        handle = super().open(name, mode)
        image_id, DeleteImageOnOpenStorage.image_id = DeleteImageOnOpenStorage.image_id, None
        if image_id and name.startswith("original_images/"):
            from wagtail.images.models import Image

            Image.objects.filter(pk=image_id).delete()
        return handle


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_an_image_deleted_during_generation_leaves_no_files(settings, blog):
    from auto_renditions import tasks
    from tests.factories import make_post

    settings.STORAGES = {**settings.STORAGES, "default": {"BACKEND": f"{__name__}.DeleteImageOnOpenStorage"}}
    image = make_image(1600, 1200)
    make_post(blog, "p", galleries=[[image]])
    DeleteImageOnOpenStorage.image_id = image.pk
    tasks.generate_image_renditions(image.pk)
    assert DeleteImageOnOpenStorage.image_id is None, "the deletion did not happen during generation"
    folder = Path(settings.MEDIA_ROOT) / "images"
    assert not (list(folder.iterdir()) if folder.exists() else []), "rendition files without rows are left"
