"""The planner is pure: it takes images (no DB needed) and returns django-cast's own required filter specs.

It never touches storage either: an image row without a usable size (and without its original) is reported as
unplannable while the rest of its post is planned.
"""

import pytest
from cast.renditions import RenditionFilters
from wagtail.images.models import Image

from auto_renditions import ledger, planning
from auto_renditions.models import Claim, Failure, QueuedImage
from tests.factories import make_image, make_post


def image(pk: int, width: int, height: int, name: str = "photo.jpg") -> Image:
    return Image(pk=pk, width=width, height=height, file=f"original_images/{name}", collection_id=1)


def test_requirement_is_exactly_django_casts_filter_strings():
    photo = image(1, 4000, 3000)
    requirement = planning.required_renditions([("regular", photo), ("gallery", photo)])
    expected = set(RenditionFilters.from_wagtail_image_with_type(photo, "regular").filter_strings)
    expected |= set(RenditionFilters.from_wagtail_image_with_type(photo, "gallery").filter_strings)
    assert requirement.keys == {(1, spec) for spec in expected}
    # The measured 4000x3000 case from the notebook: 1x..3x of 987 px, JPEG + AVIF.
    assert {"width-987", "width-1974", "width-2961", "width-2961|format-avif"} <= {s for _, s in requirement.keys}


def test_many_images_are_planned_as_django_cast_plans_each_one():
    """Images of one shape are planned once; the result is still django-cast's answer for every image."""
    shapes = [(4000, 3000, "a.jpg"), (4000, 3000, "b.JPG"), (3000, 4000, "c.jpg"), (4000, 3000, "d.png")]
    shapes += [(800, 600, "e.jpg"), (4000, 3000, "f.tiff"), (120, 90, "g.jpg")]
    images = [("gallery" if pk % 2 else "regular", image(pk, w, h, name)) for pk, (w, h, name) in enumerate(shapes)]
    images += [("gallery", images[0][1]), ("regular", image(99, 4000, 3000, "h.jpg"))]
    requirement = planning.required_renditions(images)

    expected, unplannable = set(), set()
    for image_type, photo in images:
        try:
            specs = RenditionFilters.from_wagtail_image_with_type(photo, image_type).filter_strings
        except (ValueError, ZeroDivisionError):
            unplannable.add(photo.pk)
            continue
        expected |= {(photo.pk, spec) for spec in specs}
    assert requirement.keys == expected
    assert {u.image_id for u in requirement.unplannable} == unplannable == {5}


def test_delta_add_remove_replace():
    a, b, c = image(1, 4000, 3000), image(2, 3000, 4000), image(3, 1600, 1200)
    before = planning.required_renditions([("regular", a), ("gallery", b)]).keys
    after = planning.required_renditions([("regular", a), ("gallery", c)]).keys  # b replaced by c
    delta = planning.diff(before, after)
    assert {i for i, _ in delta.add} == {3}
    assert {i for i, _ in delta.remove} == {2}
    assert not planning.diff(after, after)
    assert planning.diff(set(), after).add == after
    assert planning.diff(after, set()).remove == after


def test_same_image_regular_and_gallery_is_the_union_not_a_duplicate():
    a = image(1, 4000, 3000)
    regular = planning.required_renditions([("regular", a)]).keys
    gallery = planning.required_renditions([("gallery", a)]).keys
    both = planning.required_renditions([("regular", a), ("gallery", a), ("gallery", a)]).keys
    assert both == regular | gallery


@pytest.mark.parametrize(
    ("overrides", "expect_present", "expect_absent"),
    [
        ({"CAST_IMAGE_FORMATS": ["jpeg"]}, {"width-987"}, {"width-987|format-avif"}),
        ({"CAST_IMAGE_FORMATS": ["jpeg", "webp"]}, {"width-987|format-webp"}, {"width-987|format-avif"}),
        ({"CAST_REGULAR_IMAGE_SLOT_DIMENSIONS": [(500, 500)]}, {"width-500"}, {"width-987"}),
        ({"CAST_GALLERY_THUMBNAIL_RENDITIONS_SRGB": False}, {"width-107"}, {"width-107|srgb"}),
        ({"CAST_GALLERY_IMAGE_SLOT_DIMENSIONS": [(1110, 740), (240, 160)]}, {"width-213|srgb"}, {"width-107|srgb"}),
    ],
)
def test_cast_settings_flow_through(settings, overrides, expect_present, expect_absent):
    for name, value in overrides.items():
        setattr(settings, name, value)
    a = image(1, 4000, 3000)
    image_types = ["regular"] if "REGULAR" in "".join(overrides) else ["regular", "gallery"]
    specs = {s for _, s in planning.required_renditions([(t, a) for t in image_types]).keys}
    assert expect_present <= specs
    assert not (expect_absent & specs)


def test_unsupported_format_is_reported_not_raised():
    good, gif = image(1, 4000, 3000), image(2, 400, 300, name="anim.gif")
    requirement = planning.required_renditions([("regular", good), ("gallery", gif)])
    assert requirement.image_ids == {1}
    assert [u.image_id for u in requirement.unplannable] == [2]
    assert "gif" in requirement.unplannable[0].error


def test_small_image_gets_format_conversion_only():
    small = image(1, 300, 200)
    specs = {s for _, s in planning.required_renditions([("regular", small)]).keys}
    assert specs == {"format-avif"}


def test_by_image_groups_specs():
    keys = {(1, "a"), (1, "b"), (2, "a")}
    assert planning.by_image(keys) == {1: {"a", "b"}, 2: {"a"}}


@pytest.mark.parametrize(("width", "height"), [(0, 300), (400, 0), (400, None), (None, None), (-4, 3)])
def test_an_image_without_a_usable_size_is_unplannable_and_the_rest_is_planned(width, height):
    good = planning.ImageRow(1, 4000, 3000, "original_images/good.jpg")
    bad = planning.ImageRow(2, width, height, "original_images/gone.jpg")
    requirement = planning.required_renditions([("regular", good), ("gallery", bad), ("gallery", good)])
    expected = planning.required_renditions([("regular", good), ("gallery", good)])
    assert requirement.specs == expected.specs and requirement.image_ids == {1}
    assert [u.image_id for u in requirement.unplannable] == [2]
    assert f"width={width!r}, height={height!r}" in requirement.unplannable[0].error


def _without_size_or_original(image) -> None:
    """An image row as a failed upload or a restored backup leaves it: width 0 and the original gone."""
    image.file.storage.delete(image.file.name)
    Image.objects.filter(pk=image.pk).update(width=0)


@pytest.mark.django_db
def test_publish_plans_the_good_images_of_a_post_with_an_image_row_without_size_or_original(blog):
    good, shared, bad = make_image(1600, 1200), make_image(600, 400), make_image(800, 600)
    _without_size_or_original(bad)
    post = make_post(blog, "mixed", images=[good, bad], galleries=[[shared, bad]])

    claimed = {image_id: set(specs) for image_id, specs in Claim.objects.values_list("image_id", "filter_specs")}
    good_specs = set(RenditionFilters.from_wagtail_image_with_type(good, "regular").filter_strings)
    shared_specs = set(RenditionFilters.from_wagtail_image_with_type(shared, "gallery").filter_strings)
    assert claimed == {good.pk: good_specs, shared.pk: shared_specs}  # planned in the publish itself
    assert set(QueuedImage.objects.values_list("image_id", flat=True)) == {good.pk, shared.pk}
    failure = Failure.objects.get(image=bad)
    assert failure.filter_spec == ledger.WHOLE_IMAGE and "width=0" in failure.error
    # The path a deferred sync takes plans the same, again without opening any original.
    assert not ledger.sync_posts([post.pk])
