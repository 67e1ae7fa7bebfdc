"""Photo-like pictures made on the spot (sky, sun, hills and grain), so that encoders do real work."""

from __future__ import annotations

import io
import random

from PIL import Image, ImageChops, ImageDraw, ImageFilter


def landscape(width: int, height: int, seed: int, *, alpha: bool = False) -> Image.Image:
    """A sunset-ish scene at ``width`` × ``height``; with ``alpha``, a logo-like cut-out on transparency."""
    rnd = random.Random(seed)
    sky_top = tuple(rnd.randrange(40, 120) for _ in range(3))
    sky_bottom = tuple(rnd.randrange(150, 255) for _ in range(3))
    gradient = Image.linear_gradient("L").resize((width, height))
    picture = Image.composite(
        Image.new("RGB", (width, height), sky_bottom), Image.new("RGB", (width, height), sky_top), gradient
    )
    draw = ImageDraw.Draw(picture)
    r = max(4, min(width, height) // 8)
    sx, sy = rnd.randrange(width), rnd.randrange(height // 2 + 1)
    draw.ellipse((sx - r, sy - r, sx + r, sy + r), fill=(255, rnd.randrange(180, 240), rnd.randrange(60, 140)))
    for layer in range(3):  # hills, darker towards the front
        base = height * (0.55 + 0.15 * layer)
        points = [(0, height)]
        for x in range(0, width + 1, max(1, width // 12)):
            points.append((x, base + rnd.uniform(-0.12, 0.12) * height))
        points.append((width, height))
        shade = 90 - 30 * layer
        draw.polygon(points, fill=(shade // 2, shade + rnd.randrange(40), shade // 3))
    picture = picture.filter(ImageFilter.GaussianBlur(radius=max(1, min(width, height) // 400)))
    grain = Image.effect_noise((width, height), 24).convert("RGB")
    picture = ImageChops.add(picture, grain, scale=1.0, offset=-64)
    if alpha:
        mask = Image.new("L", (width, height), 0)
        ImageDraw.Draw(mask).rounded_rectangle(
            (width // 10, height // 10, width * 9 // 10, height * 9 // 10), radius=min(width, height) // 5, fill=255
        )
        picture = picture.convert("RGBA")
        picture.putalpha(mask.filter(ImageFilter.GaussianBlur(radius=max(1, min(width, height) // 50))))
    return picture


def encode(picture: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    picture.save(out, fmt, **({"quality": 88} if fmt == "JPEG" else {"optimize": True}))
    return out.getvalue()
