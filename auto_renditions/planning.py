"""Pure planning: what a post requires, and how that differs from what it claims. No queries and no storage
access in here.

The requirement is django-cast's own: ``RenditionFilters.from_wagtail_image_with_type`` for every
``(image_type, image)`` of ``Post.get_all_images()`` (or the same pairs as :class:`ImageRow`, which the ledger
loads without model instances), so the CAST_* settings flow through unchanged.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cast.renditions import RenditionFilters

#: ``(image_id, filter_spec)``: one rendition of one image.
Key = tuple[int, str]


@dataclass(frozen=True)
class Unplannable:
    """An image whose renditions cannot be planned (e.g. a format django-cast does not support)."""

    image_id: int
    error: str


@dataclass(frozen=True)
class ImageRow:
    """What planning reads of an image (its id, size and file name), loaded without a model instance."""

    pk: int
    width: int
    height: int
    file_name: str


@dataclass
class Requirement:
    """The renditions one post needs, per image, and the images that could not be planned."""

    specs: dict[int, frozenset[str]] = field(default_factory=dict)
    unplannable: list[Unplannable] = field(default_factory=list)

    @property
    def keys(self) -> set[Key]:
        return {(image_id, spec) for image_id, specs in self.specs.items() for spec in specs}

    @property
    def image_ids(self) -> set[int]:
        return set(self.specs)


def required_renditions(images_with_type: Iterable[tuple[str, Any]]) -> Requirement:
    """Return the filter specs django-cast renders for these images (Wagtail images or :class:`ImageRow`).

    django-cast's answer depends only on the image type, the original's size and its file name's suffix, so
    photos of one camera in one post are planned once.
    """
    planned: dict[tuple, frozenset[str] | str] = {}
    specs: dict[int, set[str]] = defaultdict(set)
    unplannable: dict[int, Unplannable] = {}
    for image_type, image in images_with_type:
        original = _Original.of(image)
        shape = (image_type, original.width, original.height, os.path.splitext(original.file.name)[1])
        if shape not in planned:
            planned[shape] = _plan(original, image_type)
        answer = planned[shape]
        if isinstance(answer, str):
            unplannable.setdefault(image.pk, Unplannable(image.pk, answer))
        elif answer:
            specs[image.pk] |= answer
    return Requirement({image_id: frozenset(s) for image_id, s in specs.items()}, list(unplannable.values()))


@dataclass(frozen=True)
class _FileName:
    name: str


@dataclass(frozen=True)
class _Original:
    """All that django-cast's ``RenditionFilters.from_wagtail_image`` reads of an image: its size and file name.

    It stands in for a Wagtail image because an image model instance with a width or height of 0 or ``None``
    makes Django's ``ImageField`` open the original to read the size (``update_dimension_fields``, on
    ``post_init``): a storage round trip per image, and an exception when the file is gone.
    """

    width: Any
    height: Any
    file: _FileName

    @classmethod
    def of(cls, image: Any) -> _Original:
        file_name = image.file_name if isinstance(image, ImageRow) else image.file.name
        return cls(image.width, image.height, _FileName(file_name or ""))


def _plan(original: _Original, image_type: str) -> frozenset[str] | str:
    """django-cast's filter specs for one image, or why it has none (an unusable size, an unsupported format)."""
    width, height = original.width, original.height
    if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
        return f"no usable size recorded for the original (width={width!r}, height={height!r})"
    try:
        return frozenset(RenditionFilters.from_wagtail_image_with_type(original, image_type).filter_strings)
    except (ValueError, ArithmeticError) as error:  # unsupported format, a degenerate aspect ratio
        return f"{type(error).__name__}: {error}"


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


@dataclass
class ClaimChanges:
    """How the claim rows of some posts change: rows to write (new or with other specs), rows to drop."""

    write: list[tuple[int, int, list[str]]] = field(default_factory=list)  # (post_id, image_id, sorted specs)
    drop: list[tuple[int, int]] = field(default_factory=list)  # (post_id, image_id)
    add: set[Key] = field(default_factory=set)
    remove: set[Key] = field(default_factory=set)


def claim_changes(
    claimed: Mapping[int, Mapping[int, frozenset[str]]], required: Mapping[int, Requirement]
) -> ClaimChanges:
    """Compare each post's claims (``{post_id: {image_id: specs}}``) with its requirement."""
    changes = ClaimChanges()
    for post_id, requirement in required.items():
        before, after = claimed.get(post_id, {}), requirement.specs
        for image_id in sorted(before.keys() | after.keys()):
            old, new = before.get(image_id, frozenset()), after.get(image_id, frozenset())
            if old == new:
                continue
            if new:
                changes.write.append((post_id, image_id, sorted(new)))
            else:
                changes.drop.append((post_id, image_id))
            changes.add.update((image_id, spec) for spec in new - old)
            changes.remove.update((image_id, spec) for spec in old - new)
    return changes


def by_image(keys: Iterable[Key]) -> dict[int, set[str]]:
    """Group ``(image_id, spec)`` pairs into ``{image_id: {spec, ...}}``."""
    grouped: dict[int, set[str]] = defaultdict(set)
    for image_id, spec in keys:
        grouped[image_id].add(spec)
    return dict(grouped)
