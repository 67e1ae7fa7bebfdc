from __future__ import annotations

import pytest

from tests import harness


def pytest_report_header(config):
    from tests.reliability.seeds import RANDOM_SEED

    return [
        f"auto_renditions backends: {harness.backend_label()}",
        f"random walk: this run's new seed is {RANDOM_SEED} (RELIABILITY_SEED={RANDOM_SEED} runs it alone)",
    ]


@pytest.fixture(autouse=True)
def _media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture(autouse=True)
def _clear_caches():
    """Wagtail caches renditions by image id; ids are reused after a rolled-back test."""
    from django.core.cache import caches

    for cache in caches.all():
        cache.clear()


@pytest.fixture
def blog(db):
    from tests.factories import make_blog

    return make_blog()


@pytest.fixture
def settle():
    """Run queued generation and due deletions in this process (for logic tests; no worker needed)."""
    return harness.settle_in_process


#: The modules every leg of the version matrix runs (marker ``core``; noxfile.py, scripts/test): the ledger and its
#: listeners, the worker, the command, rendering, the admin smoke tests and what they stand on.
CORE_MODULES = frozenset(
    {
        "test_admin.py",
        "test_checks.py",
        "test_command.py",
        "test_compat.py",
        "test_generation.py",
        "test_ledger.py",
        "test_migrations.py",
        "test_planning.py",
        "test_queue.py",
        "test_rendering.py",
        "test_worker.py",
    }
)


def pytest_collection_modifyitems(items):
    """Every transactional test restores what the migrations created (root page, site, collection).

    A flush without serialized rollback re-runs post_migrate, whose content types then clash with the next
    serialized test's reload; so all transactional tests use the same mode.
    """
    for item in items:
        if item.path.name in CORE_MODULES:
            item.add_marker(pytest.mark.core)
        marker = item.get_closest_marker("django_db")
        if marker and marker.kwargs.get("transaction") and not marker.kwargs.get("serialized_rollback"):
            item.add_marker(pytest.mark.django_db(**{**marker.kwargs, "serialized_rollback": True}), append=False)
