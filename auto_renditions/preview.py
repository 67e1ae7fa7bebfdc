"""Previews make no renditions in the request.

django-cast's preview (``cast.preview_media.PreviewMedia.from_post``, used by Wagtail's preview views through
``PostDetailContext.create_from_django_models(preview=True)``) asks
``get_obsolete_and_missing_rendition_strings`` which renditions of the draft body are missing and calls
``image.get_rendition(spec)`` for each: one decode of the original per spec, in the editor's request. This
module wraps that one name as ``cast.preview_media`` looks it up: django-cast still reads which renditions are
missing, but gets none back to make. The preview then renders with what exists, and the pending fallback of
:mod:`auto_renditions.rendering` serves the original file for the rest. The missing renditions are handed to
:func:`warm_up` instead.
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import logging
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from . import ledger, planning, queue
from .models import DraftClaim, PendingDeletion
from .signal_handlers import _logged

logger = logging.getLogger(__name__)

#: Where django-cast looks the function up, and the name it uses.
MODULE = "cast.preview_media"
FUNCTION = "get_obsolete_and_missing_rendition_strings"
#: The preview code path that must still call :data:`FUNCTION` for the takeover to mean anything.
CALLER = "PreviewMedia.from_post"


#: How long a previewed draft keeps its renditions without being previewed again or published.
DRAFT_CLAIM_SECONDS = 7 * 24 * 60 * 60

#: The post whose preview is being built (django-cast's preview asks for the missing renditions without it).
_previewed_post: contextvars.ContextVar[int | None] = contextvars.ContextVar("previewed_post", default=None)


def warm_up(images_with_type: Iterable[tuple[str, Any]], missing: dict[int, set[str]]) -> None:
    """The renditions a preview found missing: the draft claims them provisionally and a worker makes them.

    The draft's claims (:class:`~auto_renditions.models.DraftClaim`) count like a live post's, so nothing a
    draft shows is deleted under it; they go when the post is published or deleted, or at their expiry. Only
    images whose draft claims grew get a task (or a new token): a repeated preview queues nothing twice.
    """
    post_id = _previewed_post.get()
    if post_id is None:  # a page that was never saved: nothing could own the work
        return
    requirement = planning.required_renditions(images_with_type)
    expires_at = timezone.now() + timedelta(seconds=DRAFT_CLAIM_SECONDS)
    with transaction.atomic():
        before = dict(DraftClaim.objects.filter(post_id=post_id).values_list("image_id", "filter_specs"))
        ledger.lock_images(set(requirement.specs) | set(before))
        grown = {i for i, specs in requirement.specs.items() if not specs <= set(before.get(i, ()))}
        ledger.write_claims_of(DraftClaim, post_id, requirement.specs, expires_at=expires_at)
        dropped = {(i, spec) for i, specs in before.items() for spec in specs} - requirement.keys
        DraftClaim.objects.filter(post_id=post_id).exclude(image_id__in=list(requirement.specs)).delete()
        _release(dropped)
        PendingDeletion.objects.filter(
            image_id__in=list(requirement.specs), filter_spec__in={s for _, s in requirement.keys}
        ).delete()  # a rendition the draft shows again is not deleted at the end of its grace period
        new = ledger.queue_missing(requirement.keys, new_work=grown)
    if new:
        transaction.on_commit(lambda: queue.enqueue_generation_soon(new))


def _release(keys: set[tuple[int, str]]) -> None:
    """Schedule the deletion of the keys nobody claims any more, live or draft (call under the images' lock)."""
    released = {(image_id, spec) for image_id, spec in keys if spec not in ledger.claimed_keys(image_id)}
    ledger.mark_released(released)
    queue.dispatch(ledger.LedgerChange(released=released))


def release_drafts(post_ids: Iterable[int] | None = None, *, expired: bool = False) -> int:
    """Drop the draft claims of these posts (published or deleted), or all expired ones; returns the rows."""
    rows = DraftClaim.objects.all()
    if post_ids is not None:
        rows = rows.filter(post_id__in=list(post_ids))
    if expired:
        rows = rows.filter(expires_at__lte=timezone.now())
    with transaction.atomic():
        found = list(rows.values_list("pk", "image_id", "filter_specs"))
        if not found:
            return 0
        ledger.lock_images({image_id for _, image_id, _ in found})
        DraftClaim.objects.filter(pk__in=[pk for pk, _, _ in found]).delete()
        _release({(image_id, spec) for _, image_id, specs in found for spec in specs})
    return len(found)


@_logged
def post_published(sender: Any, instance: Any, **kwargs: Any) -> None:
    """The post's live claims (written by the publish receiver before this one) take over from its draft's."""
    if isinstance(instance, _post_model()):
        release_drafts([instance.pk])


@_logged
def post_deleting(sender: Any, instance: Any, **kwargs: Any) -> None:
    """Release the draft's claims before the cascade removes them silently."""
    if isinstance(instance, _post_model()) and instance.pk is not None:
        release_drafts([instance.pk])


def _post_model() -> type[Any]:
    from cast.models import Post

    return Post


def connect() -> None:
    from django.db.models.signals import pre_delete
    from wagtail.signals import page_published

    from .signal_handlers import models_of

    # Connected after signal_handlers.connect(): the publish receiver has written the live claims by then.
    page_published.connect(post_published, dispatch_uid="auto_renditions.release_draft_on_publish")
    for model in models_of(_post_model()):
        uid = f"auto_renditions.release_draft_on_delete.{model._meta.label}"
        pre_delete.connect(post_deleting, sender=model, dispatch_uid=uid)


def draft_status() -> dict[str, int]:
    """Draft-owned work, apart from the live posts': drafts holding claims, their renditions, how many of those
    are not made yet, and claims past their expiry (the sweep releases them)."""
    from wagtail.images.models import Rendition

    rows = list(DraftClaim.objects.values_list("post_id", "image_id", "filter_specs", "expires_at"))
    claimed = {(image_id, spec) for _, image_id, specs, _ in rows for spec in specs}
    images = {image_id for image_id, _ in claimed}
    made = set(Rendition.objects.filter(image_id__in=images).values_list("image_id", "filter_spec"))
    now = timezone.now()
    return {
        "drafts": len({post_id for post_id, *_ in rows}),
        "renditions": len(claimed),
        "missing": len(claimed - made),
        "expired": sum(1 for *_, expires_at in rows if expires_at <= now),
    }


def expired_draft_claims() -> list[tuple[int, int]]:
    """``(post_id, image_id)`` of draft claims past their expiry: the sweep should have released them."""
    rows = DraftClaim.objects.filter(expires_at__lte=timezone.now()).order_by("post_id", "image_id")
    return list(rows.values_list("post_id", "image_id"))


def wrap(function: Callable[..., Any]) -> Callable[..., Any]:
    if getattr(function, "_auto_renditions_preview", False):
        return function

    @functools.wraps(function)
    def get_obsolete_and_missing_rendition_strings(images_with_type: Any) -> tuple[Any, dict[int, set[str]]]:
        images_with_type = list(images_with_type)
        obsolete, missing = function(images_with_type)
        if missing:
            try:
                warm_up(images_with_type, missing)
            except Exception:  # noqa: BLE001 - a preview must render whatever happens to the warm-up
                logger.exception("auto_renditions: queueing the preview's renditions failed")
        # Nothing to make here: the preview renders what exists and the pending fallback for the rest.
        return obsolete, {}

    get_obsolete_and_missing_rendition_strings._auto_renditions_preview = True  # type: ignore[attr-defined]
    return get_obsolete_and_missing_rendition_strings


def wrap_from_post(method: Any) -> Any:
    function = getattr(method, "__func__", method)
    if getattr(function, "_auto_renditions_preview", False):
        return method

    @functools.wraps(function)
    def from_post(cls: type, post: Any) -> Any:
        token = _previewed_post.set(post.pk)  # the warm-up's owner
        try:
            return function(cls, post)
        finally:
            _previewed_post.reset(token)

    from_post._auto_renditions_preview = True  # type: ignore[attr-defined]
    return classmethod(from_post)


def install() -> None:
    """Wrap django-cast's function where its preview looks it up (idempotent); a missing name is left to E007."""
    module = importlib.import_module(MODULE)
    if hasattr(module, FUNCTION):
        setattr(module, FUNCTION, wrap(getattr(module, FUNCTION)))
    preview_media = getattr(module, "PreviewMedia", None)
    if preview_media is not None and "from_post" in vars(preview_media):
        preview_media.from_post = wrap_from_post(vars(preview_media)["from_post"])


def installed() -> bool:
    """The preview path still calls the wrapped function: django-cast has not moved it."""
    try:
        module = importlib.import_module(MODULE)
        caller = module.PreviewMedia.from_post
    except (ImportError, AttributeError):
        return False
    function = getattr(caller, "__func__", caller)
    code = getattr(function, "__wrapped__", function).__code__
    return FUNCTION in code.co_names and getattr(getattr(module, FUNCTION, None), "_auto_renditions_preview", False)
