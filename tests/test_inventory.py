"""The site-wide diff behind ``manage.py auto_renditions plan`` and ``sync --prune``."""

from __future__ import annotations

import pytest
from wagtail.images.models import Rendition

from auto_renditions import inventory
from auto_renditions.models import Claim
from tests.factories import make_image, make_post


@pytest.mark.django_db
def test_prune_keeps_what_was_claimed_after_the_plan(blog):
    image = make_image(600, 400)
    post = make_post(blog, "p", images=[image])
    image.get_rendition("width-300")
    image.get_rendition("width-200")
    plan = inventory.make_plan()
    assert sorted(r.filter_spec for r in plan.obsolete) == ["width-200", "width-300"]
    claim = Claim.objects.get(post=post, image=image)  # width-300 claimed between plan and prune
    claim.filter_specs = sorted({*claim.filter_specs, "width-300"})
    claim.save()
    assert inventory.prune(plan.obsolete) == 1
    assert set(Rendition.objects.filter(image=image).values_list("filter_spec", flat=True)) == {"width-300"}


@pytest.mark.django_db
def test_images_of_no_post_are_never_obsolete(blog):
    cover = make_image(600, 400)
    cover.get_rendition("width-300")
    used = make_image(600, 400)
    make_post(blog, "p", images=[used])
    used.get_rendition("width-300")
    plan = inventory.make_plan()
    assert [(r.image_id, r.filter_spec) for r in plan.obsolete] == [(used.pk, "width-300")]
    scoped = inventory.make_plan(set(Claim.objects.values_list("post_id", flat=True)))
    assert [(r.image_id, r.filter_spec) for r in scoped.obsolete] == [(used.pk, "width-300")]


def test_batches_cover_every_id_once():
    ids = set(range(1, 451))
    chunks = list(inventory.batches(ids, 200))
    assert [len(c) for c in chunks] == [200, 200, 50]
    assert sorted(i for c in chunks for i in c) == sorted(ids)
