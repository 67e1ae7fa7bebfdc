"""Broken originals never block a publish; their failures are bounded and visible; every other image is done."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings
from PIL import Image as PILImage
from wagtail.images.models import Image

from auto_renditions import status
from auto_renditions.conf import get_settings
from tests.factories import make_image, make_post
from tests.reliability import invariants
from tests.reliability.rounds import recover

pytestmark = pytest.mark.reliability


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int = 40_000, height: int = 40_000) -> bytes:
    """A PNG header claiming 1.6 gigapixels (over Pillow's MAX_IMAGE_PIXELS × 2): a decompression bomb."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _encoded(picture: PILImage.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    picture.save(out, fmt, **options)
    return out.getvalue()


def _upload(name: str, data: bytes) -> Image:
    image = Image(title=name, file=SimpleUploadedFile(name, data))
    if name.endswith(".svg"):
        image._set_image_file_metadata()  # what Wagtail's upload form does: Django cannot size an SVG
    image.save()
    return image


def _corrupt(image: Image, data: bytes | None) -> Image:
    """Damage the stored original behind the app's back (``None``: the file disappears)."""
    if data is None:
        default_storage.delete(image.file.name)
    else:
        Path(image.file.path).write_bytes(data)
    return image


def _bomb() -> Image:
    """Wagtail refuses to save a bomb, so it arrives the way old or imported files do: behind its back."""
    image = _corrupt(make_image(400, 300, fmt="PNG"), bomb_png())
    Image.objects.filter(pk=image.pk).update(width=40_000, height=40_000)
    image.width = image.height = 40_000  # not refresh_from_db(): that would re-open the file
    return image


def bad_and_good_images() -> tuple[dict[str, Image], dict[str, Image]]:
    jpeg = make_image(500, 400)
    whole = Path(jpeg.file.path).read_bytes()
    frames = [PILImage.new("P", (320, 240), color) for color in (10, 80, 160)]
    bad = {
        "missing": _corrupt(make_image(500, 400), None),
        "truncated": _corrupt(make_image(500, 400), whole[: len(whole) // 3]),
        "zero-bytes": _corrupt(make_image(500, 400), b""),
        "bomb": _bomb(),
        "svg": _upload(
            "drawing.svg",
            b'<svg xmlns="http://www.w3.org/2000/svg" width="300" height="200"><rect width="300" height="200"/></svg>',
        ),
        # django-cast 0.2.67 plans no renditions for GIFs ("Image format gif not supported"): a visible failure.
        "animated-gif": _upload("anim.gif", _encoded(frames[0], "GIF", save_all=True, append_images=frames[1:])),
    }
    good = {
        "jpeg": jpeg,
        "cmyk": _upload("cmyk.jpg", _encoded(PILImage.new("CMYK", (480, 320), (10, 200, 30, 5)), "JPEG")),
        "alpha": make_image(400, 300, fmt="PNG", mode="RGBA"),
    }
    return bad, good


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_bad_originals_never_block_publishing(blog):
    bad, good = bad_and_good_images()
    everything = [*bad.values(), *good.values()]
    with override_settings(AUTO_RENDITIONS={"DELETE_GRACE_SECONDS": 0, "MAX_ATTEMPTS": 3}):
        post = make_post(blog, "bad-originals", images=everything[:3], galleries=[everything[3:]])
        assert post.live, "publishing must succeed whatever the originals look like"
        recover(rounds=6)  # twice as many rounds as MAX_ATTEMPTS: retries must stop on their own

    max_attempts = get_settings().MAX_ATTEMPTS
    failures = list(status.failures())
    failed_images = {f.image_id for f in failures}
    print(
        {name: [f"{f.filter_spec}: {f.error}" for f in failures if f.image_id == i.pk][:1] for name, i in bad.items()}
    )
    for name, image in bad.items():
        assert image.pk in failed_images, f"{name}: its failure is not visible in status.failures()"
    assert not failed_images & {i.pk for i in good.values()}, [str(f) for f in failures]
    assert all(f.attempts <= max_attempts for f in failures), [(str(f), f.attempts) for f in failures]
    assert all(f.attempts == 3 for f in status.exhausted_failures())
    assert set(status.exhausted_failures()) == set(failures), "retries must end in exhausted failures, not loop"
    exempt = {key for key in invariants.live_requirement() if key[0] in failed_images}
    assert invariants.problems(exempt=exempt) == []
    for name, image in good.items():
        required = {spec for i, spec in invariants.live_requirement() if i == image.pk}
        made = set(image.renditions.values_list("filter_spec", flat=True))
        assert required and required <= made, f"{name}: {sorted(required - made)} not made"
