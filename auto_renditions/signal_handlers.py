"""Listeners: one small function per event, all wired by :func:`connect` with explicit ``dispatch_uid``s.

Each listener only does cheap work in the request: find the affected live posts, let the ledger write their
claims in the same transaction, and let the queue hand the rest to django-q2 on commit. A failure in here is
logged and never breaks the editor's action (the ledger runs in a savepoint): a failed sync of a post is handed
to a worker after commit (:func:`sync_or_defer`), and ``auto_renditions check --fix`` repairs anything else.
"""

from __future__ import annotations

import contextvars
import functools
import logging
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from typing import Any

from django.apps import apps
from django.db import transaction
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_delete, pre_save
from wagtail.images.models import Image, Rendition
from wagtail.signals import page_published, page_unpublished

from . import cleanup, ledger, queue

logger = logging.getLogger(__name__)

#: django-cast's synchronous receiver, which this app replaces.
CAST_PUBLISH_DISPATCH_UID = "cast.prepare_published_post_media"

#: Posts whose media relations this app is syncing right now: their m2m signals are not replanned one by one.
_syncing_posts: contextvars.ContextVar[frozenset[int]] = contextvars.ContextVar("syncing_posts", default=frozenset())


def _logged(handler: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(handler)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            handler(*args, **kwargs)
        except Exception:  # noqa: BLE001 - renditions must never block an editor
            logger.exception("auto_renditions: %s failed; run `manage.py auto_renditions check`", handler.__name__)

    return wrapper


@contextmanager
def _syncing(post_id: int) -> Iterator[None]:
    token = _syncing_posts.set(_syncing_posts.get() | {post_id})
    try:
        yield
    finally:
        _syncing_posts.reset(token)


def sync_or_defer(post_ids: Collection[int]) -> None:
    """Sync the posts' claims in this transaction; should that fail, log it and let a worker sync them after commit.

    The editor's action goes on either way (the sync ran in a savepoint): without the deferred sync a failure here
    (a deadlock, a database hiccup) would leave a live post's claims stale until someone ran ``check --fix``.
    """
    if not post_ids:
        return
    try:
        ledger.sync_posts(post_ids)
    except Exception:  # noqa: BLE001 - renditions must never block an editor
        logger.exception("auto_renditions: syncing posts %s failed; a worker will sync them", sorted(post_ids))
        posts = set(post_ids)
        transaction.on_commit(_logged(lambda: queue.enqueue_sync(posts)))


def _is_post(instance: Any) -> bool:
    from cast.models import Post

    return isinstance(instance, Post)


def publish_post(sender: Any, instance: Any, **kwargs: Any) -> None:
    """A post went live: sync its media relations like django-cast does, then claim, but make nothing here."""
    from cast.post_media import prepare_post_media

    if not (_is_post(instance) and instance.live):
        return
    with _syncing(instance.pk):
        prepare_post_media(instance, create_renditions=False)
    sync_or_defer([instance.pk])


@_logged
def unpublish_post(sender: Any, instance: Any, **kwargs: Any) -> None:
    """A post went offline: its claims are released."""
    if _is_post(instance):
        ledger.release_posts([instance.pk])


@_logged
def delete_post(sender: Any, instance: Any, **kwargs: Any) -> None:
    """A post is being deleted: release its claims before the cascade removes them silently."""
    if _is_post(instance) and instance.pk is not None:
        ledger.release_posts([instance.pk])


@_logged
def post_media_changed(
    sender: Any, instance: Any, action: str, reverse: bool, pk_set: set[int] | None, **kwargs: Any
) -> None:
    """``Post.images`` or ``Post.galleries`` changed outside a publish: replan the live posts concerned."""
    if action not in {"post_add", "post_remove", "post_clear"}:
        return
    if not reverse:
        if instance.pk not in _syncing_posts.get() and instance.live:
            sync_or_defer([instance.pk])
        return
    if pk_set:  # an image or gallery was added to / removed from posts
        sync_or_defer(set(pk_set) - _syncing_posts.get())


@_logged
def gallery_images_changed(
    sender: Any, instance: Any, action: str, reverse: bool, pk_set: set[int] | None, **kwargs: Any
) -> None:
    """A gallery's images changed: every live post showing that gallery (django-cast shares them) is replanned."""
    from cast.models import Post

    if reverse and action == "pre_clear":  # image.gallery_set.clear(): remember which galleries it was in
        instance._auto_renditions_galleries = set(instance.gallery_set.values_list("pk", flat=True))
        return
    if action not in {"post_add", "post_remove", "post_clear"}:
        return
    if not reverse:
        gallery_ids = {instance.pk}
    elif action == "post_clear":
        gallery_ids = getattr(instance, "_auto_renditions_galleries", set())
    else:
        gallery_ids = set(pk_set or ())
    posts = Post.objects.live().filter(galleries__in=gallery_ids).values_list("pk", flat=True).distinct()
    sync_or_defer(set(posts))


def remember_image_file(sender: Any, instance: Image, raw: bool = False, **kwargs: Any) -> None:
    """Before an image is saved, remember which file it had (to tell a replaced file from a title edit)."""
    if raw or instance.pk is None:
        return
    instance._auto_renditions_old_file = (
        type(instance).objects.filter(pk=instance.pk).values_list("file", flat=True).first()
    )


@_logged
def image_saved(sender: Any, instance: Image, created: bool, raw: bool = False, **kwargs: Any) -> None:
    """An image's file was replaced: its renditions are stale, and its new size changes the required specs.

    Should the sync of its posts fail (a deadlock, a database hiccup), the stale renditions still go and a
    worker syncs the posts after commit, like :func:`sync_or_defer` does.
    """
    old_file = getattr(instance, "_auto_renditions_old_file", None)
    if created or raw or old_file is None or old_file == instance.file.name:
        return
    del instance._auto_renditions_old_file
    from .models import Failure

    with transaction.atomic():
        Failure.objects.filter(image=instance).delete()  # a new file deserves fresh attempts
    # Stale now. Wagtail's edit form deletes them right after this too, other code paths may not; each claimed
    # one is queued again by `rendition_deleted` once this commits.
    stale = Rendition.objects.filter(image=instance)
    try:
        with transaction.atomic():
            ledger.sync_image_posts(instance.pk)  # finds the posts under the image's lock, then plans
            cleanup.delete_renditions(stale)
    except Exception:  # noqa: BLE001 - renditions must never block an editor
        posts = ledger.posts_using_images([instance.pk])
        logger.exception("auto_renditions: syncing posts %s failed; a worker will sync them", sorted(posts))
        if posts:
            transaction.on_commit(_logged(lambda: queue.enqueue_sync(posts)))
        with transaction.atomic():
            ledger.lock_images([instance.pk])
            cleanup.delete_renditions(stale)


@_logged
def image_deleting(sender: Any, instance: Image, **kwargs: Any) -> None:
    """An image is about to be deleted: drop Wagtail's references to it first, not after the cascade.

    Wagtail removes them in ``post_delete``, after the cascade took django-cast's relation rows of the image. A
    publish of a post that stops showing the image goes the other way round: its page save rewrites the post's
    references, then django-cast's media sync deletes the relation row. Those two deadlocked now and then, and
    PostgreSQL aborted one editor's action. Taking the reference rows first orders the deletion like the publish.
    """
    from wagtail.models import ReferenceIndex
    from wagtail.signal_handlers import reference_index_auto_update_disabled

    if instance.pk is None or getattr(reference_index_auto_update_disabled, "value", False):
        return
    with transaction.atomic():  # should it fail, Wagtail still removes them after the cascade
        ReferenceIndex.remove_references_to(instance)


@_logged
def rendition_deleted(sender: Any, instance: Rendition, **kwargs: Any) -> None:
    """Any rendition row deleted (by us, the edit form, an image's cascade, a shell): make sure its file goes,
    and if a live post still claims it, queue it again after commit."""
    cleanup.remember_file(instance)
    image_id = instance.image_id
    pending = transaction.get_connection().run_on_commit
    key = f"auto_renditions.requeue.{image_id}"
    if any(getattr(callback, "__name__", "") == key for _, callback, *_ in pending):
        return  # one check per image and transaction (the edit form deletes a dozen at once)

    def requeue() -> None:
        if not Image.objects.filter(pk=image_id).exists():
            return  # the image itself was deleted (its renditions went with it)
        with transaction.atomic():
            ledger.lock_images([image_id])
            claimed = {(image_id, spec) for spec in ledger.claimed_keys(image_id)}
            new = ledger.queue_missing(claimed)
        if new:
            queue.enqueue_generation(new)

    requeue.__name__ = key
    transaction.on_commit(_logged(requeue))


def models_of(base: type[Any]) -> list[type[Any]]:
    """``base`` and its subclasses (e.g. ``Post`` and ``Episode``): model signals are connected per model, never for
    every sender, because a ``pre_delete`` receiver for a model turns off Django's fast delete of its rows (a
    receiver without a sender: of sessions, django-q2's ORM queue, every model of the site)."""
    return [model for model in apps.get_models() if issubclass(model, base)]


def connect() -> None:
    """Wire every listener, replacing django-cast's synchronous rendition generation on publish."""
    from cast.models import Gallery, Post

    page_published.disconnect(dispatch_uid=CAST_PUBLISH_DISPATCH_UID)
    page_published.connect(publish_post, dispatch_uid="auto_renditions.publish_post")
    page_unpublished.connect(unpublish_post, dispatch_uid="auto_renditions.unpublish_post")
    for model in models_of(Post):
        pre_delete.connect(delete_post, sender=model, dispatch_uid=f"auto_renditions.delete_post.{model._meta.label}")
    m2m_changed.connect(post_media_changed, sender=Post.images.through, dispatch_uid="auto_renditions.post_images")
    m2m_changed.connect(
        post_media_changed, sender=Post.galleries.through, dispatch_uid="auto_renditions.post_galleries"
    )
    m2m_changed.connect(
        gallery_images_changed, sender=Gallery.images.through, dispatch_uid="auto_renditions.gallery_images"
    )
    pre_save.connect(remember_image_file, sender=Image, dispatch_uid="auto_renditions.remember_image_file")
    post_save.connect(image_saved, sender=Image, dispatch_uid="auto_renditions.image_saved")
    pre_delete.connect(image_deleting, sender=Image, dispatch_uid="auto_renditions.image_deleting")
    post_delete.connect(rendition_deleted, sender=Rendition, dispatch_uid="auto_renditions.rendition_deleted")
