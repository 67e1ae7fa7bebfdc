"""Claim versus delete on the same (image, spec) from two processes on PostgreSQL.

Invariant: a live post's claimed rendition exists, or the image is queued to make it. The second test removes
the lock and shows that the same race then breaks the invariant, so the first test can fail.
"""

import json
import os
import subprocess
import sys
import time

import pytest
from django.db import connection
from django.db.models.signals import m2m_changed
from wagtail.images.models import Rendition

from auto_renditions.models import Claim, QueuedImage
from tests.factories import make_image, make_post
from tests.harness import ROOT

pytestmark = [pytest.mark.postgres_only, pytest.mark.django_db(transaction=True, serialized_rollback=True)]

SPEC = "format-avif"  # the one spec a 300x200 regular image requires
ROUNDS = int(os.environ.get("RACE_ROUNDS", "12"))


@pytest.fixture(autouse=True)
def _postgres_only():
    if connection.vendor != "postgresql":
        pytest.skip("row-lock race: runs in the PostgreSQL leg (SQLite serialises every writer with BEGIN IMMEDIATE)")


def prepare_rounds(blog, rounds: int) -> list[dict]:
    """Per round: an image with its rendition, claimed by one post; a second post that shows it, unclaimed yet."""
    plan = []
    for k in range(rounds):
        image = make_image(300, 200)
        releaser = make_post(blog, f"releaser-{k}", images=[image])
        image.get_rendition(SPEC)
        claimer = make_post(blog, f"claimer-{k}")
        receivers = m2m_changed.receivers
        m2m_changed.receivers = []  # add the relation without telling the ledger: the race does that
        try:
            claimer.images.add(image)
        finally:
            m2m_changed.receivers = receivers
            m2m_changed.sender_receivers_cache.clear()
        QueuedImage.objects.all().delete()
        plan.append({"image": image.pk, "releaser": releaser.pk, "claimer": claimer.pk})
    return plan


def race(plan_rounds: list[dict], *, without_lock: bool) -> list[int]:
    plan = {
        "rounds": plan_rounds,
        "start": time.time() + 6,  # both processes are up by then
        "period": 0.8,
        "max_pause": 0.3,
        "seed": os.environ.get("RACE_SEED", "1"),
        "without_lock": without_lock,
    }
    env = dict(
        os.environ, AUTO_RENDITIONS_DB_NAME=connection.settings_dict["NAME"], DJANGO_SETTINGS_MODULE="tests.settings"
    )
    procs = [
        subprocess.Popen([sys.executable, "-m", "tests.race_driver", role, json.dumps(plan)], cwd=ROOT, env=env)
        for role in ("claim", "delete")
    ]
    for proc in procs:
        assert proc.wait(timeout=120) == 0
    violations = []
    for round_ in plan_rounds:
        claimed = Claim.objects.filter(post_id=round_["claimer"], image_id=round_["image"], filter_spec=SPEC).exists()
        made = Rendition.objects.filter(image_id=round_["image"], filter_spec=SPEC).exists()
        queued = QueuedImage.objects.filter(image_id=round_["image"]).exists()
        assert claimed, "the claimer must hold its claim in every round"
        if not (made or queued):
            violations.append(round_["image"])
    return violations


def test_claim_and_delete_never_leave_a_claim_without_rendition_or_task(blog):
    assert race(prepare_rounds(blog, ROUNDS), without_lock=False) == []


def test_the_race_is_caught_when_the_lock_is_removed(blog):
    violations = race(prepare_rounds(blog, ROUNDS), without_lock=True)
    assert violations, "without the per-image lock the race should have lost a rendition at least once"
