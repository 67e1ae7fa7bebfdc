"""The renditions a post's page renders outside its body: its cover's social card and, for an episode, the Podlove
poster and the audio player's facade. The cover is the post's, or its blog's when the post has none.

The specs are django-cast's own: its constants, and the ``{% image %}`` tag of its audio template read from the
template itself, so a django-cast upgrade that changes them changes the requirement with it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Collection
from typing import Any

logger = logging.getLogger(__name__)

#: The template whose ``{% image cover fill-… %}`` renders the audio player's facade on an episode's page.
AUDIO_TEMPLATE = "cast/audio/audio.html"


@functools.cache
def audio_facade_specs() -> frozenset[str]:
    """The filter specs of the ``{% image %}`` tags in django-cast's audio template (its ``fill-400x400``)."""
    from django.template.loader import get_template
    from wagtail.images.templatetags.wagtailimages_tags import ImageNode

    try:
        template: Any = get_template(AUDIO_TEMPLATE)
        nodes = template.template.nodelist.get_nodes_by_type(ImageNode)  # the Django backend wraps it
    except Exception:  # noqa: BLE001 - a template django-cast dropped means no facade to plan, not a failed publish
        logger.exception("auto_renditions: cannot read the image specs of %s", AUDIO_TEMPLATE)
        return frozenset()
    return frozenset(node.get_filter().spec for node in nodes)


def cover_specs(is_episode: bool) -> frozenset[str]:
    from cast.models.pages import PODLOVE_POSTER_RENDITION_SPEC, SOCIAL_COVER_RENDITION_SPEC

    if not is_episode:
        return frozenset({SOCIAL_COVER_RENDITION_SPEC})
    return frozenset({SOCIAL_COVER_RENDITION_SPEC, PODLOVE_POSTER_RENDITION_SPEC, *audio_facade_specs()})


def claimable_specs() -> frozenset[str]:
    """Every page-level spec a post may claim: the keep-list does not protect them once their last claim went."""
    return cover_specs(True)


def cover_requirements(post_ids: Collection[int]) -> dict[int, dict[int, frozenset[str]]]:
    """``{post_id: {cover_image_id: specs}}`` for the live posts among ``post_ids`` that show a cover."""
    from cast.models import Blog, Episode, Post

    if not post_ids:
        return {}
    posts = list(Post.objects.live().filter(pk__in=post_ids).values_list("pk", "cover_image_id", "path"))
    fallback_paths = {path[: -Post.steplen] for _, cover, path in posts if cover is None}
    blog_covers = dict(Blog.objects.filter(path__in=fallback_paths).values_list("path", "cover_image_id"))
    episodes = set(Episode.objects.filter(pk__in=[pk for pk, _, _ in posts]).values_list("pk", flat=True))
    found: dict[int, dict[int, frozenset[str]]] = {}
    for post_id, cover, path in posts:
        cover = cover if cover is not None else blog_covers.get(path[: -Post.steplen])
        if cover is not None:
            found[post_id] = {cover: cover_specs(post_id in episodes)}
    return found


def posts_falling_back_to(blog_id: int) -> set[int]:
    """Live posts of this blog without a cover of their own: they show the blog's."""
    from cast.models import Blog, Post

    blog = Blog.objects.filter(pk=blog_id).only("path", "depth").first()
    if blog is None:
        return set()
    children = Post.objects.live().child_of(blog).filter(cover_image__isnull=True)
    return set(children.values_list("pk", flat=True))


def _is_blog(instance: object) -> bool:
    from cast.models import Blog

    return isinstance(instance, Blog)


def remember_blog_cover(sender: type, instance: Any, raw: bool = False, **kwargs: object) -> None:
    """Before a blog is saved, remember its cover (to tell a changed cover from any other edit)."""
    if raw or not _is_blog(instance) or instance.pk is None:
        return
    from cast.models import Blog

    old = Blog.objects.filter(pk=instance.pk).values_list("cover_image_id", flat=True).first()
    instance._auto_renditions_old_cover = old


def blog_saved(sender: type, instance: Any, created: bool = False, raw: bool = False, **kwargs: object) -> None:
    """A blog's cover changed: its live posts without a cover of their own show the new one."""
    from .signal_handlers import _logged, sync_or_defer

    if raw or created or not hasattr(instance, "_auto_renditions_old_cover"):
        return
    old = instance.__dict__.pop("_auto_renditions_old_cover")
    if old != instance.cover_image_id:
        _logged(sync_or_defer)(posts_falling_back_to(instance.pk))


def connect() -> None:
    """Wire the listeners of the page-level renditions (a post's own cover is replanned by its publish)."""
    from cast.models import Blog
    from django.db.models.signals import post_save, pre_save

    from .signal_handlers import models_of

    for model in models_of(Blog):
        label = model._meta.label
        pre_save.connect(
            remember_blog_cover, sender=model, dispatch_uid=f"auto_renditions.remember_blog_cover.{label}"
        )
        post_save.connect(blog_saved, sender=model, dispatch_uid=f"auto_renditions.blog_saved.{label}")
