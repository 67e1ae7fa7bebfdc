"""Helpers shared by the tests: backend labels, in-process settling, the real worker process."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


class ErrorLog(logging.Handler):
    """Collects what the app logs at ERROR level: listeners log and swallow their failures, so a test that runs
    editor actions in another process has to look here to see them."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.getMessage()} {record.exc_info[1] if record.exc_info else ''}".strip())

    @classmethod
    def attached(cls, logger_name: str = "auto_renditions") -> ErrorLog:
        handler = cls()
        logging.getLogger(logger_name).addHandler(handler)
        return handler


def backend_label() -> str:
    return (
        f"db={os.environ.get('AUTO_RENDITIONS_DB', 'sqlite')} broker={os.environ.get('AUTO_RENDITIONS_BROKER', 'orm')}"
    )


def settle_in_process(rounds: int = 5) -> None:
    from auto_renditions import tasks
    from auto_renditions.models import QueuedImage

    for _ in range(rounds):
        for image_id in list(QueuedImage.objects.values_list("image_id", flat=True)):
            tasks.generate_image_renditions(image_id)
        tasks.delete_due_renditions()
        if not QueuedImage.objects.exists():
            return


def is_postgres() -> bool:
    return connection.vendor == "postgresql"


class Worker:
    """A real ``manage.py qcluster`` process on the test database and media folder."""

    def __init__(self, workers: int = 1, extra_env: dict | None = None, app_settings: dict | None = None):
        self.workers = workers
        self.extra_env = dict(extra_env or {})
        if app_settings:
            self.extra_env["AUTO_RENDITIONS_TEST_SETTINGS"] = json.dumps(app_settings)
        self.process: subprocess.Popen | None = None
        self.log = Path(settings.MEDIA_ROOT).parent / f"qcluster-{os.getpid()}-{time.monotonic_ns()}.log"

    def env(self) -> dict:
        env = dict(os.environ)
        env.update(
            DJANGO_SETTINGS_MODULE="tests.settings",
            AUTO_RENDITIONS_DB_NAME=str(connection.settings_dict["NAME"]),
            AUTO_RENDITIONS_MEDIA_ROOT=str(settings.MEDIA_ROOT),
            AUTO_RENDITIONS_Q_WORKERS=str(self.workers),
            PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
        )
        env.update(self.extra_env)
        return env

    def start(self) -> Worker:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "django", "qcluster"],
            cwd=ROOT,
            env=self.env(),
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def __enter__(self) -> Worker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def broker_queue_size() -> int:
    from django_q.brokers import get_broker

    return get_broker().queue_size()


def wait_until(predicate, timeout: float = 90, interval: float = 0.2, worker: Worker | None = None, what: str = ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if worker and worker.process and worker.process.poll() is not None:
            raise AssertionError(f"worker exited early:\n{worker.output()[-4000:]}")
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what or predicate}\n{worker.output()[-4000:] if worker else ''}"
    )


def drained() -> bool:
    """Nothing queued in the ledger nor in the broker, no deletion is due, and no deleted rendition's file is
    still waiting for removal (files go after the deleting transaction commits)."""
    from django.utils import timezone

    from auto_renditions.models import FileDeletion, PendingDeletion, QueuedImage

    return (
        not QueuedImage.objects.exists()
        and broker_queue_size() == 0
        and not PendingDeletion.objects.filter(due_at__lte=timezone.now()).exists()
        and not FileDeletion.objects.exists()
    )
