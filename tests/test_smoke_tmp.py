import pytest
from wagtail.images.models import Rendition

from auto_renditions.models import Claim, QueuedImage
from tests.factories import make_image, make_post


@pytest.mark.django_db
def test_publish_claims_and_settle(blog, settle, django_capture_on_commit_callbacks):
    a, b = make_image(600, 400), make_image(1600, 1200)
    with django_capture_on_commit_callbacks() as callbacks:
        post = make_post(blog, "p1", images=[a], galleries=[[a, b]])
    assert Rendition.objects.count() == 0
    print(sorted(Claim.objects.values_list("image_id", "filter_spec")))
    assert QueuedImage.objects.count() == 2
    assert callbacks
    settle()
    assert not QueuedImage.objects.exists()
    claimed = set(Claim.objects.values_list("image_id", "filter_spec"))
    assert claimed == set(Rendition.objects.values_list("image_id", "filter_spec"))
