"""Rendition files are deleted durably: a storage error or a killed worker leaves a record the sweep finishes."""

import json
import os
import time
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage
from wagtail.images.models import Filter, Rendition

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
    """Fault injection: the image is deleted by 'another editor' right after the worker opened its original, and
    'another worker' writes a rendition file of another image whose row it has not inserted yet."""

    image_id = None
    other_image_id = None
    other_file = None

    def open(self, name, mode="rb"):
        handle = super().open(name, mode)
        image_id, DeleteImageOnOpenStorage.image_id = DeleteImageOnOpenStorage.image_id, None
        if image_id and name.startswith("original_images/"):
            from wagtail.images.models import Filter, Image

            Image.objects.filter(pk=image_id).delete()
            if DeleteImageOnOpenStorage.other_image_id:
                other = Image.objects.get(pk=DeleteImageOnOpenStorage.other_image_id)
                content = other.generate_rendition_file(Filter("width-96"))  # Wagtail's name, as its worker would
                DeleteImageOnOpenStorage.other_file = self.save(f"images/{content.name}", content)
        return handle


@pytest.fixture
def deleted_during_generation(settings):
    settings.STORAGES = {**settings.STORAGES, "default": {"BACKEND": f"{__name__}.DeleteImageOnOpenStorage"}}
    yield DeleteImageOnOpenStorage
    DeleteImageOnOpenStorage.image_id = DeleteImageOnOpenStorage.other_image_id = None
    DeleteImageOnOpenStorage.other_file = None


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
@pytest.mark.parametrize("serial", [False, True], ids=["batch", "serial"])
def test_an_image_deleted_during_generation_leaves_no_files(settings, blog, deleted_during_generation, serial):
    from auto_renditions import tasks
    from tests.factories import make_post

    settings.AUTO_RENDITIONS = {"SERIAL_RENDER_PIXELS": 0 if serial else 10**9}
    image = make_image(1600, 1200)
    make_post(blog, "p", galleries=[[image]])
    deleted_during_generation.image_id = image.pk
    tasks.generate_image_renditions(image.pk)
    assert deleted_during_generation.image_id is None, "the deletion did not happen during generation"
    folder = Path(settings.MEDIA_ROOT) / "images"
    assert not (list(folder.iterdir()) if folder.exists() else []), "rendition files without rows are left"


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
@pytest.mark.parametrize(
    "deleted_name,other_name",
    [
        ("w2-form1.jpg", "w2-form11.jpg"),
        ("photo.jpg", "photo_AbC1234.jpg"),
        ("IMG_20250101_1.jpg", "IMG_20250101_12.jpg"),
    ],
)
def test_another_images_fresh_file_survives_the_cleanup_of_a_deleted_image(
    settings, blog, deleted_during_generation, deleted_name, other_name
):
    """A worker writes a rendition's file before inserting its row; meanwhile another worker's image, with a
    name that shares a prefix, is deleted during its generation. Only the deleted image's own files go."""
    from auto_renditions import tasks
    from tests.factories import make_post

    doomed, other = make_image(1600, 1200, name=deleted_name), make_image(800, 600, name=other_name)
    assert Path(other.file.name).stem.startswith(Path(doomed.file.name).stem)
    make_post(blog, "p", galleries=[[doomed]])
    deleted_during_generation.image_id, deleted_during_generation.other_image_id = doomed.pk, other.pk
    tasks.generate_image_renditions(doomed.pk)
    assert deleted_during_generation.image_id is None, "the deletion did not happen during generation"
    fresh = deleted_during_generation.other_file
    assert fresh, "the other worker's file was not written"
    other.renditions.create(filter_spec="width-96", file=fresh)  # the other worker's row, inserted just after
    folder = Path(settings.MEDIA_ROOT) / "images"
    assert sorted(p.name for p in folder.iterdir()) == [Path(fresh).name], "another image's fresh file was deleted"


def _write(name: str, content: bytes = b"written by someone", age: float = 0) -> Path:
    storage = Rendition._meta.get_field("file").storage
    stored = storage.save(name, ContentFile(content))
    path = Path(storage.path(stored))
    if age:
        os.utime(path, (time.time() - age, time.time() - age))
    return path


def test_rendition_names_follow_wagtails_naming():
    long_name = "a-very-long-original-file-name-that-wagtail-has-to-cut-short-2025.jpg"
    image, other = make_image(800, 600), make_image(800, 600, name=long_name)
    made = [image.get_rendition(spec).file.name for spec in ("width-400", "fill-80x80|format-webp", "width-96|srgb")]
    made.append(other.get_rendition("fill-1200x630|format-jpeg|jpegquality-75").file.name)
    again = image.generate_rendition_file(Filter("width-400"))  # the name is taken: Django's storage adds a suffix
    made.append(cleanup.rendition_storage().save(f"images/{again.name}", again))
    names = cleanup.rendition_names()
    assert all(names.match(name) for name in made), made
    stem = Path(image.file.name).stem
    for foreign in (
        "images/site-logo.png",
        f"images/{stem}.jpg",
        f"images/{stem}.notaspec-3.jpg",
        "images/x.width-9.jpg",
    ):
        assert not names.match(foreign), foreign


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_check_fix_deletes_only_rendition_named_orphans():
    from django.core.management import call_command

    image = make_image(800, 600)
    image.get_rendition("width-400")
    stem = Path(image.file.name).stem
    orphans = [_write(f"images/{stem}.width-999.jpg"), _write(f"images/{stem}_AbC1234.width-96.srgb.avif")]
    logo = _write("images/site-logo.png", b"a site's own file, uploaded with upload_to='images/'")
    out = StringIO()
    call_command("auto_renditions", "check", "--fix", "--min-orphan-age", "0", "--json", stdout=out)
    data = json.loads(out.getvalue())
    assert sorted(v["file"] for v in data["violations"]) == sorted(f"images/{p.name}" for p in orphans)
    assert data["unknown_files"] == ["images/site-logo.png"]
    assert logo.exists(), "another app's file in images/ was deleted"
    assert not any(p.exists() for p in orphans)
    assert Rendition.objects.filter(image=image).count() == 1


class OtherRenditionStorage(FailingDeleteStorage):
    """A rendition storage apart from the default storage (``WAGTAILIMAGES_RENDITION_STORAGE``)."""


@pytest.fixture
def rendition_storage_apart(settings, tmp_path, monkeypatch):
    storage = OtherRenditionStorage(location=str(tmp_path / "renditions"), base_url="/renditions/")
    settings.WAGTAILIMAGES_RENDITION_STORAGE = storage
    monkeypatch.setattr(Rendition._meta.get_field("file"), "storage", storage)  # resolved when models load
    return storage


def test_file_deletion_uses_the_rendition_storage(rendition_storage_apart, django_capture_on_commit_callbacks):
    rendition = make_image(800, 600).get_rendition("width-400")
    assert rendition_storage_apart.exists(rendition.file.name)
    FailingDeleteStorage.failures = 10  # Wagtail's own on-commit delete fails too
    with django_capture_on_commit_callbacks(execute=True):
        cleanup.delete_renditions([Rendition.objects.get(pk=rendition.pk)])
    assert FileDeletion.objects.filter(name=rendition.file.name).exists()
    FailingDeleteStorage.failures = 0
    assert cleanup.delete_files() == 1
    assert not rendition_storage_apart.exists(rendition.file.name), "the record was dropped, the file stays"
    assert not FileDeletion.objects.exists()


def test_the_sweep_removes_a_dead_workers_files_once_they_are_old_enough(settings):
    """A worker killed between writing a rendition's file and inserting its row leaves the file without a row;
    the sweep removes it once no live process can still be inserting the row, and nothing else."""
    from django.utils import timezone

    from auto_renditions import tasks
    from auto_renditions.models import OrphanCheck, QueuedImage

    image, bystander = make_image(800, 600), make_image(800, 600)
    kept = image.get_rendition("width-400")
    stem, safe = Path(image.file.name).stem, cleanup.orphan_safe_age().total_seconds()
    QueuedImage.objects.create(image=image, leased_until=timezone.now())  # the dead worker's lease, just expired
    orphan = _write(f"images/{stem}.width-96.jpg", age=safe + 60)  # written before it died
    others = [
        _write(f"images/{Path(bystander.file.name).stem}.width-96.jpg", age=safe + 60),  # not a lost image's
        _write("images/site-logo.png", age=safe + 60),
    ]
    tasks.sweep()
    assert orphan.exists(), "removed before the safe age: a live process may still be inserting its row"
    OrphanCheck.objects.update(lost_at=timezone.now() - cleanup.orphan_safe_age())  # the safe age has passed
    fresh = _write(f"images/{stem}.width-200.jpg")  # the redelivered task's, its row not inserted yet
    tasks.sweep()
    assert not orphan.exists()
    assert fresh.exists() and all(p.exists() for p in others)
    assert cleanup.rendition_storage().exists(kept.file.name)
    assert not OrphanCheck.objects.exists()
