"""Listeners and the enqueue after commit: what an editor's action does when parts around it fail."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import OperationalError
from django.db.models.deletion import Collector
from wagtail.images.models import Rendition

from auto_renditions import ledger, queue, tasks
from auto_renditions.models import ClaimedRendition, QueuedImage
from tests.factories import body, make_image, make_post, photo_bytes, publish_post, required
from tests.harness import Worker, wait_until

pytestmark = pytest.mark.django_db


def claims(post) -> set:
    return set(ClaimedRendition.objects.filter(post_id=post.pk).values_list("image_id", "filter_spec"))


def queued_functions() -> list[str]:
    """Take every task out of the broker; their function names."""
    from django_q.brokers import get_broker
    from django_q.signing import SignedPackage

    broker, found = get_broker(), []
    while task := broker.dequeue():
        for _, package in task:
            found.append(SignedPackage.loads(package)["func"])
    return found


# --- finding 6: pre_delete per post model ---------------------------------------------------------------------


def test_deleting_sessions_and_queue_rows_keeps_djangos_fast_delete():
    """A pre_delete receiver without a sender turned off the fast delete of every model of the site."""
    from django.contrib.sessions.models import Session
    from django_q.models import OrmQ, Task

    for model in (Session, OrmQ, Task):
        assert Collector(using="default").can_fast_delete(model.objects.all()), model


def test_deleting_a_post_or_an_episode_still_releases_its_claims(blog, django_capture_on_commit_callbacks):
    from cast.models import Audio, Episode, Podcast
    from wagtail.models import Site

    podcast = Podcast(title="Pod", slug="pod", owner=blog.owner)
    Site.objects.get(is_default_site=True).root_page.add_child(instance=podcast)
    audio = Audio.objects.create(user=blog.owner, m4a=SimpleUploadedFile("a.m4a", b"\x00" * 64))
    a, b = make_image(1600, 1200), make_image(1200, 900)
    episode = Episode(title="ep", slug="ep", owner=blog.owner, podcast_audio=audio, live=False, body=body([b]))
    podcast.add_child(instance=episode)
    with django_capture_on_commit_callbacks(execute=True):
        post = make_post(blog, "p", images=[a])
        publish_post(episode)
    assert claims(post) != set() and claims(episode) != set()
    post.delete()
    Episode.objects.get(pk=episode.pk).delete()
    assert not ClaimedRendition.objects.exists()


# --- finding 12: a failed sync in image_saved is handed to a worker ---------------------------------------------


def test_a_failed_sync_after_an_image_replacement_is_done_by_a_worker(
    blog, monkeypatch, caplog, django_capture_on_commit_callbacks
):
    import django_q.conf

    photo = make_image(1600, 1200)
    with django_capture_on_commit_callbacks(execute=True):
        post = make_post(blog, "p", images=[photo])
    old_claims = claims(post)
    stale = photo.get_rendition(sorted(spec for _, spec in old_claims)[0])

    lock_images, calls = ledger.lock_images, []

    def fails_once(image_ids):  # fault injection: the image's first lock in the edit loses a deadlock
        calls.append(set(image_ids))
        if len(calls) == 1:
            raise OperationalError("deadlock detected (injected)")
        return lock_images(image_ids)

    monkeypatch.setattr(ledger, "lock_images", fails_once)
    monkeypatch.setattr(django_q.conf.Conf, "SYNC", True)  # django-q2 runs the task in this process
    with django_capture_on_commit_callbacks(execute=True):
        photo.file = SimpleUploadedFile("smaller.jpg", photo_bytes(1200, 900), content_type="image/jpeg")
        photo.save()
    assert "a worker will sync them" in caplog.text
    assert not Rendition.objects.filter(pk=stale.pk).exists(), "the stale rendition of the old file stayed"
    assert claims(post) == required(post) != old_claims


# --- finding 13: the deferred sync retries a deadlock ----------------------------------------------------------


def test_the_deferred_sync_task_tries_again_after_a_deadlock(blog, monkeypatch, django_capture_on_commit_callbacks):
    import psycopg.errors

    photo = make_image(600, 400)
    post = make_post(blog, "p", images=[photo], publish=False)
    type(post).objects.filter(pk=post.pk).update(live=True)
    from cast.post_media import prepare_post_media

    prepare_post_media(type(post).objects.get(pk=post.pk), create_renditions=False)
    sync_posts, calls = ledger.sync_posts, []

    def deadlocks_twice(post_ids):  # fault injection: PostgreSQL picks this sync as a deadlock's victim twice
        calls.append(set(post_ids))
        if len(calls) <= 2:
            raise OperationalError("deadlock detected") from psycopg.errors.DeadlockDetected("deadlock detected")
        return sync_posts(post_ids)

    monkeypatch.setattr(ledger, "sync_posts", deadlocks_twice)
    monkeypatch.setattr(tasks, "SYNC_BACKOFF_SECONDS", 0.01, raising=False)
    with django_capture_on_commit_callbacks(execute=True):
        tasks.sync_posts([post.pk])
    assert len(calls) == 3
    assert claims(post) == required(post) != set()


def test_the_deferred_sync_task_does_not_retry_other_errors(blog, monkeypatch):
    calls = []

    def broken(post_ids):
        calls.append(post_ids)
        raise OperationalError("no such table (injected)")

    monkeypatch.setattr(ledger, "sync_posts", broken)
    with pytest.raises(OperationalError):
        tasks.sync_posts([1])
    assert len(calls) == 1


# --- finding 3: an unreachable broker ------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A local port that accepts connections and never answers (a broker host that hangs)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for sock in [*held, server]:
        sock.close()


@pytest.fixture
def broker_down(monkeypatch, black_hole, request) -> str:
    """Point django-q2's Redis broker at an unreachable port for this test."""
    import django_q.conf

    if os.environ.get("AUTO_RENDITIONS_BROKER") != "redis":
        pytest.skip("the Redis broker can be down while the database is up; the ORM broker is the database")
    port = black_hole if request.param == "black hole" else closed_port()
    monkeypatch.setattr(django_q.conf.Conf, "REDIS", f"redis://127.0.0.1:{port}/15")
    monkeypatch.setattr(queue, "_broker_failed_at", None, raising=False)
    return request.param


@pytest.mark.worker
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
@pytest.mark.parametrize("broker_down", ["closed port", "black hole"], indirect=True)
def test_publishing_with_the_broker_down_succeeds_fast_and_the_sweep_recovers(blog, broker_down, monkeypatch, caplog):
    """The editor's publish succeeds at once with the broker unreachable; once it is back, the sweep queues the
    work again and a worker makes every rendition."""

    photos = [make_image(800, 600, seed=n) for n in range(3)]
    durations, posts = [], []
    for n, photo in enumerate(photos):  # like publish_scheduled: several publishes in one process
        started = time.monotonic()
        posts.append(make_post(blog, f"p{n}", images=[photo]))
        durations.append(time.monotonic() - started)
    print(f"broker {broker_down}: publishes took {[round(d, 2) for d in durations]} s")
    assert all(type(post).objects.get(pk=post.pk).live for post in posts)
    assert "could not queue" in caplog.text
    assert durations[0] < queue.BROKER_TIMEOUT + 5 and max(durations[1:]) < 5
    wanted = set().union(*(required(post) for post in posts))
    assert {i for i, _ in wanted} == set(QueuedImage.objects.values_list("image_id", flat=True))
    assert not Rendition.objects.exists()

    monkeypatch.undo()  # the broker is back
    monkeypatch.setattr(queue, "_broker_failed_at", None, raising=False)
    with Worker() as worker:
        tasks.sweep()
        wait_until(
            lambda: (
                not QueuedImage.objects.exists()
                and set(Rendition.objects.values_list("image_id", "filter_spec")) >= wanted
            ),
            worker=worker,
            what="the sweep's tasks to make every rendition",
        )
