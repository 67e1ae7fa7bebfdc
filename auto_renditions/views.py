"""Wagtail admin views: the renditions report (pending posts, failures, deletions, queue) and the retry action.

Everything here reads through :mod:`auto_renditions.status` and writes through :mod:`auto_renditions.ledger`;
the views only add permission checks, filtering and pagination (Wagtail's own report machinery). A user sees
the failures and deletions of the images Wagtail lets them change (collection permissions) and the posts they
may edit, and retries only images they may change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import django_filters
from django import forms
from django.contrib import messages
from django.core.exceptions import BadRequest, PermissionDenied
from django.core.validators import MaxValueValidator
from django.db import connection, transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponseBase, HttpResponseRedirect
from django.middleware.csrf import get_token
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils.functional import cached_property
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_POST
from wagtail.admin.filters import WagtailFilterSet
from wagtail.admin.ui.tables import Column, DateColumn, TitleColumn
from wagtail.admin.views.reports import ReportView
from wagtail.images import get_image_model
from wagtail.models import Page
from wagtail.permission_policies.pages import PagePermissionPolicy

from . import ledger, preview, queue, status
from .compat import NumberColumn, image_permission_policy
from .models import Claim, Failure, PendingDeletion

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractUser, AnonymousUser
    from django_stubs_ext import StrOrPromise
    from wagtail.images.models import AbstractImage

_Rows = TypeVar("_Rows", bound=QuerySet[Any])

PENDING, FAILED, DELETING = "pending", "failed", "deleting"
STATES = [
    (PENDING, _("Posts with pending renditions")),
    (FAILED, _("Failed renditions")),
    (DELETING, _("Awaiting deletion")),
]


def can_view(user: AbstractUser | AnonymousUser) -> bool:
    """Wagtail admin access and the right to change images (model or collection permission)."""
    if not (user.is_active and user.is_authenticated and user.has_perm("wagtailadmin.access_admin")):
        return False
    if user.has_perm("wagtailimages.change_image"):
        return True
    policy = image_permission_policy()
    # user_has_any_permission checks exactly "change" (user_has_permission would also accept "add").
    return bool(policy and policy.user_has_any_permission(user, ["change"]))


@dataclass(frozen=True)
class Scope:
    """What one user may see in the report: the images they may change and the posts they may edit (Wagtail's
    collection and page permissions), as subqueries; ``None`` means all (a superuser)."""

    images: QuerySet | None
    posts: QuerySet | None

    @classmethod
    def of(cls, user: AbstractUser | AnonymousUser) -> Scope:
        if user.is_active and user.is_superuser:
            return cls(None, None)
        images = image_permission_policy().instances_user_has_permission_for(user, "change").values("pk")
        posts = PagePermissionPolicy().instances_user_has_permission_for(user, "change").values("pk")
        return cls(images, posts)

    def image_rows(self, rows: _Rows) -> _Rows:
        """Rows with an ``image`` foreign key, narrowed to the images in scope."""
        return rows if self.images is None else rows.filter(image_id__in=self.images)

    def post_ids(self, posts: QuerySet | None = None) -> QuerySet | None:
        """The ids of ``posts`` (or of every post) in scope; ``None`` for every post."""
        if posts is None:
            return self.posts
        posts = posts if self.posts is None else posts.filter(pk__in=self.posts)
        return posts.values("pk")


def report_url(state: str = PENDING, post_id: int | None = None) -> str:
    url = reverse("auto_renditions:report") + f"?state={state}"
    return url + (f"&post={post_id}" if post_id else "")


@dataclass(frozen=True)
class Summary:
    """The counts shown above the report (and used by the edit-view status)."""

    posts_not_ready: int
    pending: int
    failures: int
    exhausted: int
    pending_deletions: int
    overdue_deletions: int
    queued_images: int
    in_flight: int
    broker_queue_size: int | None
    #: Draft-owned work (:func:`auto_renditions.preview.draft_status`), apart from the live posts'.
    drafts: dict[str, int] = field(default_factory=dict)

    @classmethod
    def collect(cls, scope: Scope = Scope(None, None)) -> Summary:
        """The counts over what ``scope`` lets a user see (the broker's queue length names no image: site-wide)."""
        not_ready = status.posts_not_ready(scope.post_ids())
        return cls(
            posts_not_ready=len(not_ready),
            pending=sum(p.pending for p in not_ready),
            failures=scope.image_rows(status.failures()).count(),
            exhausted=scope.image_rows(status.exhausted_failures()).count(),
            pending_deletions=scope.image_rows(status.pending_deletions()).count(),
            overdue_deletions=scope.image_rows(status.overdue_deletions()).count(),
            queued_images=scope.image_rows(status.queued_images()).count(),
            in_flight=scope.image_rows(status.in_flight()).count(),
            broker_queue_size=status.broker_queue_size(),
            drafts=preview.draft_status(),
        )


class PageIdFilter(django_filters.NumberFilter):
    """A page id the database's id column can hold: SQLite raises on a larger one instead of matching nothing."""

    field_class = forms.IntegerField

    def get_max_validator(self) -> MaxValueValidator:
        return MaxValueValidator(connection.ops.integer_field_range(Page._meta.pk.get_internal_type())[1])


class RenditionsReportFilterSet(WagtailFilterSet):
    state = django_filters.ChoiceFilter(
        label=_("State"), choices=STATES, empty_label=None, widget=forms.RadioSelect, method="keep"
    )
    post = PageIdFilter(label=_("Post ID"), method="keep", min_value=1)

    class Meta:
        model = Failure  # the rows come from several queries; the view applies the cleaned values itself
        fields: list[str] = []

    def keep(self, queryset: QuerySet[Any], name: str, value: object) -> QuerySet[Any]:
        return queryset


class RetryColumn(Column):
    """A POST form (CSRF token included) that clears an image's failures and queues it again."""

    cell_template_name = "auto_renditions/retry_cell.html"

    def get_cell_context_data(self, instance: Failure, parent_context: dict[str, Any]) -> dict[str, Any]:
        context = super().get_cell_context_data(instance, parent_context)
        request = parent_context.get("request")
        context["csrf_token"] = get_token(request) if request else ""
        context["retry_url"] = reverse("auto_renditions:retry", args=[instance.image_id])
        context["next_url"] = request.get_full_path() if request else ""
        return context


def _image_edit_url(row: Failure | PendingDeletion) -> str:
    return reverse("wagtailimages:edit", args=[row.image_id])


COLUMNS = {
    PENDING: [
        TitleColumn("title", label=_("Post"), get_url=lambda p: reverse("wagtailadmin_pages:edit", args=[p.post_id])),
        NumberColumn("pending", label=_("Pending")),
        NumberColumn("required", label=_("Required")),
        NumberColumn("failed", label=_("Failed")),
    ],
    FAILED: [
        TitleColumn("image", label=_("Image"), accessor="image.title", get_url=_image_edit_url),
        Column("filter_spec", label=_("Rendition")),
        Column("error", label=_("Error")),
        NumberColumn("attempts", label=_("Attempts")),
        DateColumn("last_failed_at", label=_("Last failed")),
        RetryColumn("retry", label=_("Action")),
    ],
    DELETING: [
        TitleColumn("image", label=_("Image"), accessor="image.title", get_url=_image_edit_url),
        Column("filter_spec", label=_("Rendition")),
        DateColumn("released_at", label=_("Released")),
        DateColumn("due_at", label=_("Deleted after")),
    ],
}


class RenditionsReportView(ReportView):
    """One report, three states (a filter): posts not ready, failures, renditions in their grace period."""

    template_name = "auto_renditions/report.html"
    results_template_name = "auto_renditions/report_results.html"
    page_title = _("Renditions")
    header_icon = "image"
    index_url_name = "auto_renditions:report"
    index_results_url_name = "auto_renditions:report_results"
    filterset_class = RenditionsReportFilterSet
    is_searchable = True
    paginate_by = 25

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not can_view(request.user):
            raise PermissionDenied
        return super().dispatch(request, *args, **kwargs)

    @cached_property
    def scope(self) -> Scope:
        return Scope.of(self.request.user)

    @cached_property
    def cleaned_filters(self) -> dict[str, Any]:
        if not self.filters:
            return {}
        if not self.filters.is_valid():
            # Say so rather than show an unfiltered report that looks like the one asked for.
            raise BadRequest(f"Invalid report filter: {self.filters.errors.as_text()}")
        return self.filters.form.cleaned_data

    @cached_property
    def state(self) -> str:
        return self.cleaned_filters.get("state") or PENDING

    @cached_property
    def post_id(self) -> int | None:
        value = self.cleaned_filters.get("post")
        return int(value) if value is not None else None

    @property
    def columns(self) -> list[Column]:
        return COLUMNS[self.state]

    @property
    def no_results_message(self) -> StrOrPromise:
        if self.state == FAILED:
            return _("No failed renditions.")
        if self.state == DELETING:
            return _("No renditions are waiting for deletion.")
        return _("Every published post has all its renditions.")

    def filter_queryset(self, queryset: QuerySet[Any] | list[Any]) -> QuerySet[Any] | list[Any]:
        return queryset  # the filters are applied in get_queryset (rows are not one model's queryset)

    def _claimed_images(self, post_id: int) -> QuerySet[Claim, Any]:
        return Claim.objects.filter(post_id=post_id).values("image_id")

    def get_queryset(self) -> QuerySet[Failure] | QuerySet[PendingDeletion] | list[status.PostProgress]:
        if self.state == PENDING:
            from cast.models import Post

            posts = Post.objects.all()
            if self.post_id is not None:
                posts = posts.filter(pk=self.post_id)
            if self.search_query:
                posts = posts.filter(title__icontains=self.search_query)
            narrowed = self.post_id is not None or self.search_query
            progress = status.post_progress(self.scope.post_ids(posts if narrowed else None))
            return [p for p in progress if not p.ready]
        rows = self.scope.image_rows(status.failures() if self.state == FAILED else status.pending_deletions())
        if self.post_id is not None:
            rows = rows.filter(image_id__in=self._claimed_images(self.post_id))
        if self.search_query:
            rows = rows.filter(image__title__icontains=self.search_query)
        return rows

    def get_context_data(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(*args, **kwargs)
        context["summary"] = Summary.collect(self.scope)
        context["state"] = self.state
        context["state_label"] = dict(STATES)[self.state]
        return context


@require_POST
def retry(request: HttpRequest, image_id: int) -> HttpResponseRedirect:
    """Forget an image's failures and queue its claimed renditions again (the worker retries at once)."""
    if not can_view(request.user):
        raise PermissionDenied
    image = _image_or_404(image_id)
    if not image_permission_policy().user_has_permission_for_instance(request.user, "change", image):
        raise PermissionDenied
    queued: set[int] = set()
    with transaction.atomic():
        posts = ledger.posts_using_images([image.pk])
        ledger.lock_posts(posts)  # the lock order everywhere: posts, then images
        ledger.lock_images([image.pk])
        whole_image = Failure.objects.filter(image_id=image.pk, filter_spec=ledger.WHOLE_IMAGE).exists()
        Failure.objects.filter(image_id=image.pk).delete()
        queued = ledger.queue_missing({(image.pk, spec) for spec in ledger.claimed_keys(image.pk)})
        if queued:
            new = set(queued)
            transaction.on_commit(lambda: queue.enqueue_generation(new))
        if whole_image:  # it could not even be planned: plan its posts again (records the failure if it persists)
            change = ledger.sync_posts(posts)
            queued |= change.queued_images
    if queued:
        messages.success(request, _("Image “%(title)s” queued for its renditions again.") % {"title": image.title})
    else:
        messages.info(request, _("Image “%(title)s”: failures cleared, nothing to generate.") % {"title": image.title})
    next_url = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(next_url, {request.get_host()}, request.is_secure()):
        next_url = report_url(FAILED)
    return HttpResponseRedirect(next_url)


def _image_or_404(image_id: int) -> AbstractImage:
    """The image, loaded without its file (an unusable size would make Django's ImageField open the original)."""
    return get_object_or_404(get_image_model().objects.defer("file"), pk=image_id)
