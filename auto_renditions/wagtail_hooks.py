"""Wagtail admin integration: the Renditions report (under Reports) and a status button on the post editor."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from django.urls import include, path, reverse
from django.utils.translation import gettext as _
from wagtail import hooks
from wagtail.admin.menu import MenuItem
from wagtail.admin.widgets import Button

from . import status, urls, views

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractUser, AnonymousUser
    from django.http import HttpRequest
    from django.urls import URLResolver
    from wagtail.models import Page


class RenditionsReportMenuItem(MenuItem):
    def is_shown(self, request: HttpRequest) -> bool:
        return views.can_view(request.user)


@hooks.register("register_admin_urls")
def register_admin_urls() -> list[URLResolver]:
    return [path("auto-renditions/", include(urls, namespace="auto_renditions"))]


@hooks.register("register_reports_menu_item")
def register_report_menu_item() -> RenditionsReportMenuItem:
    return RenditionsReportMenuItem(
        _("Renditions"), reverse("auto_renditions:report"), name="auto-renditions", icon_name="image", order=900
    )


def status_label(progress: status.PostProgress) -> str:
    if progress.ready:
        return _("All %(required)d renditions ready") % {"required": progress.required}
    label = _("%(pending)d of %(required)d renditions pending") % {
        "pending": progress.pending,
        "required": progress.required,
    }
    if progress.failed:
        label += _(", %(failed)d failed") % {"failed": progress.failed}
    return label


@hooks.register("register_page_header_buttons")
def rendition_status_button(
    page: Page, user: AbstractUser | AnonymousUser, view_name: str, next_url: str | None = None
) -> Iterator[Button]:
    """On the editor of a published post: how many of its renditions exist, linking to the report."""
    from cast.models import Post

    if view_name != "edit" or not issubclass(page.specific_class or type(page), Post) or not views.can_view(user):
        return
    progress = status.post_progress([page.pk])
    if not progress:  # not live, or shows no image: nothing is claimed
        return
    post = progress[0]
    state = views.FAILED if post.failed else views.PENDING
    yield Button(
        status_label(post),
        url=views.report_url(state, page.pk),
        icon_name="success" if post.ready else ("warning" if post.failed else "image"),
        attrs={"data-auto-renditions-status": "ready" if post.ready else state},
        priority=1,
    )
