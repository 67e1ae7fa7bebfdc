"""The pipeline with a real ``manage.py qcluster`` process draining the real broker (ORM or Redis)."""

import os
import signal
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import close_old_connections, connection
from wagtail.images.models import Image, Rendition

from auto_renditions import status, tasks
from auto_renditions.models import Claim, Failure, QueuedImage
from tests.factories import edit_post, make_image, make_post, photo_bytes
from tests.harness import Worker, broker_queue_size, drained, wait_until
from tests.pages import media_file, media_urls

# serialized_rollback: restore what the migrations created (root page, site, collection) after each flush.
pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True, serialized_rollback=True)]


def required(post) -> set:
    from cast.renditions import RenditionFilters

    post = type(post).objects.get(pk=post.pk)
    return {
        (image.pk, spec)
        for image_type, image in post.get_all_images()
        for spec in RenditionFilters.from_wagtail_image_with_type(image, image_type).filter_strings
    }


def renditions(*images) -> set:
    return set(Rendition.objects.filter(image__in=images).values_list("image_id", "filter_spec"))


def files_of(*images) -> set[Path]:
    return {
        Path(settings.MEDIA_ROOT) / name
        for name in Rendition.objects.filter(image__in=images).values_list("file", flat=True)
    }


def test_publish_queues_on_commit_and_a_worker_process_makes_the_renditions(blog, client):
    shared, a, b = make_image(1600, 1200), make_image(1200, 1600), make_image(600, 400, fmt="PNG", mode="RGBA")
    one = make_post(blog, "one", images=[shared, a], galleries=[[shared, b]])
    two = make_post(blog, "two", images=[shared])

    # Nothing happened in the request: no rendition, the work sits in the broker, committed.
    assert not Rendition.objects.exists()
    assert set(QueuedImage.objects.values_list("image_id", flat=True)) == {shared.pk, a.pk, b.pk}
    assert broker_queue_size() >= 3
    _, problems = media_urls(client.get(one.url).content.decode())
    assert problems == []

    with Worker() as worker:
        wait_until(drained, worker=worker, what="the queue to drain")
        assert renditions(shared, a, b) == required(one) | required(two)
        assert all(path.exists() for path in files_of(shared, a, b))
        urls, problems = media_urls(client.get(one.url).content.decode())
        assert problems == [] and all(media_file(url).exists() for url in urls)
        assert not [url for url in urls if "/original_images/" in url]

        # Removed from one post: kept for the other. Removed from both: row and file go.
        kept = {
            Path(settings.MEDIA_ROOT) / r.file.name
            for r in Rendition.objects.filter(image=shared)
            if (shared.pk, r.filter_spec) in required(two)
        }
        gallery_only = files_of(shared) - kept
        assert kept and gallery_only  # `one` shows it in a gallery too, `two` only as a regular image
        edit_post(one, images=[a], galleries=[[b]])
        wait_until(drained, worker=worker, what="the edit to settle")
        assert renditions(shared) == required(two)
        assert all(path.exists() for path in kept)
        assert not any(path.exists() for path in gallery_only)
        shared_files = files_of(shared)

        edit_post(two, images=[])
        wait_until(lambda: not Rendition.objects.filter(image=shared).exists(), worker=worker, what="deletion")
        wait_until(lambda: not any(path.exists() for path in shared_files), worker=worker, what="file removal")
        assert renditions(a, b) == required(one)

        # Unpublish and delete release everything they held.
        a_files = files_of(a, b)
        one.unpublish()
        wait_until(lambda: not Rendition.objects.filter(image__in=[a, b]).exists(), worker=worker, what="unpublish")
        # Files go after the deleting transaction commits: rows can be seen gone a moment before.
        wait_until(lambda: not any(path.exists() for path in a_files), worker=worker, what="file removal")
        assert not Claim.objects.exists()


def test_a_large_post_is_queued_with_one_task_and_a_worker_fans_it_out(blog):
    from auto_renditions import queue

    photos = [make_image(320, 240) for _ in range(queue.FAN_OUT_ABOVE + 2)]
    before = broker_queue_size()
    post = make_post(blog, "large", galleries=[photos])
    assert broker_queue_size() == before + 1, "one task for the whole post, however many images"
    assert QueuedImage.objects.count() == len(photos)

    with Worker() as worker:
        wait_until(drained, worker=worker, what="the fanned-out tasks to drain")
        assert renditions(*photos) == required(post)


def test_replacing_the_file_in_the_wagtail_admin_regenerates(blog, admin_client):
    photo = make_image(1600, 1200)
    post = make_post(blog, "p", images=[photo])
    with Worker() as worker:
        wait_until(drained, worker=worker, what="first generation")
        old = files_of(photo)
        assert old and renditions(photo) == required(post)

        response = admin_client.post(
            f"/cms/images/{photo.pk}/",
            {
                "title": "replaced",
                "file": SimpleUploadedFile("portrait.jpg", photo_bytes(1200, 1800, seed=7), content_type="image/jpeg"),
                "collection": photo.collection_id,
                "tags": "",
                "focal_point_x": "",
                "focal_point_y": "",
                "focal_point_width": "",
                "focal_point_height": "",
            },
        )
        assert response.status_code == 302, response.content[:2000]
        photo.refresh_from_db()
        assert (photo.width, photo.height) == (1200, 1800)

        wait_until(lambda: drained() and renditions(photo) == required(post), worker=worker, what="regeneration")
        assert not (files_of(photo) & old)
        assert not any(path.exists() for path in old)
        assert all(path.exists() for path in files_of(photo))


def test_a_missing_original_is_recorded_and_the_other_images_are_made(blog, settings):
    settings.AUTO_RENDITIONS = {"DELETE_GRACE_SECONDS": 0, "MAX_ATTEMPTS": 1}
    good, gone = make_image(1600, 1200), make_image(1600, 1200)
    Path(gone.file.path).unlink()
    post = make_post(blog, "p", images=[good, gone])
    assert type(post).objects.get(pk=post.pk).live
    with Worker(app_settings={"MAX_ATTEMPTS": 1}) as worker:
        wait_until(drained, worker=worker, what="the queue to drain")
    assert renditions(good) == {key for key in required(post) if key[0] == good.pk}
    assert renditions(gone) == set()
    failures = list(Failure.objects.filter(image=gone))
    assert failures and all("SourceImageIOError" in f.error or "FileNotFound" in f.error for f in failures)
    assert Image.objects.filter(pk=gone.pk).exists()


def deliveries(worker: Worker, image) -> int:
    """How many generation tasks for ``image`` the cluster started (django-q2 logs each at INFO)."""
    name = f"auto_renditions.generate.{image.pk}"
    return sum(1 for line in worker.output().splitlines() if "processing" in line and name in line)


def given_up(image) -> bool:
    close_old_connections()
    return Failure.objects.filter(image=image).exists() and not QueuedImage.objects.filter(image=image).exists()


def sweeping(predicate, seconds: float = 1.0):
    """``predicate``, with the sweep run in between as its every-minute schedule would (sooner, to save time)."""

    def check() -> bool:
        if predicate():
            return True
        tasks.sweep()
        time.sleep(seconds)
        return False

    return check


def test_a_task_that_exceeds_its_timeout_is_tried_max_attempts_times_then_reported(blog, settings):
    """Finding 2: django-q2 stops a task at its timeout with a SystemExit (and SIGTERMs the worker 3 s later).
    Each such stop uses an attempt; after MAX_ATTEMPTS the missing renditions are failures, and nothing
    queues the image again."""
    limits = {"TASK_TIMEOUT": 1, "MAX_ATTEMPTS": 2}
    settings.AUTO_RENDITIONS = {"DELETE_GRACE_SECONDS": 0, **limits}
    big = make_image(6000, 4000, seed=3)  # seconds of AVIF encoding: far over a 1-second timeout
    post = make_post(blog, "too-slow", images=[big])
    with Worker(app_settings=limits) as worker:
        wait_until(sweeping(lambda: given_up(big)), timeout=150, worker=worker, what="the image to be given up")
        for _ in range(3):  # later sweeps leave it alone
            tasks.sweep()
            time.sleep(1)
        log = worker.output()
        assert deliveries(worker, big) == 2, log[-4000:]
    failures = Failure.objects.filter(image=big)
    # The smallest specs may be made within the second before a stop (they are rendered one by one): every claimed
    # spec still missing is a failure.
    made = set(Rendition.objects.filter(image=big).values_list("filter_spec", flat=True))
    missing = {spec for i, spec in required(post) if i == big.pk} - made
    assert missing and set(failures.values_list("filter_spec", flat=True)) == missing
    assert all(f.attempts == 2 and ("timed out" in f.error or tasks.DIED in f.error) for f in failures)
    assert status.exhausted_failures().filter(image=big).count() == failures.count()
    assert not QueuedImage.objects.exists() and broker_queue_size() == 0


def test_a_database_connection_dropped_mid_render_is_counted_and_recorded(blog, settings):
    """Finding 2: a connection killed under the worker (``pg_terminate_backend``, an ``idle_session_timeout``)
    ends the task with a database error; the attempt counts and says why."""
    if connection.vendor != "postgresql":
        pytest.skip("pg_terminate_backend: runs in the PostgreSQL legs")
    settings.AUTO_RENDITIONS = {"DELETE_GRACE_SECONDS": 0, "MAX_ATTEMPTS": 1}
    big = make_image(6000, 4000, seed=4)
    make_post(blog, "dropped", images=[big])
    with Worker(app_settings={"MAX_ATTEMPTS": 1}) as worker:
        wait_until(
            lambda: QueuedImage.objects.filter(image=big, leased_until__isnull=False).exists(),
            worker=worker,
            what="the worker to take the lease",
        )
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        wait_until(sweeping(lambda: given_up(big)), timeout=120, worker=worker, what="the attempt to be recorded")
    failures = list(Failure.objects.filter(image=big))
    assert failures and all("database connection" in f.error for f in failures), [f.error for f in failures]
    wanted = {
        spec for specs in Claim.objects.filter(image=big).values_list("filter_specs", flat=True) for spec in specs
    }
    made = set(Rendition.objects.filter(image=big).values_list("filter_spec", flat=True))
    assert {f.filter_spec for f in failures} == wanted - made


def test_a_killed_worker_is_taken_over_after_the_short_lease(blog):
    """Finding 15: the whole qcluster is SIGKILLed mid-render. Its lease is renewed by a heartbeat, not held for
    TASK_TIMEOUT + 60 s, so the image is queued again and finished about a minute later, not six."""
    big = make_image(6000, 4000, seed=5)
    post = make_post(blog, "killed", images=[big])
    wanted = {key for key in required(post) if key[0] == big.pk}
    with Worker() as worker:
        wait_until(
            lambda: QueuedImage.objects.filter(image=big, leased_until__isnull=False).exists(),
            worker=worker,
            what="the worker to take the lease",
        )
        time.sleep(1.5)
        os.killpg(worker.process.pid, signal.SIGKILL)
        worker.process.wait()
    killed = time.monotonic()
    assert renditions(big) != wanted, "the kill came too late: generation had already finished"

    requeued: list[float] = []

    def taken_over() -> bool:
        close_old_connections()
        if "re-queued 0 lost" not in tasks.sweep():  # what the every-minute schedule does, every 2 s here
            requeued.append(time.monotonic() - killed)
            return True
        time.sleep(2)
        return False

    with Worker() as fresh:
        wait_until(taken_over, timeout=tasks.LEASE_SECONDS + 90, interval=0, worker=fresh, what="the takeover")

        def finished() -> bool:
            close_old_connections()
            return renditions(big) == wanted and drained()

        wait_until(finished, timeout=300, interval=1, worker=fresh, what="the image to be finished")
    done = time.monotonic() - killed
    print(f"killed worker's image re-queued {requeued[0]:.0f} s and finished {done:.0f} s after the kill")
    # The lease runs out LEASE_SECONDS after its last renewal, at most a quarter of that before the kill.
    assert requeued[0] < tasks.LEASE_SECONDS + 10
