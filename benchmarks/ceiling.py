"""The Pillow-only ceiling: decode each original once, then LANCZOS-resize and encode every spec, no Django.

Encoder settings are the ones Wagtail 8.0's ``Filter.run`` uses when a spec names no quality
(``WAGTAILIMAGES_JPEG_QUALITY`` default 76 with ``progressive`` and ``optimize``; ``WAGTAILIMAGES_AVIF_QUALITY``
default 61). ``srgb`` is a no-op for the benchmark's originals (no ICC profile) and is skipped.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterable

from PIL import Image as PILImage

JPEG_QUALITY = 76
AVIF_QUALITY = 61


def parse_spec(spec: str, original_format: str = "jpeg") -> tuple[int, str]:
    """``width-N[|srgb][|format-X]`` -> ``(N, format)``."""
    width, fmt = 0, original_format
    for part in spec.split("|"):
        if part.startswith("width-"):
            width = int(part.removeprefix("width-"))
        elif part.startswith("format-"):
            fmt = part.removeprefix("format-")
    if not width:
        raise ValueError(f"not a plain width spec: {spec}")
    return width, fmt


def encode(picture: PILImage.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    if fmt == "jpeg":
        picture.save(out, "JPEG", quality=JPEG_QUALITY, progressive=True, optimize=True)
    elif fmt == "avif":
        picture.save(out, "AVIF", quality=AVIF_QUALITY)
    elif fmt == "webp":
        picture.save(out, "WEBP", quality=80)
    else:
        raise ValueError(fmt)
    return out.getvalue()


def resized(picture: PILImage.Image, width: int) -> PILImage.Image:
    height = max(1, int(picture.height * width / picture.width))
    return picture.resize((width, height), PILImage.Resampling.LANCZOS)


def render_all(jobs: Iterable[tuple[bytes, Iterable[str]]]) -> dict[str, float]:
    """Decode once per original, resize + encode every spec. Returns wall and CPU seconds (all threads)."""
    wall0, cpu0 = time.perf_counter(), time.process_time()
    outputs = 0
    for data, specs in jobs:
        picture = PILImage.open(io.BytesIO(data))
        picture.load()
        for spec in specs:
            width, fmt = parse_spec(spec)
            outputs += len(encode(resized(picture, width), fmt))
    return {"wall_s": time.perf_counter() - wall0, "cpu_s": time.process_time() - cpu0, "bytes": outputs}
