"""A preview warms the draft's renditions up: the draft claims them provisionally, a worker makes them, and
nothing a draft owned outlives it (published, deleted or expired)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from wagtail.images.models import Rendition

from auto_renditions import tasks
from auto_renditions.models import Claim, DraftClaim, PendingDeletion, QueuedImage
from tests.factories import make_image, make_post, publish_post
from tests.harness import Worker, broker_queue_size, drained, wait_until
from tests.pages import media_urls
from tests.test_preview import admin_preview

pytestmark = pytest.mark.django_db


def keys(*images) -> set[tuple[int, str]]:
    return set(Rendition.objects.filter(image__in=images).values_list("image_id", "filter_spec"))


def draft_keys(post) -> set[tuple[int, str]]:
    return {(c.image_id, s) for c in DraftClaim.objects.filter(post=post) for s in c.filter_specs}


def preview(client, post, images, callbacks) -> str:
    with callbacks(execute=True):  # the request's on-commit work (the task) runs, as outside a test transaction
        return admin_preview(client, post, images=images)


def test_preview_queues_the_drafts_renditions_once(blog, client, settle, django_capture_on_commit_callbacks):
    photos = [make_image(1600, 1200), make_image(1200, 1600)]
    post = make_post(blog, "draft", publish=False)
    # A Redis broker's queue is not rolled back with the test database: count what this test adds.
    tasks_before = broker_queue_size()

    preview(client, post, photos, django_capture_on_commit_callbacks)
    assert {i for i, _ in draft_keys(post)} == {p.pk for p in photos}
    assert set(QueuedImage.objects.values_list("image_id", flat=True)) == {p.pk for p in photos}
    tasks_after_first, tokens = broker_queue_size(), set(QueuedImage.objects.values_list("token", flat=True))
    assert tasks_after_first - tasks_before == 2

    preview(client, post, photos, django_capture_on_commit_callbacks)  # the live preview panel, again
    assert broker_queue_size() == tasks_after_first
    assert set(QueuedImage.objects.values_list("token", flat=True)) == tokens

    settle()
    assert keys(*photos) == draft_keys(post)  # made by the worker's task, from the draft's claims
    before = Rendition.objects.count()
    urls, problems = media_urls(preview(client, post, photos, django_capture_on_commit_callbacks))
    assert problems == [] and Rendition.objects.count() == before
    assert not [url for url in urls if "/original_images/" in url]  # the preview shows the renditions now


def test_publishing_hands_the_draft_claims_over(blog, client, settle, django_capture_on_commit_callbacks):
    photos = [make_image(1600, 1200), make_image(1200, 1600)]
    post = make_post(blog, "draft", publish=False)
    preview(client, post, photos, django_capture_on_commit_callbacks)
    settle()
    warmed = draft_keys(post)

    post = type(post).objects.get(pk=post.pk)  # the preview saved no revision; publish the same body
    from tests.factories import body

    post.body = body(photos)
    with django_capture_on_commit_callbacks(execute=True):
        publish_post(post)

    assert not DraftClaim.objects.exists()
    assert {(c.image_id, s) for c in Claim.objects.filter(post=post) for s in c.filter_specs} == warmed
    assert not PendingDeletion.objects.exists()
    assert not QueuedImage.objects.exists()  # everything was made from the preview: ready when it goes live


def test_an_expired_draft_leaves_nothing_but_what_a_live_post_claims(
    blog, client, settle, settings, django_capture_on_commit_callbacks
):
    settings.AUTO_RENDITIONS = {"DELETE_GRACE_SECONDS": 0}
    shared, own = make_image(1600, 1200), make_image(1200, 1600)
    live = make_post(blog, "live", images=[shared])
    settle()
    live_keys = keys(shared)
    draft = make_post(blog, "draft", publish=False)
    preview(client, draft, [shared, own], django_capture_on_commit_callbacks)
    settle()
    assert keys(own)

    DraftClaim.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    with django_capture_on_commit_callbacks(execute=True):
        tasks.sweep()
    settle()

    assert not DraftClaim.objects.exists()
    assert keys(own) == set()  # the abandoned draft's renditions are gone
    assert keys(shared) == live_keys  # the live post's are not
    assert Claim.objects.filter(post=live).exists()


def test_deleting_a_draft_releases_its_claims(blog, client, settle, django_capture_on_commit_callbacks):
    photo = make_image(1600, 1200)
    draft = make_post(blog, "draft", publish=False)
    preview(client, draft, [photo], django_capture_on_commit_callbacks)
    settle()
    made = keys(photo)

    draft.delete()

    assert not DraftClaim.objects.exists()
    assert set(PendingDeletion.objects.values_list("image_id", "filter_spec")) == made


@pytest.mark.worker
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_with_a_worker_a_previewed_post_is_ready_when_it_goes_live(blog, client):
    photos = [make_image(1600, 1200), make_image(1200, 1600)]
    post = make_post(blog, "draft", publish=False)
    with Worker() as worker:
        admin_preview(client, post, images=photos)
        wait_until(drained, worker=worker, what="the preview's warm-up")
        from tests.factories import body

        post = type(post).objects.get(pk=post.pk)
        post.body = body(photos)
        publish_post(post)
        assert not QueuedImage.objects.exists()  # nothing left to make: the warm-up made it all
        urls, problems = media_urls(client.get(post.url).content.decode())
        assert problems == [] and not [url for url in urls if "/original_images/" in url]


def test_status_report_and_check_show_draft_owned_work(blog, client, settle, django_capture_on_commit_callbacks):
    from tests.test_admin import REPORT
    from tests.test_command import run_json

    photo = make_image(1600, 1200)
    draft = make_post(blog, "draft", publish=False)
    preview(client, draft, [photo], django_capture_on_commit_callbacks)
    claimed = len(draft_keys(draft))

    _, data = run_json("status")
    assert data["drafts"] == {"drafts": 1, "renditions": claimed, "missing": claimed, "expired": 0}
    assert data["posts_not_ready"] == []  # a draft is not a live post: its work is shown apart
    html = client.get(REPORT).content.decode()
    assert f'data-summary="draft_renditions">{claimed}<' in html

    settle()
    DraftClaim.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    code, found = run_json("check")
    assert code == 1 and {v["kind"] for v in found["violations"]} == {"expired_draft"}
    with django_capture_on_commit_callbacks(execute=True):
        code, _ = run_json("check", "--fix")
    assert not DraftClaim.objects.exists()
    assert set(PendingDeletion.objects.values_list("image_id", "filter_spec")) == keys(photo)
