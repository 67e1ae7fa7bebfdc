"""Wagtail admin views: the renditions report (pending posts, failures, deletions, queue) and the retry action.

Everything here reads through :mod:`auto_renditions.status` and writes through :mod:`auto_renditions.ledger`;
the views only add permission checks, filtering and pagination (Wagtail's own report machinery).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import django_filters
from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpResponseRedirect
from django.middleware.csrf import get_token
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils.functional import cached_property
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_POST
from wagtail.admin.filters import WagtailFilterSet
from wagtail.admin.ui.tables import Column, DateColumn, NumberColumn, TitleColumn
from wagtail.admin.views.reports import ReportView
from wagtail.images import get_image_model
from wagtail.permissions import policy_registry

from . import ledger, preview, queue, status
from .models import Claim, Failure

PENDING, FAILED, DELETING = "pending", "failed", "deleting"
STATES = [
    (PENDING, _("Posts with pending renditions")),
    (FAILED, _("Failed renditions")),
    (DELETING, _("Awaiting deletion")),
]


def can_view(user) -> bool:
    """Wagtail admin access and the right to change images (model or collection permission)."""
    if not (user.is_active and user.is_authenticated and user.has_perm("wagtailadmin.access_admin")):
        return False
    if user.has_perm("wagtailimages.change_image"):
        return True
    policy = policy_registry.get_by_type(get_image_model())
    # user_has_any_permission checks exactly "change" (user_has_permission would also accept "add").
    return bool(policy and policy.user_has_any_permission(user, ["change"]))


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
    def collect(cls) -> Summary:
        not_ready = status.posts_not_ready()
        return cls(
            posts_not_ready=len(not_ready),
            pending=sum(p.pending for p in not_ready),
            failures=status.failures().count(),
            exhausted=status.exhausted_failures().count(),
            pending_deletions=status.pending_deletions().count(),
            overdue_deletions=status.overdue_deletions().count(),
            queued_images=status.queued_images().count(),
            in_flight=status.in_flight().count(),
            broker_queue_size=status.broker_queue_size(),
            drafts=preview.draft_status(),
        )


class RenditionsReportFilterSet(WagtailFilterSet):
    state = django_filters.ChoiceFilter(
        label=_("State"), choices=STATES, empty_label=None, widget=forms.RadioSelect, method="keep"
    )
    post = django_filters.NumberFilter(label=_("Post ID"), method="keep")

    class Meta:
        model = Failure  # the rows come from several queries; the view applies the cleaned values itself
        fields = []

    def keep(self, queryset, name, value):
        return queryset


class RetryColumn(Column):
    """A POST form (CSRF token included) that clears an image's failures and queues it again."""

    cell_template_name = "auto_renditions/retry_cell.html"

    def get_cell_context_data(self, instance, parent_context):
        context = super().get_cell_context_data(instance, parent_context)
        request = parent_context.get("request")
        context["csrf_token"] = get_token(request) if request else ""
        context["retry_url"] = reverse("auto_renditions:retry", args=[instance.image_id])
        context["next_url"] = request.get_full_path() if request else ""
        return context


def _image_edit_url(row) -> str:
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

    def dispatch(self, request, *args, **kwargs):
        if not can_view(request.user):
            raise PermissionDenied
        return super().dispatch(request, *args, **kwargs)

    @cached_property
    def cleaned_filters(self) -> dict:
        if self.filters and self.filters.is_valid():
            return self.filters.form.cleaned_data
        return {}

    @cached_property
    def state(self) -> str:
        return self.cleaned_filters.get("state") or PENDING

    @cached_property
    def post_id(self) -> int | None:
        value = self.cleaned_filters.get("post")
        return int(value) if value is not None else None

    @property
    def columns(self):
        return COLUMNS[self.state]

    @property
    def no_results_message(self):
        if self.state == FAILED:
            return _("No failed renditions.")
        if self.state == DELETING:
            return _("No renditions are waiting for deletion.")
        return _("Every published post has all its renditions.")

    def filter_queryset(self, queryset):
        return queryset  # the filters are applied in get_queryset (rows are not one model's queryset)

    def _claimed_images(self):
        return Claim.objects.filter(post_id=self.post_id).values("image_id")

    def get_queryset(self):
        if self.state == PENDING:
            from cast.models import Post

            posts = Post.objects.all()
            if self.post_id is not None:
                posts = posts.filter(pk=self.post_id)
            if self.search_query:
                posts = posts.filter(title__icontains=self.search_query)
            scoped = self.post_id is not None or self.search_query
            progress = status.post_progress(posts.values_list("pk", flat=True) if scoped else None)
            return [p for p in progress if not p.ready]
        rows = status.failures() if self.state == FAILED else status.pending_deletions()
        if self.post_id is not None:
            rows = rows.filter(image_id__in=self._claimed_images())
        if self.search_query:
            rows = rows.filter(image__title__icontains=self.search_query)
        return rows

    def get_context_data(self, *args, **kwargs):
        context = super().get_context_data(*args, **kwargs)
        context["summary"] = Summary.collect()
        context["state"] = self.state
        context["state_label"] = dict(STATES)[self.state]
        return context


@require_POST
def retry(request, image_id: int):
    """Forget an image's failures and queue its claimed renditions again (the worker retries at once)."""
    if not can_view(request.user):
        raise PermissionDenied
    image = get_object_or_404(get_image_model(), pk=image_id)
    queued: set[int] = set()
    with transaction.atomic():
        ledger.lock_images([image.pk])
        whole_image = Failure.objects.filter(image_id=image.pk, filter_spec=ledger.WHOLE_IMAGE).exists()
        Failure.objects.filter(image_id=image.pk).delete()
        queued = ledger.queue_missing({(image.pk, spec) for spec in ledger.claimed_keys(image.pk)})
        if queued:
            new = set(queued)
            transaction.on_commit(lambda: queue.enqueue_generation(new))
        if whole_image:  # it could not even be planned: plan its posts again (records the failure if it persists)
            change = ledger.sync_posts(ledger.posts_using_images([image.pk]))
            queued |= change.queued_images
    if queued:
        messages.success(request, _("Image “%(title)s” queued for its renditions again.") % {"title": image.title})
    else:
        messages.info(request, _("Image “%(title)s”: failures cleared, nothing to generate.") % {"title": image.title})
    next_url = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(next_url, {request.get_host()}, request.is_secure()):
        next_url = report_url(FAILED)
    return HttpResponseRedirect(next_url)
