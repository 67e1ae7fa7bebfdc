"""Fixtures for the reliability suite: backend gate, a clean broker, and real subprocess helpers."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests import harness

SETTINGS = "tests.reliability.settings"
PG_REDIS = "AUTO_RENDITIONS_DB=postgres AUTO_RENDITIONS_BROKER=redis"


def needs_pg_redis() -> pytest.MarkDecorator:
    on = os.environ.get("AUTO_RENDITIONS_DB") == "postgres" and os.environ.get("AUTO_RENDITIONS_BROKER") == "redis"
    return pytest.mark.skipif(not on, reason=f"needs PostgreSQL row locks and the Redis broker: run with {PG_REDIS}")


@pytest.fixture(autouse=True)
def _empty_broker():
    """Tasks a previous test enqueued without a worker must not leak into this test's counts."""
    from django_q.brokers import get_broker

    get_broker().purge_queue()
    yield
    get_broker().purge_queue()


def worker(workers: int = 1, **env: str) -> harness.Worker:
    """A real qcluster on the test database, with the reliability knobs (lease, faulty storage) it is given."""
    return harness.Worker(workers=workers, extra_env={"DJANGO_SETTINGS_MODULE": SETTINGS, **env})


def spawn(*args: str, **env: str) -> subprocess.Popen:
    """Run ``tests.reliability.driver`` in its own process on the test database and media folder."""
    full_env = harness.Worker().env()
    full_env.update(DJANGO_SETTINGS_MODULE=SETTINGS, **env)
    return subprocess.Popen([sys.executable, "-m", "tests.reliability.driver", *args], cwd=harness.ROOT, env=full_env)
