"""A post's page renders its cover's social card (and, for an episode, the Podlove poster and the audio facade)
outside its body: the post claims them like its body's renditions, so a visitor never waits for one."""

from __future__ import annotations

import pytest
from cast.models.pages import PODLOVE_POSTER_RENDITION_SPEC, SOCIAL_COVER_RENDITION_SPEC
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from wagtail.images.models import Rendition
from wagtail.models import Site

from auto_renditions import page_specs
from auto_renditions.models import Claim, PendingDeletion
from tests.factories import make_image, make_post
from tests.harness import Worker, drained, wait_until

pytestmark = pytest.mark.django_db

FACADE = "fill-400x400"


def claimed(post) -> dict[int, set[str]]:
    return {c.image_id: set(c.filter_specs) for c in Claim.objects.filter(post=post)}


def make_podcast(slug: str = "podcast"):
    from cast.models import Podcast

    user = get_user_model().objects.filter(username="editor").first() or get_user_model().objects.create_superuser(
        "editor", "editor@example.com", "password"
    )
    podcast = Podcast(title=slug.title(), slug=slug, owner=user)
    Site.objects.get(is_default_site=True).root_page.add_child(instance=podcast)
    return podcast


def make_episode(podcast, slug: str, images=()):
    from cast.models import Audio, Episode
    from django.core.files.uploadedfile import SimpleUploadedFile

    audio = Audio(title=slug, user=podcast.owner, mp3=SimpleUploadedFile(f"{slug}.mp3", b"ID3", "audio/mpeg"))
    audio.save(duration=False, cache_file_sizes=False)  # no ffprobe: the page only needs an audio to exist
    episode = make_post(podcast, slug, model=Episode, images=images, publish=False)
    episode.podcast_audio = audio
    return episode


def with_cover(page, image):
    page.cover_image = image
    page.save_revision(user=page.owner).publish(user=page.owner)
    page.refresh_from_db()
    return page


def renditions_made_by_get(client, url: str) -> int:
    before = Rendition.objects.count()
    response = client.get(url)
    assert response.status_code == 200
    return Rendition.objects.count() - before


def test_the_specs_are_django_casts_own():
    assert FACADE in page_specs.audio_facade_specs()  # read from django-cast's audio template, not copied
    assert page_specs.cover_specs(False) == {SOCIAL_COVER_RENDITION_SPEC}
    assert page_specs.cover_specs(True) == {SOCIAL_COVER_RENDITION_SPEC, PODLOVE_POSTER_RENDITION_SPEC, FACADE}


def test_a_post_claims_its_cover_and_the_first_view_makes_nothing(blog, client, settle):
    cover, photo = make_image(1600, 1200), make_image(1200, 800)
    post = make_post(blog, "covered", images=[photo], publish=False)
    post = with_cover(post, cover)

    assert claimed(post)[cover.pk] == {SOCIAL_COVER_RENDITION_SPEC}
    settle()
    assert renditions_made_by_get(client, post.url) == 0


def test_an_episode_claims_poster_and_facade(client, settle):
    podcast = make_podcast()
    cover = make_image(1600, 1200)
    episode = make_episode(podcast, "episode")
    episode = with_cover(episode, cover)

    assert claimed(episode)[cover.pk] == {SOCIAL_COVER_RENDITION_SPEC, PODLOVE_POSTER_RENDITION_SPEC, FACADE}
    settle()
    assert renditions_made_by_get(client, episode.url) == 0
    assert set(Rendition.objects.filter(image=cover).values_list("filter_spec", flat=True)) >= {
        SOCIAL_COVER_RENDITION_SPEC,
        PODLOVE_POSTER_RENDITION_SPEC,
        FACADE,
    }


def test_a_post_without_cover_claims_the_blogs_and_follows_its_change(blog, client, settle, settings):
    settings.AUTO_RENDITIONS = {"DELETE_GRACE_SECONDS": 0}
    old, new = make_image(1600, 1200), make_image(1400, 1000)
    blog = with_cover(blog, old)
    post = make_post(blog, "plain", images=[make_image()])
    own = make_post(blog, "own", publish=False)
    own = with_cover(own, make_image(1000, 800))
    assert claimed(post)[old.pk] == {SOCIAL_COVER_RENDITION_SPEC}
    settle()
    assert Rendition.objects.filter(image=old, filter_spec=SOCIAL_COVER_RENDITION_SPEC).exists()

    blog = with_cover(blog, new)

    assert old.pk not in claimed(post) and claimed(post)[new.pk] == {SOCIAL_COVER_RENDITION_SPEC}
    assert new.pk not in claimed(own)  # a post with its own cover is not replanned
    settle()
    # Released and deleted although the keep-list names the spec: the keep-list is for renditions nobody claims.
    assert not Rendition.objects.filter(image=old, filter_spec=SOCIAL_COVER_RENDITION_SPEC).exists()
    assert renditions_made_by_get(client, post.url) == 0


def test_a_changed_cover_releases_the_old_ones(blog, settle):
    first, second = make_image(1600, 1200), make_image(1600, 1200)
    post = with_cover(make_post(blog, "changing", publish=False), first)
    settle()

    post = with_cover(post, second)

    assert set(claimed(post)) == {second.pk}
    assert PendingDeletion.objects.filter(image=first, filter_spec=SOCIAL_COVER_RENDITION_SPEC).exists()


def test_a_deleted_episode_releases_its_cover_renditions():
    podcast = make_podcast()
    cover = make_image(1600, 1200)
    episode = with_cover(make_episode(podcast, "gone"), cover)
    episode.delete()

    pending = set(PendingDeletion.objects.filter(image=cover).values_list("filter_spec", flat=True))
    assert pending == {SOCIAL_COVER_RENDITION_SPEC, PODLOVE_POSTER_RENDITION_SPEC, FACADE}


@pytest.mark.worker
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_with_a_worker_an_episodes_first_view_makes_nothing(client):
    podcast = make_podcast()
    cover = make_image(1600, 1200)
    episode = make_episode(podcast, "drained", images=[make_image(1200, 800)])
    episode = with_cover(episode, cover)
    with Worker() as worker:
        wait_until(drained, worker=worker, what="the queue to drain")
    with CaptureQueriesContext(connection):
        assert renditions_made_by_get(client, episode.url) == 0
