"""The Wagtail admin report and the post editor status, through the real admin views and the test client."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.files.base import ContentFile
from django.test import Client
from wagtail.models import Collection, GroupCollectionPermission, GroupPagePermission, Page

from auto_renditions import status
from auto_renditions.models import Claim, ClaimedRendition, Failure, PendingDeletion, QueuedImage
from auto_renditions.views import RenditionsReportView
from tests import harness
from tests.factories import make_image, make_post

REPORT = "/cms/auto-renditions/"
RESULTS = "/cms/auto-renditions/results/"


def summary(html: str, name: str) -> str:
    match = re.search(rf'data-summary="{name}">([^<]*)<', html)
    assert match, f"no summary value {name!r} in the report"
    return match.group(1)


def edit_status(client: Client, post) -> str | None:
    """The rendition status rendered into the post editor (``None`` if there is none)."""
    response = client.get(f"/cms/pages/{post.pk}/edit/")
    assert response.status_code == 200
    match = re.search(r'data-auto-renditions-status="(\w+)"[^>]*>(.*?)</a>', response.content.decode(), re.S)
    return f"{match.group(1)}: {' '.join(re.sub(r'<[^>]+>', ' ', match.group(2)).split())}" if match else None


def make_editor(username: str, *, image_permission: bool):
    """A non-superuser with admin access and page edit rights; optionally allowed to change images."""
    group = Group.objects.create(name=f"group-{username}")
    group.permissions.add(Permission.objects.get(content_type__app_label="wagtailadmin", codename="access_admin"))
    root = Page.objects.get(depth=1)
    for codename in ("add_page", "change_page", "publish_page"):
        GroupPagePermission.objects.create(
            group=group,
            page=root,
            permission=Permission.objects.get(content_type__app_label="wagtailcore", codename=codename),
        )
    if image_permission:
        GroupCollectionPermission.objects.create(
            group=group,
            collection=Collection.get_first_root_node(),
            permission=Permission.objects.get(content_type__app_label="wagtailimages", codename="change_image"),
        )
    user = get_user_model().objects.create_user(username, f"{username}@example.com", "password")
    user.groups.add(group)
    return user


def assert_denied(client: Client, method: str, url: str) -> None:
    """Wagtail's permission denied: a redirect to the dashboard with a message, or 403 for an XHR request."""
    response = getattr(client, method)(url, follow=True)
    assert response.redirect_chain == [("/cms/", 302)]
    assert "Sorry, you do not have permission to access this area." in response.content.decode()
    assert getattr(client, method)(url, headers={"x-requested-with": "XMLHttpRequest"}).status_code == 403


@pytest.fixture
def admin_client(blog) -> Client:
    client = Client()
    assert client.login(username="editor", password="password")  # the superuser make_blog creates
    return client


@pytest.fixture
def gallery_post(blog):
    a, b = make_image(600, 400), make_image(1600, 1200)
    return make_post(blog, "gallery-post", images=[a], galleries=[[a, b]])


@pytest.mark.django_db
def test_pending_post_in_report_and_editor_until_renditions_exist(admin_client, gallery_post, settle):
    required = ClaimedRendition.objects.filter(post=gallery_post).count()
    assert required > 0

    response = admin_client.get(REPORT)
    assert response.status_code == 200
    html = response.content.decode()
    assert [row.post_id for row in response.context["object_list"]] == [gallery_post.pk]
    assert f"/cms/pages/{gallery_post.pk}/edit/" in html
    assert summary(html, "pending") == str(required)
    assert summary(html, "queued_images") == str(QueuedImage.objects.count())
    assert edit_status(admin_client, gallery_post) == f"pending: {required} of {required} renditions pending"

    settle()
    response = admin_client.get(REPORT)
    assert list(response.context["object_list"]) == []
    assert summary(response.content.decode(), "pending") == "0"
    assert "Every published post has all its renditions." in response.content.decode()
    assert edit_status(admin_client, gallery_post) == f"ready: All {required} renditions ready"


@pytest.mark.django_db
def test_editor_status_only_on_published_posts(admin_client, blog):
    draft = make_post(blog, "draft", images=[make_image(300, 200)], publish=False)
    assert edit_status(admin_client, draft) is None
    assert admin_client.get(f"/cms/pages/{blog.pk}/edit/").status_code == 200  # a blog page: no status, no error


@pytest.mark.django_db
def test_search_on_post_title_and_pagination(admin_client, blog, monkeypatch):
    image = make_image(400, 300)
    posts = [make_post(blog, slug, images=[image]) for slug in ("alpha-one", "beta-two", "alpha-three")]

    response = admin_client.get(REPORT, {"q": "alpha"})
    assert {row.post_id for row in response.context["object_list"]} == {posts[0].pk, posts[2].pk}
    response = admin_client.get(REPORT, {"post": posts[1].pk})
    assert [row.post_id for row in response.context["object_list"]] == [posts[1].pk]

    monkeypatch.setattr(RenditionsReportView, "paginate_by", 2)
    first, second = admin_client.get(REPORT), admin_client.get(REPORT, {"p": 2})
    assert first.context["items_count"] == 3
    assert len(first.context["object_list"]) == 2 and len(second.context["object_list"]) == 1
    shown = {row.post_id for row in first.context["object_list"]} | {
        row.post_id for row in second.context["object_list"]
    }
    assert shown == {p.pk for p in posts}


@pytest.mark.django_db
def test_results_fragment_for_filter_refresh(admin_client, gallery_post):
    response = admin_client.get(RESULTS, {"state": "pending"})
    assert response.status_code == 200
    html = response.content.decode()
    assert "<html" not in html and "gallery-post" in html


def _break_original(image) -> bytes:
    """Take the original file away (a real fault: the worker cannot open it) and return its bytes."""
    with image.file.open("rb") as f:
        data = f.read()
    image.file.storage.delete(image.file.name)
    return data


@pytest.mark.django_db
def test_failures_listed_and_retried(blog, admin_client, settle, django_capture_on_commit_callbacks):
    good, broken = make_image(600, 400), make_image(800, 600)
    post = make_post(blog, "broken", galleries=[[good, broken]])
    original = _break_original(broken)
    settle()
    failed_specs = set(Failure.objects.filter(image=broken).values_list("filter_spec", flat=True))
    assert failed_specs == set(ClaimedRendition.objects.filter(image=broken).values_list("filter_spec", flat=True))

    response = admin_client.get(REPORT, {"state": "failed"})
    html = response.content.decode()
    assert response.context["items_count"] == len(failed_specs)
    assert broken.title in html and f'action="/cms/auto-renditions/retry/{broken.pk}/"' in html
    assert summary(html, "failures") == str(len(failed_specs))
    label = edit_status(admin_client, post)
    assert label.startswith("failed: ") and f", {len(failed_specs)} failed" in label

    # The retry form works with CSRF enforced, using the token the report rendered.
    csrf_client = Client(enforce_csrf_checks=True)
    csrf_client.force_login(get_user_model().objects.get(username="editor"))
    page = csrf_client.get(REPORT, {"state": "failed"}).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    broker_before = harness.broker_queue_size()
    with django_capture_on_commit_callbacks(execute=True):
        response = csrf_client.post(
            f"/cms/auto-renditions/retry/{broken.pk}/",
            {"csrfmiddlewaretoken": token, "next": f"{REPORT}?state=failed"},
        )
    assert response.status_code == 302 and response["Location"] == f"{REPORT}?state=failed"
    assert not Failure.objects.filter(image=broken).exists()
    assert QueuedImage.objects.filter(image=broken).exists()
    assert harness.broker_queue_size() == broker_before + 1  # one generation task for the image

    broken.file.storage.save(broken.file.name, ContentFile(original))
    settle()
    assert not Failure.objects.exists()
    assert edit_status(admin_client, post).startswith("ready: All ")


@pytest.mark.django_db
def test_retry_needs_post_and_csrf(blog, admin_client, settle):
    image = make_image(600, 400)
    make_post(blog, "broken", images=[image])
    _break_original(image)
    settle()
    failures = Failure.objects.filter(image=image).count()
    assert failures > 0

    assert admin_client.get(f"/cms/auto-renditions/retry/{image.pk}/").status_code == 405
    csrf_client = Client(enforce_csrf_checks=True)
    csrf_client.force_login(get_user_model().objects.get(username="editor"))
    assert csrf_client.post(f"/cms/auto-renditions/retry/{image.pk}/").status_code == 403
    assert Failure.objects.filter(image=image).count() == failures
    assert admin_client.post("/cms/auto-renditions/retry/999999/").status_code == 404


@pytest.mark.django_db
def test_renditions_awaiting_deletion(admin_client, gallery_post, settle, settings):
    settings.AUTO_RENDITIONS = {"DELETE_GRACE_SECONDS": 3600}
    settle()
    gallery_post.unpublish(user=gallery_post.owner)
    due = PendingDeletion.objects.count()
    assert due == status.pending_deletions().count() > 0

    response = admin_client.get(REPORT, {"state": "deleting"})
    html = response.content.decode()
    assert response.context["items_count"] == due
    assert summary(html, "pending_deletions") == str(due)
    assert summary(html, "overdue_deletions") == "0"
    spec = PendingDeletion.objects.first().filter_spec
    assert spec.split("|")[0] in html
    assert edit_status(admin_client, gallery_post) is None  # no longer live: nothing claimed


@pytest.mark.django_db
def test_permissions(blog, gallery_post, settle):
    plain = make_editor("plain", image_permission=False)
    imager = make_editor("imager", image_permission=True)
    image_id = Claim.objects.filter(post=gallery_post).first().image_id
    failure = Failure.objects.create(image_id=image_id, filter_spec="width-10", error="induced")

    anonymous = Client()
    for url in (REPORT, RESULTS):
        response = anonymous.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/cms/login/")
    response = anonymous.post(f"/cms/auto-renditions/retry/{image_id}/")
    assert response.status_code == 302 and response["Location"].startswith("/cms/login/")

    client = Client()
    client.force_login(plain)
    assert client.get("/cms/").status_code == 200
    assert REPORT not in client.get("/cms/").content.decode()  # no menu item
    assert_denied(client, "get", REPORT)
    assert_denied(client, "get", RESULTS)
    assert_denied(client, "post", f"/cms/auto-renditions/retry/{image_id}/")
    assert Failure.objects.filter(pk=failure.pk).exists()  # the denied retry changed nothing
    assert edit_status(client, gallery_post) is None

    client.force_login(imager)
    assert REPORT in client.get("/cms/").content.decode()
    assert client.get(REPORT).status_code == 200
    assert edit_status(client, gallery_post).startswith("pending: ")
    assert client.post(f"/cms/auto-renditions/retry/{image_id}/").status_code == 302

    superuser = get_user_model().objects.get(username="editor")
    client.force_login(superuser)
    assert client.get(REPORT).status_code == 200
    assert edit_status(client, gallery_post).startswith("pending: ")


def test_app_adds_no_public_url():
    from django.urls import resolve

    assert resolve(REPORT).namespaces == ["auto_renditions"]
    assert resolve(REPORT).route.startswith("cms/")  # only under the admin mount
    assert "auto_renditions" not in resolve("/auto-renditions/").namespaces  # Wagtail's page serving, not ours
