"""How a worker renders one image's specs: Wagtail's own ``Filter`` pipeline, decoding the original once per task
and resizing once per output size, shared by every format of that size (JPEG and AVIF of ``width-987``).

Wagtail's batch API reads the original's bytes once but decodes them again for every spec, and django-cast asks
for each width in two formats. That saves about a third of the CPU and lowers the memory peak, with output
byte-identical to Wagtail's (``tests/test_generation.py``; figures in ``docs/BENCHMARKS.md``, section 5).
Everything after the resize — django-cast's ``srgb`` operation, format, quality, encoding, file naming, the
database insert — is Wagtail's code unchanged. Originals other than plain JPEG/PNG take Wagtail's path.

Memory: every decoded or resized picture is dropped as soon as no spec of the task needs it any more (the original
once the last size is made), the specs render smallest first, and originals over ``SERIAL_RENDER_PIXELS`` render
one spec at a time in the calling thread (Wagtail's single-rendition API) instead of three at a time in Wagtail's
thread pool, where each thread holds its own encoder buffers and glibc heap (``docs/BENCHMARKS.md``, section 4).
"""

from __future__ import annotations

import ctypes
import math
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import willow
from PIL import ImageOps
from wagtail.images.models import Filter
from willow.plugins.pillow import PillowImage

from .conf import get_settings

#: Originals Pillow decodes to one frame, for which the shared path is known to give Wagtail's exact output.
SHARED_FORMATS = frozenset({"jpeg", "png"})

Size = tuple[int, int]


class SharedSource:
    """One original for one task: decoded and oriented once, resized once per size (thread-safe: Wagtail's batch
    API renders three specs at a time).

    Before the first resize it works out, with each filter's own ``get_transform``, which size every filter
    will ask for; each picture is released after its last user.
    """

    def __init__(self) -> None:
        self.filters: list[Filter] = []
        self._lock = threading.Lock()
        self._opened = False
        self._image: Any = None
        self._format = ""
        self._original: Any = None  # the oriented PIL image, while some spec still needs it
        self._uses: Counter[Size] = Counter()  # filters that will still take each size
        self._unmade: set[Size] = set()
        self._to_crop = 0  # filters that have not passed their crop step yet (until then they read the original)
        self._size_locks: dict[Size, threading.Lock] = {}
        self._resized: dict[Size, PillowImage] = {}

    def open(self, image: Any, source: Any = None) -> PillowImage | None:
        """The shared original as a Willow image, or ``None`` where Wagtail's own path must be taken.

        ``source`` is the original's bytes when Wagtail's batch API read them; the single-rendition API passes
        none, and the original is read from storage once.
        """
        with self._lock:
            if not self._opened:
                self._image = image
                if source is None:
                    with image.open_file() as handle:
                        self._decode(handle)
                else:
                    self._decode(source)
                self._opened = True
        if not self._format:
            if hasattr(source, "seek"):
                source.seek(0)
            return None
        shared = _SharedPillowImage(self)
        shared.format_name = self._format
        return shared

    def _decode(self, source: Any) -> None:
        opened = willow.Image.open(source)
        if opened.format_name not in SHARED_FORMATS:
            return
        self._format = opened.format_name
        self._original = _decode_oriented(opened)
        size = self._original.size
        for rendition_filter in self.filters:
            transform = rendition_filter.get_transform(self._image, size)
            if _is_full_frame(transform.get_rect().round(), size):
                self._uses[tuple(transform.size)] += 1
        self._unmade = set(self._uses)
        self._to_crop = len(self.filters)
        self.filters = []  # planned; no reference cycle with the filters keeps the pictures alive

    def original(self) -> Any:
        """The oriented original; decoded again only if a spec asks after its planned last use."""
        with self._lock:
            if self._original is None:
                with self._image.open_file() as handle:
                    self._original = _decode_oriented(willow.Image.open(handle))
            return self._original

    def passed_crop(self) -> None:
        """A filter has its full frame or its crop: it reads the original again only through ``resized``."""
        with self._lock:
            self._to_crop -= 1
            released = self._release_original_if_done()
        if released:
            return_freed_memory()

    def resized(self, size: Size) -> PillowImage:
        with self._lock:
            size_lock = self._size_locks.setdefault(size, threading.Lock())
        with size_lock:
            if size not in self._resized:
                self._resized[size] = PillowImage(self.original()).resize(size)
            with self._lock:
                self._unmade.discard(size)
                released = self._release_original_if_done()
                self._uses[size] -= 1
                last = self._uses[size] <= 0
                picture = self._resized.pop(size) if last else self._resized[size]
            # The last user takes the picture itself; every other one a copy, made before the last user can get
            # the picture (operations and Pillow's save() settings may change it).
            if not last:
                picture = PillowImage(picture.image.copy())
        if released:
            return_freed_memory()
        return picture

    def _release_original_if_done(self) -> bool:
        if self._original is not None and self._to_crop <= 0 and not self._unmade:
            self._original = None
            return True
        return False


def _decode_oriented(opened: Any) -> Any:
    """Wagtail's decode and orientation (``PillowImage.open(...).auto_orient()``), minus the full-frame copy that
    Pillow's ``exif_transpose`` makes of an upright original."""
    picture = PillowImage.open(opened).image
    ImageOps.exif_transpose(picture, in_place=True)
    return picture


def return_freed_memory() -> None:
    """Hand freed heap pages back to the OS (glibc's ``malloc_trim``; a no-op elsewhere).

    Pillow's pixel blocks come from the heap, and glibc keeps freed heap pages resident: without this, the
    memory of a released original is still counted while the largest rendition is encoded.
    """
    if _malloc_trim is not None:
        _malloc_trim(0)


def _find_malloc_trim() -> Any:
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl)
        return None


_malloc_trim = _find_malloc_trim()


def _is_full_frame(rect: Any, size: Size) -> bool:
    """Wagtail rounds a ``width-N`` rect outward; clamped to the picture, it is the whole frame (a plain copy)."""
    left, top, right, bottom = rect
    width, height = size
    return (max(0, left), max(0, top), min(right, width), min(bottom, height)) == (0, 0, width, height)


class _SharedPillowImage(PillowImage):
    """The shared original inside one ``Filter.run``: orienting, full-frame crops and resizes come from the
    task's :class:`SharedSource`. It holds no pixels itself, so a rendition being encoded does not keep the
    original alive."""

    def __init__(self, shared: SharedSource) -> None:  # not PillowImage's: no pixels held (see above)
        self._shared = shared

    @property
    def image(self) -> Any:
        return self._shared.original()

    def auto_orient(self) -> PillowImage:
        return self  # oriented once, when decoded

    def crop(self, rect: Any) -> PillowImage:
        full_frame = _is_full_frame(rect, self.image.size)
        picture = self if full_frame else PillowImage(self.image).crop(rect)  # a real crop: nothing to share
        self._shared.passed_crop()
        return picture

    def resize(self, size: Any) -> PillowImage:
        return self._shared.resized(tuple(size))


class SharedSourceFilter(Filter):
    """A Wagtail ``Filter`` whose original comes from the task's :class:`SharedSource`."""

    def __init__(self, spec: str, shared: SharedSource) -> None:
        super().__init__(spec=spec)
        self.shared = shared

    @contextmanager
    def get_willow_image(self, image: Any, source: Any = None) -> Iterator[Any]:
        shared = self.shared.open(image, source)
        if shared is None:
            with super().get_willow_image(image, source) as own:
                yield own
        else:
            yield shared


def filters_for(specs: list[str]) -> list[Filter]:
    """Filters for one task's specs, all sharing one source."""
    shared = SharedSource()
    shared.filters = [SharedSourceFilter(spec, shared) for spec in specs]
    return list(shared.filters)


def renders_serially(image: Any) -> bool:
    """Whether an original is large enough to render one spec at a time (``SERIAL_RENDER_PIXELS``)."""
    return (image.width or 0) * (image.height or 0) > get_settings().SERIAL_RENDER_PIXELS


def render(image: Any, specs: list[str], *, serial: bool | None = None) -> None:
    """Make ``specs`` of ``image`` through Wagtail's own rendition API, sharing one decode between them.

    Smallest output first, so the original can go once the largest size is made, before its encodes.
    """
    filters = sorted(filters_for(specs), key=lambda f: math.prod(f.get_transform(image).size))
    try:
        if serial if serial is not None else renders_serially(image):
            for rendition_filter in filters:
                image.get_rendition(rendition_filter)
        else:
            image.get_renditions(*filters)
    finally:
        return_freed_memory()  # a worker's next image starts from what this one freed, not from its peak
