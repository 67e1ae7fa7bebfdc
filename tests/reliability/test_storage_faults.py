"""A storage that fails on save or delete: retries are bounded, failures visible, and nothing is lost after."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import override_settings
from wagtail.images.models import Rendition

from auto_renditions import status
from tests.factories import edit_post, make_image, make_post
from tests.reliability import invariants
from tests.reliability.faulty_storage import remaining, set_faults
from tests.reliability.rounds import recover

pytestmark = pytest.mark.reliability

FAULTY = {
    "default": {"BACKEND": "tests.reliability.faulty_storage.FaultyStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}


@pytest.fixture
def faulty_storage():
    with override_settings(STORAGES=FAULTY):
        yield
        set_faults(save=0, delete=0, slow_delete=0)


def _conf(**values) -> dict:
    return {**settings.AUTO_RENDITIONS, **values}


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_transient_save_faults_are_retried_until_everything_exists(blog, faulty_storage):
    images = [make_image(640, 480, seed=i) for i in range(3)]
    set_faults(save=4)
    with override_settings(AUTO_RENDITIONS=_conf(MAX_ATTEMPTS=6)):
        post = make_post(blog, "faulty-save", images=images[:1], galleries=[images])
        assert post.live
        recover(rounds=1, RETRY_BACKOFF_SECONDS=3600)  # no retry yet: the failures must be on record
        seen = list(status.failures())
        recover(rounds=6)
    assert remaining("save") == 0, "the injected faults were never hit: the test proved nothing"
    assert seen, "a failed save must be visible in status.failures() until it is retried"
    assert not status.failures().exists(), [str(f) for f in status.failures()]
    assert invariants.problems() == []


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_persistent_save_faults_stop_after_max_attempts_and_recover_on_retry(blog, faulty_storage):
    image = make_image(500, 400)
    set_faults(save=10_000)
    with override_settings(AUTO_RENDITIONS=_conf(MAX_ATTEMPTS=2)):
        post = make_post(blog, "broken-disk", images=[image])
        assert post.live
        recover(rounds=6)
        failures = list(status.failures())
        required = {key for key in invariants.live_requirement() if key[0] == image.pk}
        assert {(f.image_id, f.filter_spec) for f in failures} == required
        assert {f.attempts for f in failures} == {2}, "retries must stop at MAX_ATTEMPTS"
        assert set(status.exhausted_failures()) == set(failures)
        assert not Rendition.objects.exists()
        assert invariants.problems(exempt=required) == []  # no half-written files either

        set_faults(save=0)  # the disk is repaired; the operator's retry (admin "retry") clears the failures
        from auto_renditions.models import Failure

        Failure.objects.filter(image=image).delete()
        recover(rounds=2)
    assert not status.failures().exists()
    assert invariants.problems() == []


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_delete_faults_leave_no_orphan_file_once_storage_recovers(blog, faulty_storage):
    kept, dropped = make_image(500, 400, seed=1), make_image(520, 400, seed=2)
    post = make_post(blog, "faulty-delete", images=[kept, dropped])
    recover(rounds=1)
    doomed = set(Rendition.objects.filter(image=dropped).values_list("file", flat=True))
    assert doomed
    set_faults(delete=len(doomed))
    try:
        edit_post(post, images=[kept])
        recover(rounds=1)
    except OSError:
        pass  # the fault may surface in this process (on_commit file cleanup); the worker would log it
    recover(rounds=3)
    assert remaining("delete") == 0, "the injected faults were never hit: the test proved nothing"
    check = invariants.app_check_exit_code("--min-orphan-age", "0")
    assert invariants.problems() == [], f"(auto_renditions check --min-orphan-age 0 exits {check})"
