"""Wagtail's admin preview of a draft makes no rendition in the request, and every picture still shows."""

from __future__ import annotations

import pytest
from django.urls import reverse
from wagtail.images.models import Rendition
from wagtail.test.utils.form_data import nested_form_data, querydict_from_html, rich_text, streamfield

from auto_renditions import preview
from tests.factories import make_image, make_post
from tests.pages import media_file, media_urls

pytestmark = pytest.mark.django_db


def body_form_data(images=(), gallery=()) -> dict[str, str]:
    """The post body as the page editor submits it (Wagtail's StreamField widget is built by JavaScript)."""
    overview = [("paragraph", rich_text("<p>Draft</p>"))] + [("image", str(image.pk)) for image in images]
    if gallery:
        items = streamfield([("item", str(image.pk)) for image in gallery])
        overview.append(("gallery", {"layout": "default", "gallery": items}))
    return nested_form_data({"body": streamfield([("overview", streamfield(overview)), ("detail", streamfield([]))])})


def admin_preview(client, post, images=(), gallery=()) -> str:
    """Preview the edited draft the way the editor's preview panel does: POST the form, then GET the preview."""
    client.force_login(post.owner)
    edit = client.get(reverse("wagtailadmin_pages:edit", args=[post.pk]))
    assert edit.status_code == 200
    data = querydict_from_html(edit.content.decode(), form_id="page-edit-form")
    data.update(body_form_data(images, gallery))
    url = reverse("wagtailadmin_pages:preview_on_edit", args=[post.pk])
    posted = client.post(url, data)
    assert posted.status_code == 200 and posted.json()["is_valid"], posted.content
    response = client.get(url)
    assert response.status_code == 200
    return response.content.decode()


def test_preview_of_a_draft_makes_nothing_in_the_request(blog, client):
    photos = [make_image(1600, 1200), make_image(1200, 1600), make_image(900, 600)]
    post = make_post(blog, "draft", publish=False)

    html = admin_preview(client, post, images=photos[:2], gallery=photos)

    assert Rendition.objects.count() == 0
    urls, problems = media_urls(html)
    assert problems == []  # every <img> has a src, every srcset a URL
    assert len(urls) >= 5 and all(media_file(url).exists() for url in urls)
    assert all("/original_images/" in url for url in urls)  # the originals stand in, as on a published page


def test_preview_uses_renditions_that_exist(blog, client):
    photo = make_image(1600, 1200)
    post = make_post(blog, "draft", publish=False)
    made = photo.get_rendition("width-987")

    urls, problems = media_urls(admin_preview(client, post, images=[photo]))

    assert problems == []
    assert made.url in urls
    assert Rendition.objects.count() == 1


def test_without_the_takeover_django_cast_makes_them_in_the_request(blog, client, monkeypatch):
    """The control: django-cast's own preview path makes every missing rendition while the editor waits."""
    import cast.preview_media

    photo = make_image(1600, 1200)
    post = make_post(blog, "draft", publish=False)
    wrapped = getattr(cast.preview_media, preview.FUNCTION)
    monkeypatch.setattr(cast.preview_media, preview.FUNCTION, wrapped.__wrapped__)

    admin_preview(client, post, images=[photo])

    assert Rendition.objects.filter(image=photo).count() > 0
