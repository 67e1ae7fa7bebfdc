"""The example project works end to end: migrate, seed, a real ``qcluster`` makes every claimed rendition.

Runs the example site's own ``manage.py`` in subprocesses on a temporary SQLite file and media folder (the
site's default profile: SQLite + the django-q2 ORM broker), so it belongs to the sqlite+orm leg only.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "example_project"

pytestmark = [
    pytest.mark.worker,
    pytest.mark.skipif(
        (os.environ.get("AUTO_RENDITIONS_DB", "sqlite"), os.environ.get("AUTO_RENDITIONS_BROKER", "orm"))
        != ("sqlite", "orm"),
        reason="the example project's default profile is SQLite + ORM broker; runs in the sqlite-orm leg only",
    ),
]


@pytest.fixture
def site_env(tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update(
        EXAMPLE_PROFILE="sqlite",
        EXAMPLE_DATA_DIR=str(tmp_path),
        EXAMPLE_Q_NAME=f"example_smoke_{uuid.uuid4().hex[:8]}",
        EXAMPLE_Q_WORKERS="2",
        PYTHONWARNINGS="ignore",
    )
    return env


def manage(env: dict, *args: str, timeout: float = 180) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=EXAMPLE, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def status(env: dict) -> dict:
    return json.loads(manage(env, "demo_status", "--json").strip().splitlines()[-1])


def outstanding(database: Path) -> int:
    """Claimed renditions not made yet plus queued images, read straight from SQLite (cheap enough to poll)."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30) as conn:
        missing = conn.execute(
            "SELECT COUNT(*) FROM auto_renditions_claimedrendition c WHERE NOT EXISTS (SELECT 1"
            " FROM wagtailimages_rendition r WHERE r.image_id = c.image_id AND r.filter_spec = c.filter_spec)"
        ).fetchone()[0]
        queued = conn.execute("SELECT COUNT(*) FROM auto_renditions_queuedimage").fetchone()[0]
    return missing + queued


def test_seed_then_worker_makes_every_claimed_rendition(site_env, tmp_path):
    manage(site_env, "migrate", "--noinput")
    manage(site_env, "check", "--fail-level", "WARNING")
    output = manage(site_env, "seed_demo", "--scale", "0.1")
    assert "Admin login: admin / admin" in output

    before = status(site_env)
    assert before["posts_with_claims"] == 3  # the draft claims nothing
    assert before["claimed_keys"] > 0
    assert before["claims"] > before["claimed_keys"]  # shared images: some renditions have several owners
    assert before["renditions"] == 0  # publishing made nothing in the request
    assert before["queued_images"] > 0

    log = (tmp_path / "qcluster.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"],
        cwd=EXAMPLE,
        env=site_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while outstanding(tmp_path / "db.sqlite3"):
            assert worker.poll() is None, (tmp_path / "qcluster.log").read_text(errors="replace")[-4000:]
            assert time.monotonic() < deadline, f"renditions not made in time: {status(site_env)}"
            time.sleep(0.5)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        log.close()

    now = status(site_env)
    assert now["claimed_keys_without_rendition"] == 0
    assert now["queued_images"] == 0
    assert now["claimed_keys"] == before["claimed_keys"]
    assert now["renditions"] >= now["claimed_keys"]
    assert now["rendition_files_missing"] == 0
    assert now["failures"] == 0
    assert any((tmp_path / "media" / "images").iterdir())

    again = manage(site_env, "seed_demo", "--scale", "0.1")  # idempotent: nothing new, nothing queued
    assert "0 new post(s)" in again
    assert status(site_env) == now
