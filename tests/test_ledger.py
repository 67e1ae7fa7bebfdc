"""Ledger behaviour end to end in one process: listeners → claims → tasks run in-process → rows and files.

The worker tests (test_worker.py) repeat the core of this with a real django-q2 worker process.
"""

import io
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.files.storage import FileSystemStorage
from django.utils import timezone
from PIL import Image as PILImage
from wagtail.images.models import Image, Rendition

from auto_renditions import ledger, planning, tasks
from auto_renditions.models import Claim, ClaimedRendition, Failure, PendingDeletion, QueuedImage
from tests.factories import edit_post, make_image, make_post, publish_post, required

pytestmark = pytest.mark.django_db


@pytest.fixture
def run(django_capture_on_commit_callbacks, settle):
    """Do something, run its on-commit callbacks (Wagtail's file cleanup), then settle the queue in-process."""

    def run(action=None):
        with django_capture_on_commit_callbacks(execute=True):
            result = action() if action else None
        with django_capture_on_commit_callbacks(execute=True):
            settle()
        return result

    return run


def claims(post=None) -> set:
    qs = ClaimedRendition.objects.all() if post is None else ClaimedRendition.objects.filter(post_id=post.pk)
    return set(qs.values_list("image_id", "filter_spec"))


def renditions(*images) -> set:
    return set(Rendition.objects.filter(image__in=images).values_list("image_id", "filter_spec"))


def rendition_files(*images) -> set[str]:
    return set(Rendition.objects.filter(image__in=images).values_list("file", flat=True))


def file_exists(name: str) -> bool:
    return (Path(django_settings.MEDIA_ROOT) / name).exists()


def test_publish_claims_requirement_and_generates_nothing_in_the_request(blog):
    a, b = make_image(600, 400), make_image(1600, 1200)
    post = make_post(blog, "p", images=[a], galleries=[[a, b]])
    assert claims(post) == required(post) != set()
    assert renditions(a, b) == set()
    assert set(QueuedImage.objects.values_list("image_id", flat=True)) == {a.pk, b.pk}


def test_settle_makes_exactly_the_claimed_renditions(blog, run):
    a, b = make_image(600, 400), make_image(1600, 1200)
    post = run(lambda: make_post(blog, "p", images=[a], galleries=[[a, b]]))
    assert renditions(a, b) == required(post)
    assert all(file_exists(name) for name in rendition_files(a, b))
    assert not QueuedImage.objects.exists()


def test_shared_image_is_kept_until_its_last_post_lets_go(blog, run):
    shared, other = make_image(1600, 1200), make_image(600, 400)
    one = run(lambda: make_post(blog, "one", images=[shared, other]))
    two = run(lambda: make_post(blog, "two", images=[shared]))
    files = rendition_files(shared)
    assert renditions(shared) == required(two)

    run(lambda: edit_post(one, images=[other]))  # removed from one post: still needed by the other
    assert renditions(shared) == required(two)
    assert all(file_exists(name) for name in files)

    run(lambda: edit_post(two, images=[]))  # removed from both: rows and files go
    assert renditions(shared) == set()
    assert not any(file_exists(name) for name in files)
    assert renditions(other) == required(one)


def test_unpublish_releases_and_republish_reclaims(blog, run):
    a = make_image(1600, 1200)
    post = run(lambda: make_post(blog, "p", images=[a]))
    files = rendition_files(a)
    run(lambda: post.unpublish())
    assert claims(post) == set() and renditions(a) == set()
    assert not any(file_exists(name) for name in files)
    run(lambda: publish_post(post))
    assert renditions(a) == required(post) != set()


def test_deleting_a_post_releases_its_claims(blog, run):
    a, b = make_image(1600, 1200), make_image(600, 400)
    post = run(lambda: make_post(blog, "p", images=[a], galleries=[[b]]))
    keeper = run(lambda: make_post(blog, "keeper", galleries=[[b]]))
    run(lambda: post.delete())
    assert renditions(a) == set()
    assert renditions(b) == required(keeper)


def test_episode_is_a_post_too(blog, run):
    from cast.models import Audio, Episode, Podcast
    from django.core.files.uploadedfile import SimpleUploadedFile
    from wagtail.models import Site

    podcast = Podcast(title="Pod", slug="pod", owner=blog.owner)
    Site.objects.get(is_default_site=True).root_page.add_child(instance=podcast)
    audio = Audio.objects.create(user=blog.owner, m4a=SimpleUploadedFile("a.m4a", b"\x00" * 64))
    a = make_image(1600, 1200)
    episode = Episode(title="ep", slug="ep", owner=blog.owner, podcast_audio=audio, live=False)
    episode.body = make_post.__globals__["body"]([a])
    podcast.add_child(instance=episode)
    run(lambda: publish_post(episode))
    assert renditions(a) == required(episode) != set()


def test_never_touches_renditions_nobody_claimed(blog, run):
    a, loose = make_image(1600, 1200), make_image(1600, 1200)
    thumbnail = a.get_rendition("max-165x165")  # Wagtail admin listing thumbnail
    cover = loose.get_rendition("fill-1200x630|format-jpeg|jpegquality-75")  # not a post image at all
    legacy = a.get_rendition("width-300")  # a rendition from older settings: only `sync --prune` removes it
    post = run(lambda: make_post(blog, "p", images=[a]))
    run(lambda: post.unpublish())
    run(lambda: post.delete())
    left = set(Rendition.objects.values_list("pk", flat=True))
    assert {thumbnail.pk, cover.pk, legacy.pk} <= left
    assert renditions(a) == {(a.pk, "max-165x165"), (a.pk, "width-300")}


def test_keep_list_protects_a_claimed_spec(blog, run, settings):
    a = make_image(1600, 1200)
    post = run(lambda: make_post(blog, "p", images=[a]))
    kept = sorted(required(post))[0][1]
    settings.AUTO_RENDITIONS = {"DELETE_GRACE_SECONDS": 0, "KEEP_FILTER_SPECS": [kept]}
    run(lambda: post.unpublish())
    assert renditions(a) == {(a.pk, kept)}


def test_grace_period_delays_deletion_and_a_reclaim_cancels_it(blog, run, settings):
    settings.AUTO_RENDITIONS = {"DELETE_GRACE_SECONDS": 3600}
    a = make_image(1600, 1200)
    post = run(lambda: make_post(blog, "p", images=[a]))
    made = renditions(a)
    run(lambda: post.unpublish())
    assert renditions(a) == made  # still there: inside the grace period
    due = set(PendingDeletion.objects.values_list("image_id", "filter_spec"))
    assert due == made
    assert all(p.due_at > timezone.now() + timedelta(minutes=59) for p in PendingDeletion.objects.all())

    run(lambda: publish_post(post))  # the editor undoes the unpublish
    assert not PendingDeletion.objects.exists()
    PendingDeletion.objects.update(due_at=timezone.now())  # nothing pending any more, so nothing goes
    run(tasks.delete_due_renditions)
    assert renditions(a) == made

    run(lambda: post.unpublish())
    PendingDeletion.objects.update(due_at=timezone.now() - timedelta(seconds=1))  # the grace period is over
    run(tasks.delete_due_renditions)
    assert renditions(a) == set()


def test_gallery_shared_by_two_posts_is_replanned_for_both(blog, run):
    from cast.models import Gallery

    a, b, c = make_image(600, 400), make_image(1600, 1200), make_image(800, 600)
    one = run(lambda: make_post(blog, "one", galleries=[[a, b]]))
    two = run(lambda: make_post(blog, "two", galleries=[[a, b]]))
    gallery = Gallery.objects.get()  # django-cast reuses one Gallery for an identical image set
    run(lambda: gallery.images.add(c))
    assert claims(one) == required(one) and claims(two) == required(two)
    assert c.pk in {image_id for image_id, _ in claims(one) & claims(two)}
    assert renditions(c) == planning.required_renditions([("gallery", c)]).keys
    run(lambda: gallery.images.remove(b))
    assert renditions(b) == set()


def test_deleting_an_image_takes_its_claims(blog, run):
    a, b = make_image(1600, 1200), make_image(600, 400)
    post = run(lambda: make_post(blog, "p", images=[a, b]))
    run(lambda: Image.objects.get(pk=a.pk).delete())
    assert not Claim.objects.filter(image_id=a.pk).exists()
    assert claims(post) == required(post)  # b's claims are untouched
    assert renditions(b) == required(post)


def test_replacing_the_file_regenerates_with_the_new_size(blog, run):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from tests.factories import photo_bytes

    a = make_image(1600, 1200)
    post = run(lambda: make_post(blog, "p", images=[a]))
    old_files = rendition_files(a)

    def replace():
        image = Image.objects.get(pk=a.pk)
        image.file = SimpleUploadedFile("portrait.jpg", photo_bytes(1200, 1600), content_type="image/jpeg")
        image._set_image_file_metadata()
        image.save()

    run(replace)
    assert Image.objects.get(pk=a.pk).width == 1200
    assert claims(post) == required(post)
    assert renditions(a) == required(post)
    assert not (rendition_files(a) & old_files)
    assert not any(file_exists(name) for name in old_files)


def test_broken_original_never_blocks_publishing_and_is_retried_a_bounded_number_of_times(blog, run, settings):
    settings.AUTO_RENDITIONS = {"DELETE_GRACE_SECONDS": 0, "MAX_ATTEMPTS": 2, "RETRY_BACKOFF_SECONDS": 0}
    good, broken = make_image(1600, 1200), make_image(1600, 1200)
    Path(broken.file.path).write_bytes(b"not an image at all")
    post = run(lambda: make_post(blog, "p", images=[good, broken]))
    assert post.live
    assert renditions(good) == {k for k in required(post) if k[0] == good.pk}
    failure = Failure.objects.filter(image=broken).first()
    assert failure is not None and failure.attempts == 1 and failure.error
    run(lambda: tasks.sweep())  # retry is due (back-off 0)
    assert set(Failure.objects.filter(image=broken).values_list("attempts", flat=True)) == {2}
    run(lambda: tasks.sweep())  # MAX_ATTEMPTS reached: left for an operator
    assert set(Failure.objects.filter(image=broken).values_list("attempts", flat=True)) == {2}
    assert not QueuedImage.objects.exists()


def test_missing_original_file(blog, run):
    gone = make_image(1600, 1200)
    Path(gone.file.path).unlink()
    post = run(lambda: make_post(blog, "p", images=[gone]))
    assert post.live
    assert Failure.objects.filter(image=gone).exists()


def test_a_task_for_a_deleted_image_does_nothing(blog):
    a = make_image(1600, 1200)
    make_post(blog, "p", images=[a])
    image_id = a.pk
    Image.objects.get(pk=image_id).delete()
    assert "deleted" in tasks.generate_image_renditions(image_id) or "lease" in tasks.generate_image_renditions(
        image_id
    )
    assert not Rendition.objects.filter(image_id=image_id).exists()


def test_a_task_after_unpublish_makes_nothing(blog):
    a = make_image(1600, 1200)
    post = make_post(blog, "p", images=[a])
    post.unpublish()
    tasks.generate_image_renditions(a.pk)
    assert renditions(a) == set()


def test_ledger_sync_is_idempotent(blog, run):
    a = make_image(1600, 1200)
    post = run(lambda: make_post(blog, "p", images=[a]))
    change = ledger.sync_posts([post.pk])
    assert not change.added and not change.removed and not change.queued_images


class OpenHookStorage(FileSystemStorage):
    """Filesystem storage that runs a callback once, right after an original was opened (fault injection)."""

    on_open = None

    def open(self, name, mode="rb"):
        handle = super().open(name, mode)
        callback, OpenHookStorage.on_open = OpenHookStorage.on_open, None
        if callback and name.startswith("original_images/"):
            callback()
        return handle


def test_renditions_made_from_a_file_replaced_meanwhile_are_made_again(blog, run, settings):
    """The worker read the old file; the editor replaced it before the worker saved its renditions."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    settings.STORAGES = {**settings.STORAGES, "default": {"BACKEND": f"{__name__}.OpenHookStorage"}}
    a = make_image(1600, 1200)
    post = make_post(blog, "p", images=[a])

    def replace():  # same size, so the same specs: only the content tells old from new
        red = io.BytesIO()
        PILImage.new("RGB", (1600, 1200), (255, 0, 0)).save(red, "JPEG")
        fresh = Image.objects.get(pk=a.pk)
        fresh.file = SimpleUploadedFile("red.jpg", red.getvalue(), content_type="image/jpeg")
        fresh._set_image_file_metadata()
        fresh.save()

    OpenHookStorage.on_open = replace
    run()
    assert OpenHookStorage.on_open is None, "the replacement did not happen during generation"
    assert renditions(a) == required(post)
    for spec, (red, green, _) in mean_colours(a).items():
        assert red > 200 and green < 60, f"{spec} was made from the old file, not the replacement"


def mean_colours(image) -> dict[str, tuple[int, int, int]]:
    """The mean colour of each of the image's renditions, read back from storage."""
    colours = {}
    for rendition in Rendition.objects.filter(image=image):
        with rendition.file.open() as handle, PILImage.open(handle) as picture:
            colours[rendition.filter_spec] = picture.convert("RGB").resize((1, 1)).getpixel((0, 0))
    return colours


def test_renditions_made_while_the_file_was_replaced_twice_under_the_same_name_are_made_again(blog, run, settings):
    """Wagtail's edit form deletes a replaced original, so a second replacement can take the first one's name
    again: the worker must not take the name for the content."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    settings.STORAGES = {**settings.STORAGES, "default": {"BACKEND": f"{__name__}.OpenHookStorage"}}
    a = make_image(1600, 1200)
    post = make_post(blog, "p", images=[a])
    first_name = a.file.name

    def replace_twice():  # blue under a new name, then red under the first name (the form deleted the first file)
        fresh = Image.objects.get(pk=a.pk)
        for colour, upload_name in (((0, 0, 255), "blue.jpg"), ((255, 0, 0), Path(first_name).name)):
            content = io.BytesIO()
            PILImage.new("RGB", (1600, 1200), colour).save(content, "JPEG")
            replaced = fresh.file.name
            fresh.file = SimpleUploadedFile(upload_name, content.getvalue(), content_type="image/jpeg")
            fresh._set_image_file_metadata()  # what Wagtail's edit form does: size and content hash
            fresh.save()
            fresh.file.storage.delete(replaced)  # what Wagtail's edit form does with the replaced original
        assert fresh.file.name == first_name

    OpenHookStorage.on_open = replace_twice
    run()
    assert OpenHookStorage.on_open is None, "the replacement did not happen during generation"
    assert renditions(a) == required(post)
    for spec, (red, _, blue) in mean_colours(a).items():
        assert red > 200 and blue < 60, f"{spec} was made from an earlier file of the same name"


def test_a_post_published_while_its_image_renders_gets_its_renditions_in_the_same_task(blog, run, settings):
    """New claims for an image whose task is running give the queue entry a new token: the task goes round again
    instead of dropping the entry with the new work undone."""
    settings.STORAGES = {**settings.STORAGES, "default": {"BACKEND": f"{__name__}.OpenHookStorage"}}
    a = make_image(1600, 1200)
    first = make_post(blog, "first", images=[a])
    second = []
    OpenHookStorage.on_open = lambda: second.append(make_post(blog, "second", galleries=[[a]]))  # new specs for a
    run()
    assert second, "the second post was not published during generation"
    assert required(second[0]) - required(first), "the gallery needs specs the regular image does not"
    assert renditions(a) == required(first) | required(second[0])
    assert not QueuedImage.objects.exists()


def test_sweep_releases_claims_that_outlived_their_post_or_image(blog, run):
    """A claim written while another editor deleted the post (no DB constraint fails that commit) is released."""
    a = make_image(1600, 1200)
    post = run(lambda: make_post(blog, "p", images=[a]))
    spec = sorted(required(post))[0][1]
    orphan = make_image(800, 600)
    run(lambda: orphan.get_rendition(spec))
    Claim.objects.create(post_id=post.pk + 1000, image_id=orphan.pk, filter_specs=[spec])  # its post is gone
    Claim.objects.create(post_id=post.pk, image_id=orphan.pk + 1000, filter_specs=[spec])  # its image is gone
    gone = orphan.pk + 1000
    QueuedImage.objects.create(image_id=gone)
    PendingDeletion.objects.create(image_id=gone, filter_spec=spec, due_at=timezone.now() + timedelta(hours=1))
    Failure.objects.create(image_id=gone, filter_spec=spec, error="x")
    run(tasks.sweep)
    assert not any(m.objects.filter(image_id=gone).exists() for m in (QueuedImage, PendingDeletion, Failure))
    assert claims() == required(post)
    assert renditions(orphan) == set()  # released, and with no grace period deleted
    assert renditions(a) == required(post)


def test_an_error_no_retry_can_mend_is_not_retried(blog, run):
    """django-cast plans raster formats for an SVG; Wagtail refuses them: one attempt, then left for an operator."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    svg = (
        b'<svg xmlns="http://www.w3.org/2000/svg" width="1600" height="1200"><rect width="1600" height="1200"/></svg>'
    )
    image = Image(title="logo", file=SimpleUploadedFile("logo.svg", svg, content_type="image/svg+xml"))
    image.save()
    post = run(lambda: make_post(blog, "p", images=[image]))
    assert post.live
    failures = list(Failure.objects.filter(image=image))
    # Wagtail 7.1+ raises InvalidFilterSpecError; 7.0's SVG image class has no raster operations (AttributeError).
    assert failures and all(
        f.attempts == 3 and ("InvalidFilterSpec" in f.error or "SvgImage" in f.error) for f in failures
    )
    run(tasks.sweep)
    assert [f.attempts for f in Failure.objects.filter(image=image)] == [3] * len(failures)


def test_a_claim_is_one_row_per_post_and_image_that_keeps_its_time(blog):
    photo = make_image(1200, 800)
    post = make_post(blog, "inserted", images=[photo], publish=False)
    before = timezone.now()
    ledger.write_claims([(post.pk, photo.pk, ["width-200", "width-100"])])
    claim = Claim.objects.get(post=post)
    assert claim.filter_specs == ["width-100", "width-200"]
    assert before - timedelta(seconds=1) <= claim.created_at <= timezone.now()
    ledger.write_claims([(post.pk, photo.pk, ["width-300", "width-100"])])  # the same row, other specs
    again = Claim.objects.get(post=post)
    assert (again.pk, again.created_at, again.filter_specs) == (claim.pk, claim.created_at, ["width-100", "width-300"])
    per_rendition = ClaimedRendition.objects.filter(post=post, image=photo).values_list("filter_spec", flat=True)
    assert sorted(per_rendition) == ["width-100", "width-300"]


def test_post_images_are_what_django_cast_yields(blog):
    """The ledger loads a post's images without model instances; it must see what ``get_all_images()`` sees."""
    a, b, c, d = make_image(1600, 1200), make_image(300, 200), make_image(1200, 1600), make_image(640, 480)
    post = make_post(blog, "mixed", images=[a, b], galleries=[[a, c], [c, d]])
    other = make_post(blog, "other", images=[d])
    empty = make_post(blog, "empty")
    found = ledger.post_images({post.pk, other.pk, empty.pk})
    for page in (post, other, empty):
        page = type(page).objects.get(pk=page.pk)
        expected = sorted(
            (kind, image.pk, image.width, image.height, image.file.name) for kind, image in page.get_all_images()
        )
        rows = sorted((kind, row.pk, row.width, row.height, row.file_name) for kind, row in found[page.pk])
        assert rows == expected
    assert found[empty.pk] == []
    assert ledger.requirement_for_posts({post.pk})[post.pk].keys == required(post)


@pytest.mark.parametrize("kind", ["first", "again"])
def test_the_query_count_of_a_sync_does_not_grow_with_the_post(blog, kind):
    """#6: every read and write of a sync is one statement for all of a post's images (no query per image)."""
    from cast.post_media import prepare_post_media
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    counts = {}
    for size in (2, 9):
        photos = [make_image(300 + n, 200) for n in range(size)]  # a shape each: planned one by one
        post = make_post(blog, f"size-{size}", images=photos[:1], galleries=[photos[1:]], publish=False)
        type(post).objects.filter(pk=post.pk).update(live=True)
        prepare_post_media(post, create_renditions=False)
        if kind == "again":
            ledger.sync_posts([post.pk])
        with CaptureQueriesContext(connection) as queries, transaction.atomic():
            change = ledger.sync_posts([post.pk])
        assert len(change.added) == (len(required(post)) if kind == "first" else 0)
        counts[size] = len(queries)
    assert counts[2] == counts[9]


def test_a_sync_that_fails_in_the_request_is_done_by_a_worker(
    blog, monkeypatch, caplog, django_capture_on_commit_callbacks
):
    """The publish goes on when its ledger sync fails (a deadlock, a database hiccup), and after the commit a
    django-q2 task syncs the post, so its claims do not stay stale until someone runs ``check --fix``."""
    import django_q.conf
    from django.db import OperationalError

    sync_posts, calls = ledger.sync_posts, []

    def fails_once(post_ids):  # fault injection: the first sync fails
        calls.append(set(post_ids))
        if len(calls) == 1:
            raise OperationalError("deadlock detected (injected)")
        return sync_posts(post_ids)

    monkeypatch.setattr(ledger, "sync_posts", fails_once)
    monkeypatch.setattr(django_q.conf.Conf, "SYNC", True)  # django-q2 runs the task in this process
    photo = make_image(600, 400)
    with django_capture_on_commit_callbacks(execute=True):
        post = make_post(blog, "deferred", images=[photo])
        assert claims(post) == set()  # the failed sync left nothing half-done
    assert type(post).objects.get(pk=post.pk).live
    assert "a worker will sync them" in caplog.text
    assert calls == [{post.pk}, {post.pk}]
    assert claims(post) == required(post) != set()
