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


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
@pytest.mark.parametrize("serial", [False, True])
def test_exif_oriented_originals_are_byte_identical_to_wagtails(orientation, serial):
    import io

    from django.core.files.uploadedfile import SimpleUploadedFile
    from PIL import Image as PILImage

    picture = PILImage.open(io.BytesIO(photo_bytes(1200, 800)))
    exif = picture.getexif()
    exif[0x0112] = orientation  # Orientation
    out = io.BytesIO()
    picture.save(out, "JPEG", exif=exif.tobytes())
    ours = Image(title="oriented", file=SimpleUploadedFile("oriented.jpg", out.getvalue()))
    ours.save()
    theirs = twin(ours)
    specs = sorted({s for _, s in planning.required_renditions([("regular", ours), ("gallery", ours)]).keys})

    generation.render(ours, specs, serial=serial)
    wagtail = theirs.get_renditions(*specs)
    shared = {r.filter_spec: r for r in ours.renditions.all()}
    assert digests(shared) == digests(wagtail)
    width, height = next(iter(wagtail.values())).width, next(iter(wagtail.values())).height
    assert (width > height) == (orientation in (1, 3)), "rotated originals are rendered upright"


def test_large_originals_render_one_spec_at_a_time(settings, monkeypatch):
    import threading

    settings.AUTO_RENDITIONS = {"SERIAL_RENDER_PIXELS": 1600 * 1200 - 1}
    large, small = make_image(1600, 1200), make_image(1200, 900)
    assert generation.renders_serially(large) and not generation.renders_serially(small)

    threads: set[int] = set()
    real_run = generation.SharedSourceFilter.run

    def run(self, *args, **kwargs):
        threads.add(threading.get_ident())
        return real_run(self, *args, **kwargs)

    specs = ["width-987", "width-987|format-avif", "width-321|srgb", "width-321|srgb|format-avif"]
    monkeypatch.setattr(generation.SharedSourceFilter, "run", run)
    generation.render(large, specs)
    assert threads == {threading.get_ident()}, "the large original rendered in the calling thread"
    threads.clear()
    generation.render(small, specs)
    assert threading.get_ident() not in threads, "the small one in Wagtail's pool"
    assert {r.filter_spec for r in large.renditions.all()} == set(specs)
    assert {r.filter_spec for r in small.renditions.all()} == set(specs)


@pytest.mark.parametrize("serial", [False, True])
def test_shared_path_resizes_once_per_size_and_decodes_once(monkeypatch, serial):
    from willow.plugins.pillow import PillowImage

    image = make_image(1600, 1200)
    specs = ["width-987", "width-987|format-avif", "width-321|srgb", "width-321|srgb|format-avif", "fill-200x200"]
    resizes, decodes = [], []
    real_resize, real_open = PillowImage.resize, PillowImage.open
    monkeypatch.setattr(PillowImage, "resize", lambda self, size: resizes.append(size) or real_resize(self, size))
    monkeypatch.setattr(PillowImage, "open", lambda f: decodes.append(f) or real_open.__func__(PillowImage, f))
    sources = []
    real_filters_for = generation.filters_for
    monkeypatch.setattr(generation, "filters_for", lambda s: sources.append(f := real_filters_for(s)) or f)
    generation.render(image, specs, serial=serial)
    assert sorted(map(tuple, resizes)) == [(200, 200), (321, 240), (987, 740)]  # one per size; the crop's own
    assert len(decodes) == 1, "decoded once, never again after it was released"
    assert {r.filter_spec for r in image.renditions.all()} == set(specs)
    shared = sources[0][0].shared
    assert shared._resized == {} and shared._original is None, "every picture released after its last use"


def test_other_originals_take_wagtails_path(settings):
    gif = make_image(800, 600, fmt="GIF")
    filters = generation.filters_for(["width-400", "width-400|format-avif"])
    renditions = gif.get_renditions(*filters)
    assert set(renditions) == {"width-400", "width-400|format-avif"}
    assert filters[0].shared._resized == {}


@pytest.mark.parametrize("serial", [False, True])
def test_cropping_specs_share_the_decode_and_match_wagtails(serial):
    ours = make_image(1600, 1200)
    theirs = twin(ours)
    specs = ["fill-300x300", "fill-300x300|format-avif", "width-400", "max-500x200", "width-400|format-avif"]
    generation.render(ours, specs, serial=serial)
    wagtail = theirs.get_renditions(*specs)
    assert digests({r.filter_spec: r for r in ours.renditions.all()}) == digests(wagtail)
