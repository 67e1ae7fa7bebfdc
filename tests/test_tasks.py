"""The generation task's lease: attempts counted when it is taken, a heartbeat that keeps it, the sweep that
takes it back. In-process, with faults induced where a worker would time out, die or stall."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from django_q.exceptions import TimeoutException
from wagtail.images.models import Rendition

from auto_renditions import generation, ledger, queue, status, tasks
from auto_renditions.models import Claim, Failure, QueuedImage
from tests.factories import make_image, make_post


def claimed(image) -> set[str]:
    return {
        spec for specs in Claim.objects.filter(image=image).values_list("filter_specs", flat=True) for spec in specs
    }


def expire_leases() -> None:
    """Jump the clock past every lease instead of sleeping through it."""
    QueuedImage.objects.filter(leased_until__isnull=False).update(leased_until=timezone.now() - timedelta(seconds=1))


@pytest.fixture
def enqueued(monkeypatch) -> list[int]:
    """The image ids the code under test hands to the broker (still handed over)."""
    calls: list[int] = []
    original = queue.enqueue_generation

    def record(image_ids):
        ids = sorted(set(image_ids))
        calls.extend(ids)
        return original(ids)

    monkeypatch.setattr(queue, "enqueue_generation", record)
    return calls


@pytest.mark.django_db
def test_the_sweep_keeps_a_lease_a_redelivered_task_took_after_it_looked(blog, enqueued, monkeypatch):
    """Finding 10: the sweep reads the expired leases, then a redelivered task takes one, then the sweep frees
    the leases it read. It must free only those still expired, or a second task renders the same image."""
    image = make_image(300, 200)
    make_post(blog, "p", images=[image])
    assert QueuedImage.objects.filter(image=image).exists()
    QueuedImage.objects.filter(image=image).update(leased_until=timezone.now() - timedelta(seconds=1))

    lock_images = ledger.lock_images
    redelivered = []

    def lock_images_after_a_task_took_the_lease(image_ids):
        if not redelivered:  # between the sweep's read of the expired leases and its update of them
            redelivered.append(tasks._acquire_lease(image.pk))
        return lock_images(image_ids)

    monkeypatch.setattr(ledger, "lock_images", lock_images_after_a_task_took_the_lease)
    tasks.sweep()
    monkeypatch.setattr(ledger, "lock_images", lock_images)

    assert redelivered and redelivered[0] is not None, "the redelivered task took the lease"
    assert image.pk not in enqueued, "the sweep queued a second task for an image whose lease is held"
    assert tasks._acquire_lease(image.pk) is None, "the lease was freed under the task that holds it"


@pytest.mark.django_db
def test_retry_locks_the_posts_before_the_image(blog, monkeypatch):
    """Finding 10: every transaction locks posts, then images (a publish does); the retry view did it the other
    way round, so a retry and a publish of a post showing the image could deadlock."""
    image = make_image(300, 200)
    post = make_post(blog, "p", images=[image])
    Failure.objects.create(image=image, filter_spec=ledger.WHOLE_IMAGE, error="could not plan", attempts=3)
    order: list[tuple[str, set[int]]] = []
    for name, kind in (("lock_posts", "posts"), ("lock_images", "images")):
        original = getattr(ledger, name)

        def record(ids, original=original, kind=kind):
            order.append((kind, set(ids)))
            return original(ids)

        monkeypatch.setattr(ledger, name, record)
    client = Client()
    assert client.login(username="editor", password="password")
    assert client.post(f"/cms/auto-renditions/retry/{image.pk}/").status_code == 302
    assert order and order[0] == ("posts", {post.pk}), f"first lock taken: {order[:1]}"
    kinds = [kind for kind, _ in order]
    assert kinds.index("images") > kinds.index("posts")


@pytest.mark.django_db
def test_a_task_stopped_by_its_timeout_uses_an_attempt_and_gives_up_after_the_last(blog, enqueued, settings):
    """Finding 2: django-q2 raises its timeout as a SystemExit. Each one counts; after MAX_ATTEMPTS the missing
    renditions are failures shown by ``status``, and the sweep stops queueing the image."""
    settings.AUTO_RENDITIONS = {"DELETE_GRACE_SECONDS": 0, "MAX_ATTEMPTS": 2}
    image = make_image(600, 400)
    post = make_post(blog, "p", images=[image])
    specs = claimed(image)
    assert specs

    def too_slow(image, specs):
        raise TimeoutException("Task exceeded maximum timeout value (1 seconds)")

    original = generation.render
    generation.render = too_slow
    try:
        with pytest.raises(TimeoutException):
            tasks.generate_image_renditions(image.pk)
        entry = QueuedImage.objects.get(image=image)
        assert entry.attempts == 1 and "timed out" in entry.error
        assert entry.leased_until <= timezone.now(), "handed back at once, not after the lease"
        assert not Failure.objects.filter(image=image).exists()

        tasks.sweep()
        assert enqueued.count(image.pk) == 1, "the sweep queues the next attempt"
        with pytest.raises(TimeoutException):
            tasks.generate_image_renditions(image.pk)
    finally:
        generation.render = original

    failures = Failure.objects.filter(image=image)
    assert set(failures.values_list("filter_spec", flat=True)) == specs
    assert all(f.attempts == 2 and "timed out" in f.error for f in failures)
    assert not QueuedImage.objects.filter(image=image).exists()
    assert status.exhausted_failures().count() == len(specs)
    [progress] = status.post_progress([post.pk])
    assert progress.failed == len(specs)

    tasks.sweep()
    assert enqueued.count(image.pk) == 1, "no attempt after the last"
    assert not QueuedImage.objects.filter(image=image).exists()


@pytest.mark.django_db
def test_a_worker_that_dies_without_a_word_uses_its_attempts(blog, enqueued, settings):
    """A SIGKILL or an out-of-memory kill leaves nothing but the lease: taking it counted the attempt, and once
    the attempts are used up the sweep records the failures instead of queueing the image again."""
    settings.AUTO_RENDITIONS = {"DELETE_GRACE_SECONDS": 0, "MAX_ATTEMPTS": 3}
    image = make_image(600, 400)
    make_post(blog, "p", images=[image])
    for attempt in range(1, 4):
        assert tasks._acquire_lease(image.pk) is not None, f"attempt {attempt} takes the lease"
        # ... and dies here without a word.
        expire_leases()
        tasks.sweep()
    assert enqueued.count(image.pk) == 2, "re-queued after the first two deaths, not after the third"
    failures = Failure.objects.filter(image=image)
    assert set(failures.values_list("filter_spec", flat=True)) == claimed(image)
    assert all(f.attempts == 3 and tasks.DIED in f.error for f in failures)
    assert not QueuedImage.objects.filter(image=image).exists()


@pytest.mark.django_db
def test_a_task_that_finishes_clears_its_attempts(blog, settings, settle):
    settings.AUTO_RENDITIONS = {"DELETE_GRACE_SECONDS": 0, "MAX_ATTEMPTS": 2}
    image = make_image(600, 400)
    make_post(blog, "p", images=[image])
    assert tasks._acquire_lease(image.pk) is not None  # a first attempt died
    expire_leases()
    assert "made" in tasks.generate_image_renditions(image.pk)
    assert not QueuedImage.objects.exists() and not Failure.objects.exists()
    assert set(Rendition.objects.filter(image=image).values_list("filter_spec", flat=True)) >= claimed(image)


@pytest.mark.django_db(transaction=True)
def test_a_long_healthy_render_keeps_its_short_lease(blog, settings, monkeypatch):
    """The heartbeat renews the lease while the task runs: a render longer than the lease is not taken over."""
    settings.AUTO_RENDITIONS = {"DELETE_GRACE_SECONDS": 0, "TASK_TIMEOUT": 2}  # a 12-second lease
    assert tasks.lease_seconds() == 12
    image = make_image(300, 200)
    make_post(blog, "p", images=[image])
    seen = {}
    original = generation.render

    def slow(image, specs):
        time.sleep(tasks.lease_seconds() + 4)
        entry = QueuedImage.objects.get(image_id=image.pk)
        seen["left"] = (entry.leased_until - timezone.now()).total_seconds()
        seen["second task"] = tasks._acquire_lease(image.pk)
        return original(image, specs)

    monkeypatch.setattr(generation, "render", slow)
    assert "made" in tasks.generate_image_renditions(image.pk)
    assert seen["left"] > 0, "the lease ran out under a task that was still working"
    assert seen["second task"] is None
    assert not QueuedImage.objects.exists()
