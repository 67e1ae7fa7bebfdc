"""The worker's shared decode/resize gives exactly Wagtail's files, for every spec django-cast asks for."""

import hashlib

import pytest
from wagtail.images.models import Image

from auto_renditions import generation, planning
from tests.factories import make_image, photo_bytes

pytestmark = pytest.mark.django_db


def twin(image: Image) -> Image:
    """A second image with the very same original bytes (so one can go through each path)."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    with image.open_file() as handle:
        data = handle.read()
    other = Image(title="twin", file=SimpleUploadedFile(image.file.name.split("/")[-1], data))
    other.save()
    return other


def digests(renditions: dict) -> dict[str, str]:
    out = {}
    for spec, rendition in renditions.items():
        with rendition.file.open("rb") as handle:
            out[spec] = hashlib.sha256(handle.read()).hexdigest()
    return out


@pytest.mark.parametrize(
    ("width", "height", "fmt", "mode"),
    [(1600, 1200, "JPEG", "RGB"), (1200, 1600, "JPEG", "RGB"), (900, 600, "PNG", "RGBA"), (1000, 750, "JPEG", "CMYK")],
)
def test_shared_path_is_byte_identical_to_wagtails(width, height, fmt, mode):
    if mode == "CMYK":
        import io

        from django.core.files.uploadedfile import SimpleUploadedFile
        from PIL import Image as PILImage

        out = io.BytesIO()
        PILImage.open(io.BytesIO(photo_bytes(width, height))).convert("CMYK").save(out, "JPEG")
        ours = Image(title="cmyk", file=SimpleUploadedFile("cmyk.jpg", out.getvalue()))
        ours.save()
    else:
        ours = make_image(width, height, fmt=fmt, mode=mode)
    theirs = twin(ours)
    specs = sorted({s for _, s in planning.required_renditions([("regular", ours), ("gallery", ours)]).keys})
    assert len(specs) >= 4

    shared = ours.get_renditions(*generation.filters_for(specs))
    wagtail = theirs.get_renditions(*specs)
    assert digests(shared) == digests(wagtail)


def test_shared_path_resizes_once_per_size_and_decodes_once():
    image = make_image(1600, 1200)
    specs = ["width-987", "width-987|format-avif", "width-321|srgb", "width-321|srgb|format-avif"]
    filters = generation.filters_for(specs)
    shared = filters[0].shared
    image.get_renditions(*filters)
    assert set(shared._resized) == {(987, 740), (321, 240)}  # two sizes, four files
    assert shared._format == "jpeg"


def test_other_originals_take_wagtails_path(settings):
    gif = make_image(800, 600, fmt="GIF")
    filters = generation.filters_for(["width-400", "width-400|format-avif"])
    renditions = gif.get_renditions(*filters)
    assert set(renditions) == {"width-400", "width-400|format-avif"}
    assert filters[0].shared._resized == {}
