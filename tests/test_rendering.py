"""A published page renders working images before its renditions exist, and uses them once they do."""

import pytest
from wagtail.images.models import Rendition

from auto_renditions import rendering
from tests.factories import make_image, make_post
from tests.pages import image_tags, media_file, media_urls

pytestmark = pytest.mark.django_db


def render(client, post) -> str:
    response = client.get(post.url)
    assert response.status_code == 200
    return response.content.decode()


def test_pending_page_has_no_empty_src_and_every_url_exists(blog, client, settle):
    photos = [make_image(1600, 1200), make_image(1200, 1600), make_image(600, 400, fmt="PNG", mode="RGBA")]
    post = make_post(blog, "pending", images=photos[:2], galleries=[photos])
    assert not Rendition.objects.exists()  # nothing was made in the publish request

    html = render(client, post)
    urls, problems = media_urls(html)
    assert len(image_tags(html)) >= 5
    assert problems == []
    assert urls and all(media_file(url).exists() for url in urls)
    assert all("/original_images/" in url for url in urls)  # pending: the original stands in

    settle()
    html = render(client, post)
    urls, problems = media_urls(html)
    assert problems == []
    assert all(media_file(url).exists() for url in urls)
    rendition_urls = [url for url in urls if "/images/" in url and "/original_images/" not in url]
    assert len(rendition_urls) == len(urls)  # every URL is a rendition now (all specs were made)
    assert set(Rendition.objects.values_list("filter_spec", flat=True)) >= {"format-avif"}


def test_without_the_fallback_django_cast_leaves_src_empty(blog, client):
    """The control: this is the defect the fallback exists for (anchors.md: 26 empty src on a 10-image post)."""
    import cast.blocks

    post = make_post(blog, "control", images=[make_image(1600, 1200)])
    wrapped = cast.blocks.get_srcset_images_for_slots
    cast.blocks.get_srcset_images_for_slots = wrapped.__wrapped__
    try:
        _, problems = media_urls(render(client, post))
    finally:
        cast.blocks.get_srcset_images_for_slots = wrapped
    assert problems, "django-cast without the fallback should render empty src/srcset for pending specs"
    assert rendering.installed()


def test_partially_made_renditions_are_used_and_the_rest_fall_back(blog, client):
    photo = make_image(1600, 1200)
    post = make_post(blog, "partial", images=[photo])
    made = photo.get_rendition("width-987")
    urls, problems = media_urls(render(client, post))
    assert problems == []
    assert made.url in urls
    assert any("/original_images/" in url for url in urls)  # the AVIF spec is still pending
