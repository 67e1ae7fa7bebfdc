"""The app's migrations apply, carry the ledger over and reverse cleanly, on SQLite and PostgreSQL."""

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from auto_renditions.models import Claim, ClaimedRendition
from tests.factories import make_image, make_post

PER_RENDITION = [("auto_renditions", "0002_claim_indexes")]
PER_IMAGE = [("auto_renditions", "0003_claim_per_image")]


def migrate(target):
    executor = MigrationExecutor(connection)
    executor.migrate(target)
    return executor.loader.project_state(target).apps


@pytest.mark.django_db(transaction=True)
def test_claims_are_grouped_per_post_and_image_and_expanded_back(blog):
    a, b = make_image(), make_image()
    p1, p2 = make_post(blog, "p1", publish=False), make_post(blog, "p2", publish=False)
    rows = [(p1, a, "width-2"), (p1, a, "width-1"), (p1, b, "width-3"), (p2, a, "width-1")]
    try:
        old = migrate(PER_RENDITION).get_model("auto_renditions", "Claim")
        old.objects.bulk_create([old(post_id=p.pk, image_id=i.pk, filter_spec=s) for p, i, s in rows])

        migrate(PER_IMAGE)
        grouped = Claim.objects.values_list("post_id", "image_id", "filter_specs")
        assert sorted(grouped) == [
            (p1.pk, a.pk, ["width-1", "width-2"]),
            (p1.pk, b.pk, ["width-3"]),
            (p2.pk, a.pk, ["width-1"]),
        ]
        per_rendition = ClaimedRendition.objects.values_list("post_id", "image_id", "filter_spec")
        assert sorted(per_rendition) == sorted((p.pk, i.pk, s) for p, i, s in rows)

        old = migrate(PER_RENDITION).get_model("auto_renditions", "Claim")
        expanded = old.objects.values_list("post_id", "image_id", "filter_spec")
        assert sorted(expanded) == sorted((p.pk, i.pk, s) for p, i, s in rows)
    finally:
        call_command("migrate", "auto_renditions", verbosity=0)
    assert ClaimedRendition.objects.count() == len(rows)
