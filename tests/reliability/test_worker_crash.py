"""SIGKILL the whole worker host mid-generation and mid-deletion; a new worker plus the sweep recover."""

from __future__ import annotations

import os
import signal
import time
from datetime import timedelta

import pytest
from django.db import close_old_connections
from django.utils import timezone
from wagtail.images.models import Rendition

from auto_renditions import tasks
from auto_renditions.models import QueuedImage
from tests.factories import edit_post, make_image, make_post
from tests.harness import Worker, drained, wait_until
from tests.reliability import invariants
from tests.reliability.conftest import needs_pg_redis, worker
from tests.reliability.faulty_storage import fault_dir, set_faults

pytestmark = [pytest.mark.reliability, pytest.mark.worker, pytest.mark.postgres_only, needs_pg_redis()]
FAULTY = "tests.reliability.faulty_storage.FaultyStorage"


def crash(cluster: Worker) -> None:
    """Power cut: every process of the qcluster (sentinel, pusher, workers, monitor) dies at once."""
    os.killpg(cluster.process.pid, signal.SIGKILL)
    cluster.process.wait()


def lease_runs_out() -> None:
    """Jump the clock past the dead worker's lease (TASK_TIMEOUT + 60 s) instead of sleeping through it."""
    QueuedImage.objects.filter(leased_until__isnull=False).update(leased_until=timezone.now() - timedelta(seconds=1))


def recover_with_new_worker() -> None:
    with worker(workers=2) as fresh:
        tasks.sweep()  # the every-minute schedule runs at least once after a crash

        def settled() -> bool:
            close_old_connections()
            if drained():
                return True
            tasks.sweep()  # what the every-minute schedule does
            return False

        wait_until(settled, timeout=240, interval=2, worker=fresh, what="recovery after the crash")


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_sigkill_mid_generation_is_recovered(blog):
    big, small = make_image(6000, 4000, seed=7), make_image(600, 400, seed=8)
    post = make_post(blog, "crash-generate", images=[big], galleries=[[small, big]])
    with worker(workers=1) as cluster:
        wait_until(
            lambda: QueuedImage.objects.filter(image=big, leased_until__isnull=False).exists(),
            timeout=120,
            worker=cluster,
            what="the worker to start on the large image",
        )
        time.sleep(1.5)  # well inside the seconds-long generation of 6000×4000 → AVIF
        crash(cluster)
    required = {key for key in invariants.live_requirement() if key[0] == big.pk}
    made = set(Rendition.objects.filter(image=big).values_list("image_id", "filter_spec"))
    print(f"crash mid-generation: {len(made)}/{len(required)} renditions of the large image existed")
    assert made != required, "the crash came too late: generation had already finished"

    lease_runs_out()
    recover_with_new_worker()
    assert post.pk and invariants.problems() == []
    assert invariants.app_check_exit_code() in (None, 0)


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_sigkill_mid_deletion_leaves_no_orphan_files(blog):
    kept, dropped = make_image(600, 400, seed=1), make_image(700, 500, seed=2)
    post = make_post(blog, "crash-delete", images=[kept, dropped])
    recover_with_new_worker()
    assert Rendition.objects.filter(image=dropped).exists()

    set_faults(slow_delete=30)  # each file deletion in the worker takes 30 s: a wide window to crash in
    with worker(workers=1, RELIABILITY_STORAGE=FAULTY) as cluster:
        edit_post(post, images=[kept])
        wait_until(lambda: (fault_dir() / "deleting").exists(), timeout=120, worker=cluster, what="a deletion")
        crash(cluster)
    set_faults(slow_delete=0)
    print("rows left of the dropped image:", Rendition.objects.filter(image=dropped).count())

    recover_with_new_worker()
    check = invariants.app_check_exit_code("--min-orphan-age", "0")
    assert invariants.problems() == [], f"(auto_renditions check --min-orphan-age 0 exits {check})"
