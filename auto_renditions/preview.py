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

import functools
import importlib
import logging
from collections.abc import Callable, Iterable
from typing import Any

logger = logging.getLogger(__name__)

#: Where django-cast looks the function up, and the name it uses.
MODULE = "cast.preview_media"
FUNCTION = "get_obsolete_and_missing_rendition_strings"
#: The preview code path that must still call :data:`FUNCTION` for the takeover to mean anything.
CALLER = "PreviewMedia.from_post"


def warm_up(images_with_type: Iterable[tuple[str, Any]], missing: dict[int, set[str]]) -> None:
    """The renditions a preview found missing; made by a worker, never in the request."""


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


def install() -> None:
    """Wrap django-cast's function where its preview looks it up (idempotent); a missing name is left to E006."""
    module = importlib.import_module(MODULE)
    if hasattr(module, FUNCTION):
        setattr(module, FUNCTION, wrap(getattr(module, FUNCTION)))


def installed() -> bool:
    """The preview path still calls the wrapped function: django-cast has not moved it."""
    try:
        module = importlib.import_module(MODULE)
        caller = module.PreviewMedia.from_post
    except (ImportError, AttributeError):
        return False
    code = getattr(caller, "__func__", caller).__code__
    return FUNCTION in code.co_names and getattr(getattr(module, FUNCTION, None), "_auto_renditions_preview", False)
