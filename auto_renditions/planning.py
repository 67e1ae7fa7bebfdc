"""Pure planning: what a post requires, and how that differs from what it claims. No ORM in here.

The requirement is django-cast's own: ``RenditionFilters.from_wagtail_image_with_type`` for every
``(image_type, image)`` of ``Post.get_all_images()``, so the CAST_* settings flow through unchanged.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from cast.renditions import RenditionFilters

#: ``(image_id, filter_spec)``: one rendition of one image.
Key = tuple[int, str]


@dataclass(frozen=True)
class Unplannable:
    """An image whose renditions cannot be planned (e.g. a format django-cast does not support)."""

    image_id: int
    error: str


@dataclass
class Requirement:
    """The renditions one post needs, and the images that could not be planned."""

    keys: set[Key] = field(default_factory=set)
    unplannable: list[Unplannable] = field(default_factory=list)

    @property
    def image_ids(self) -> set[int]:
        return {image_id for image_id, _ in self.keys}


def required_renditions(images_with_type: Iterable[tuple[str, Any]]) -> Requirement:
    """Return the ``(image_id, filter_spec)`` pairs django-cast renders for these images.

    django-cast's answer depends only on the image type, the original's size and its file name's suffix, so
    photos of one camera in one post are planned once.
    """
    requirement = Requirement()
    planned: dict[tuple, list[str] | str] = {}
    for image_type, image in images_with_type:
        shape = (image_type, image.width, image.height, PurePath(image.file.name).suffix)
        if shape not in planned:
            try:
                planned[shape] = RenditionFilters.from_wagtail_image_with_type(image, image_type).filter_strings
            except (ValueError, ZeroDivisionError) as error:  # unsupported format, or 0×0 dimensions
                planned[shape] = f"{type(error).__name__}: {error}"
        specs = planned[shape]
        if isinstance(specs, str):
            requirement.unplannable.append(Unplannable(image.pk, specs))
        else:
            image_id = image.pk
            requirement.keys.update((image_id, spec) for spec in specs)
    return requirement


@dataclass(frozen=True)
class Delta:
    """How a post's claims must change to match its requirement."""

    add: frozenset[Key]
    remove: frozenset[Key]

    def __bool__(self) -> bool:
        return bool(self.add or self.remove)


def diff(claimed: Iterable[Key], required: Iterable[Key]) -> Delta:
    claimed, required = set(claimed), set(required)
    return Delta(add=frozenset(required - claimed), remove=frozenset(claimed - required))


def by_image(keys: Iterable[Key]) -> dict[int, set[str]]:
    """Group ``(image_id, spec)`` pairs into ``{image_id: {spec, ...}}``."""
    grouped: dict[int, set[str]] = defaultdict(set)
    for image_id, spec in keys:
        grouped[image_id].add(spec)
    return dict(grouped)
