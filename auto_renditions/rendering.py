"""Pages render working images while their renditions are still being made.

django-cast turns an image's existing renditions into ``src``/``srcset`` in one function,
``cast.blocks.get_srcset_images_for_slots`` (used by image blocks, galleries and the gallery modal view); a
required spec without a rendition yields nothing, so the ``src`` is empty. This module wraps that one function:
every required spec that has no rendition yet is served by the original file, so the page works at once and
uses the renditions as soon as they exist. No query is added: only the renditions django-cast already fetched
are looked at.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cast.renditions import RenditionFilters, get_srgb_counterpart_filter_spec

#: Modules that hold a reference to django-cast's function and get the wrapped one.
PATCHED_MODULES = ("cast.blocks", "cast.views.gallery")
FUNCTION = "get_srcset_images_for_slots"


@dataclass(frozen=True)
class OriginalFile:
    """Stands in for a rendition that is not made yet: the parts django-cast reads (``url``, ``width``)."""

    url: str
    width: int
    height: int


def with_fallbacks(image: Any, image_type: str, renditions: dict[str, Any]) -> dict[str, Any]:
    """Return ``renditions`` plus the original file for every required spec that has no rendition yet."""
    try:
        specs = RenditionFilters.from_wagtail_image_with_type(image, image_type).filter_strings
    except (ValueError, ZeroDivisionError):
        return renditions
    missing = [
        spec for spec in specs if spec not in renditions and get_srgb_counterpart_filter_spec(spec) not in renditions
    ]
    if not missing:
        return renditions
    try:
        original = OriginalFile(image.file.url, image.width, image.height)
    except ValueError:  # no file attached
        return renditions
    return {**renditions, **dict.fromkeys(missing, original)}


def wrap(function: Callable[..., Any]) -> Callable[..., Any]:
    if getattr(function, "_auto_renditions_fallback", False):
        return function

    @functools.wraps(function)
    def get_srcset_images_for_slots(image: Any, image_type: str, renditions: dict[str, Any]) -> Any:
        return function(image, image_type, renditions=with_fallbacks(image, image_type, renditions))

    get_srcset_images_for_slots._auto_renditions_fallback = True  # type: ignore[attr-defined]
    return get_srcset_images_for_slots


def install() -> None:
    """Wrap django-cast's function where it is looked up (idempotent)."""
    import importlib

    for name in PATCHED_MODULES:
        module = importlib.import_module(name)
        setattr(module, FUNCTION, wrap(getattr(module, FUNCTION)))


def installed() -> bool:
    import importlib

    return all(
        getattr(getattr(importlib.import_module(name), FUNCTION), "_auto_renditions_fallback", False)
        for name in PATCHED_MODULES
    )
