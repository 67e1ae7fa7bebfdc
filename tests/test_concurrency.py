"""Claim versus delete on the same (image, spec) from two processes, on the row-locking databases (PostgreSQL,
MySQL/MariaDB).

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

from auto_renditions.models import ClaimedRendition, QueuedImage
from tests.factories import make_image, make_post
from tests.harness import ROOT

pytestmark = [pytest.mark.postgres_only, pytest.mark.django_db(transaction=True, serialized_rollback=True)]

SPEC = "format-avif"  # the one spec a 300x200 regular image requires
ROUNDS = int(os.environ.get("RACE_ROUNDS", "12"))
RACE_SEED = os.environ.get("RACE_SEED", "1")
# Seconds between two rounds: both processes must start each round together, so it must exceed a round's time
# (a release and a deletion: two commits, each an fsync on MariaDB's default durability).
RACE_PERIOD = float(os.environ.get("RACE_PERIOD", "0.8"))


@pytest.fixture(autouse=True)
def _row_locks_only():
    if connection.vendor == "sqlite":
        pytest.skip("row-lock race: runs in the PostgreSQL and MariaDB legs (SQLite serialises every writer)")


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


def run_drivers(module: str, roles: tuple[str, ...], plan: dict, timeout: float = 180) -> list[str]:
    """Run one process per role on the test database; return their outputs."""
    env = dict(
        os.environ, AUTO_RENDITIONS_DB_NAME=connection.settings_dict["NAME"], DJANGO_SETTINGS_MODULE="tests.settings"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", module, role, json.dumps(plan)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for role in roles
    ]
    try:
        outputs = [proc.communicate(timeout=timeout)[0] for proc in procs]
    finally:
        for proc in procs:  # one that timed out must not hold the test database during its flush
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert [proc.returncode for proc in procs] == [0] * len(procs)
    return outputs


def race(plan_rounds: list[dict], *, without_lock: bool) -> list[int]:
    plan = {
        "rounds": plan_rounds,
        "start": time.time() + 6,  # both processes are up by then
        "period": RACE_PERIOD,
        "max_pause": 0.3,
        "seed": RACE_SEED,
        "without_lock": without_lock,
    }
    run_drivers("tests.race_driver", ("claim", "delete"), plan)
    violations = []
    for round_ in plan_rounds:
        claimed = ClaimedRendition.objects.filter(
            post_id=round_["claimer"], image_id=round_["image"], filter_spec=SPEC
        ).exists()
        made = Rendition.objects.filter(image_id=round_["image"], filter_spec=SPEC).exists()
        queued = QueuedImage.objects.filter(image_id=round_["image"]).exists()
        assert claimed, "the claimer must hold its claim in every round"
        if not (made or queued):
            violations.append(round_["image"])
    return violations


def test_claim_and_delete_never_leave_a_claim_without_rendition_or_task(blog):
    assert race(prepare_rounds(blog, ROUNDS), without_lock=False) == []


def test_the_race_is_caught_when_the_lock_is_removed(blog, request):
    if connection.vendor == "mysql":
        # Not shown yet: on MariaDB 10.11 two runs without the image lock (12 rounds at 0.8 s, 16 at 3 s) lost no
        # rendition; an XPASS here is the proof that the lock is what holds the invariant there too.
        request.applymarker(pytest.mark.xfail(reason="the lock-less race is not caught on MariaDB yet", strict=False))
    violations = race(prepare_rounds(blog, ROUNDS), without_lock=True)
    assert violations, "without the per-image lock the race should have lost a rendition at least once"


def publish_while_deleting(blog, *, without_fix: bool) -> list[dict]:
    """Per round an editor publishes a post without an image while another deletes that image; the errors."""
    rounds = []
    for k in range(ROUNDS):
        doomed, kept = make_image(300, 200), make_image(320, 200)
        post = make_post(blog, f"drops-{k}", images=[doomed, kept])
        make_post(blog, f"also-shows-{k}", images=[doomed])
        rounds.append({"post": post.pk, "image": doomed.pk, "keep": [kept.pk]})
    plan = {"rounds": rounds, "start": time.time() + 6, "period": 1.5, "max_pause": 0.6, "seed": RACE_SEED}
    plan["without_fix"] = without_fix
    outputs = run_drivers("tests.publish_delete_driver", ("publish", "delete"), plan)
    return [error for out in outputs for error in json.loads(out.strip().splitlines()[-1])["errors"]]


def test_publishing_a_post_while_an_image_it_drops_is_deleted(blog):
    """Both editors' actions succeed, and the ledger matches every live post.

    The publish rewrites the post's Wagtail references (its page save), then django-cast's media sync deletes the
    post's relation row of the image; the image deletion's cascade takes that row, and Wagtail then removes the
    references to the image. The reliability walk found that as an occasional deadlock aborting one of the two;
    ``signal_handlers.image_deleting`` removes the references before the cascade.
    """
    from auto_renditions import inventory
    from auto_renditions.management import invariants

    assert publish_while_deleting(blog, without_fix=False) == []
    drift = invariants._ledger_violations(inventory.live_requirements())
    assert [v.describe() for v in drift if v.kind in {"drift", "stale_claim"}] == []


def test_the_publish_delete_deadlock_is_caught_without_the_fix(blog):
    errors = publish_while_deleting(blog, without_fix=True)
    print(f"{len(errors)} of {ROUNDS} rounds failed without the fix")
    # PostgreSQL: "deadlock detected"; MySQL/MariaDB: "Deadlock found when trying to get lock".
    assert any("deadlock" in str(error).lower() for error in errors), errors


def test_a_publish_racing_a_replacement_of_its_image_plans_the_new_size(blog, tmp_path):
    """An editor publishes a post while another replaces the file of one of its images with a smaller one: the
    post's claims must follow the new size. The publish used to read the image's size before taking the image's
    lock, and the replacement looked for the image's posts before taking it: a publish in flight kept the old
    size's claims (the app's own ``check`` reported drift, and nothing repaired it)."""
    from cast.models import Post
    from cast.renditions import RenditionFilters

    def required(post) -> set:
        return {
            (image.pk, spec)
            for image_type, image in post.get_all_images()
            for spec in RenditionFilters.from_wagtail_image_with_type(image, image_type).filter_strings
        }

    rounds = []
    for k in range(max(2, ROUNDS // 3)):
        image = make_image(1600, 1200)
        post = make_post(blog, f"replaced-{k}", images=[image], publish=False)
        rounds.append({"post": post.pk, "image": image.pk, "where": ("lock", "apply")[k % 2]})
    plan = {"rounds": rounds, "signals": str(tmp_path), "hold": 0.8, "new_size": [1200, 900]}
    run_drivers("tests.replace_race_driver", ("publish", "replace"), plan)
    drifted = []
    for round_ in rounds:
        post = Post.objects.get(pk=round_["post"])
        claimed = set(ClaimedRendition.objects.filter(post_id=post.pk).values_list("image_id", "filter_spec"))
        if claimed != required(post):
            drifted.append(round_)
    print(f"{len(drifted)} of {len(rounds)} rounds kept the old size's claims: {drifted}")
    assert drifted == []


EDITORS = int(os.environ.get("LOCK_EDITORS", "3"))
EDITOR_OPS = int(os.environ.get("LOCK_OPS", "15"))


def test_overlapping_publishes_and_replacements_rarely_deadlock(blog):
    """A benchmark of the image locks: EDITORS processes publish their posts with random, overlapping sets of
    shared images and replace those images' files. A deadlock PostgreSQL resolves by aborting one side is
    either an editor's error or a listener's sync handed to a worker; both are counted and printed."""
    from tests.factories import make_post

    images = [make_image(1600, 1200).pk for _ in range(10)]
    posts = {str(k): [make_post(blog, f"e{k}-{n}").pk for n in range(3)] for k in range(EDITORS)}
    plan = {"images": images, "posts": posts, "ops": EDITOR_OPS, "replace_share": 0.2, "seed": RACE_SEED}
    plan["start"] = time.time() + 8
    outputs = run_drivers_indexed("tests.lock_driver", EDITORS, plan)
    results = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
    raised = [e for r in results for e in r["errors"] if "deadlock detected" in e]
    logged = [m for r in results for m in r["logged"] if "deadlock detected" in m]
    print(f"{EDITORS} editors x {EDITOR_OPS} ops: {len(raised)} deadlocks raised, {len(logged)} logged")
    for r in results:
        for stack in r["out_of_order"]:
            print("image locks out of order:\n", stack)
    assert [e for r in results for e in r["errors"] if "deadlock" not in e] == []
    assert raised == []


def run_drivers_indexed(module: str, count: int, plan: dict) -> list[str]:
    return run_drivers(module, tuple(str(k) for k in range(count)), plan, timeout=60 + 20 * EDITOR_OPS)
