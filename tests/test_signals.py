"""The app's signals are sent: claims, generated and failed renditions, and deleted renditions on every path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.files.storage import FileSystemStorage
from django.core.files.uploadedfile import SimpleUploadedFile
from wagtail.images.models import Image, Rendition

from auto_renditions import inventory, signals, tasks
from auto_renditions.management import invariants
from tests.factories import make_image, make_post, photo_bytes
from tests.harness import settle_in_process

pytestmark = pytest.mark.django_db


class Received:
    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(self, sender, **kwargs) -> None:
        self.calls.append(kwargs)

    def deleted(self) -> set[tuple[int, str]]:
        return {(call["image_id"], spec) for call in self.calls for spec in call["filter_specs"]}


@pytest.fixture
def received() -> Iterator[dict[str, Received]]:
    names = ("claims_changed", "renditions_generated", "renditions_failed", "renditions_deleted")
    found = {name: Received() for name in names}
    for name in names:
        getattr(signals, name).connect(found[name], dispatch_uid=f"tests.{name}")
    yield found
    for name in names:
        getattr(signals, name).disconnect(dispatch_uid=f"tests.{name}")


def test_claims_generated_and_failed_are_sent(blog, received):
    good, broken = make_image(800, 600), make_image(800, 600)
    make_post(blog, "p", images=[good, broken])
    assert received["claims_changed"].calls and received["claims_changed"].calls[0]["change"].added
    Path(broken.file.path).unlink()  # an original lost from storage: its renditions cannot be made
    settle_in_process(rounds=1)
    generated = {call["image"].pk: call["filter_specs"] for call in received["renditions_generated"].calls}
    assert set(generated) == {good.pk} and generated[good.pk]
    failed = received["renditions_failed"].calls
    assert [call["image"].pk for call in failed] == [broken.pk] and failed[0]["errors"]


def test_due_deletions_send_renditions_deleted(blog, received, settings):
    image = make_image(800, 600)
    post = make_post(blog, "p", images=[image])
    settle_in_process()
    specs = set(Rendition.objects.filter(image=image).values_list("filter_spec", flat=True))
    settings.AUTO_RENDITIONS = {"DELETE_GRACE_SECONDS": 0}
    post.unpublish()
    tasks.delete_due_renditions()
    assert received["renditions_deleted"].deleted() == {(image.pk, spec) for spec in specs}


def test_prune_sends_renditions_deleted(received):
    image = make_image(800, 600)
    legacy = image.get_rendition("width-300")  # made before the app, shown by no post
    row = inventory.RenditionRow(legacy.pk, image.pk, "width-300", legacy.file.name)
    assert inventory.prune([row]) == 1
    assert received["renditions_deleted"].deleted() == {(image.pk, "width-300")}


def test_check_fix_of_a_missing_file_sends_renditions_deleted(blog, received):
    image = make_image(800, 600)
    make_post(blog, "p", images=[image])
    settle_in_process()
    rendition = Rendition.objects.filter(image=image).first()
    Path(rendition.file.path).unlink()  # lost from storage behind the app's back
    missing = [v for v in invariants.find() if v.kind == "missing_file"]
    assert [v.file for v in missing] == [rendition.file.name]
    assert invariants.fix(missing)
    assert (image.pk, rendition.filter_spec) in received["renditions_deleted"].deleted()


def test_replacing_an_images_file_sends_renditions_deleted(blog, received):
    image = make_image(800, 600)
    make_post(blog, "p", images=[image])
    settle_in_process()
    specs = set(Rendition.objects.filter(image=image).values_list("filter_spec", flat=True))
    image = Image.objects.get(pk=image.pk)
    image.file = SimpleUploadedFile("new.jpg", photo_bytes(700, 500, seed=3), content_type="image/jpeg")
    image.save()  # another code path than Wagtail's edit form: the app deletes the stale renditions itself
    assert received["renditions_deleted"].deleted() == {(image.pk, spec) for spec in specs}


class ReplaceOnOpenStorage(FileSystemStorage):
    """Fault injection: 'an editor' replaces the image's file right after the worker opened the original."""

    image_id = None

    def open(self, name, mode="rb"):
        handle = super().open(name, mode)
        image_id, ReplaceOnOpenStorage.image_id = ReplaceOnOpenStorage.image_id, None
        if image_id and name.startswith("original_images/"):
            Image.objects.filter(pk=image_id).update(file_hash="replaced meanwhile")
        return handle


def test_renditions_of_a_replaced_file_are_deleted_with_the_signal(blog, received, settings):
    settings.STORAGES = {**settings.STORAGES, "default": {"BACKEND": f"{__name__}.ReplaceOnOpenStorage"}}
    image = make_image(800, 600)
    make_post(blog, "p", images=[image])
    ReplaceOnOpenStorage.image_id = image.pk
    tasks.generate_image_renditions(image.pk)
    assert ReplaceOnOpenStorage.image_id is None, "the file was not replaced during generation"
    generated = set().union(*(call["filter_specs"] for call in received["renditions_generated"].calls))
    assert {(image.pk, spec) for spec in generated} <= received["renditions_deleted"].deleted()
