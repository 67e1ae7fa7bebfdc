"""A real FileSystemStorage that fails on purpose: only the fault is fake.

The fault budget lives in files next to MEDIA_ROOT (``.faults/save``, ``.faults/delete``, ``.faults/slow_delete``)
so that the test process and worker processes share it. Each failing call consumes one unit.
"""

from __future__ import annotations

import fcntl
import time
from pathlib import Path

from django.conf import settings
from django.core.files.storage import FileSystemStorage


def fault_dir() -> Path:
    return Path(settings.MEDIA_ROOT).parent / ".faults"


def set_faults(**budget: float) -> None:
    """``set_faults(save=2, delete=1, slow_delete=5.0)``: arm the faults (0 disarms)."""
    folder = fault_dir()
    folder.mkdir(parents=True, exist_ok=True)
    for kind, value in budget.items():
        (folder / kind).write_text(str(value))


def remaining(kind: str) -> float:
    path = fault_dir() / kind
    return float(path.read_text() or 0) if path.exists() else 0.0


def _consume(kind: str) -> bool:
    path = fault_dir() / kind
    if not path.exists():
        return False
    with path.open("r+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        left = int(float(handle.read() or 0))
        if left <= 0:
            return False
        handle.seek(0)
        handle.truncate()
        handle.write(str(left - 1))
        return True


class FaultyStorage(FileSystemStorage):
    """Raises ``OSError`` for the first N saves of rendition files / N deletes; optionally deletes slowly."""

    def _save(self, name, content):
        if name.startswith("images/") and _consume("save"):
            raise OSError(28, "No space left on device (injected)")
        return super()._save(name, content)

    def delete(self, name):
        if _consume("delete"):
            raise OSError(5, "Input/output error (injected)")
        delay = remaining("slow_delete")
        if delay > 0:
            (fault_dir() / "deleting").write_text(name)
            time.sleep(delay)
        return super().delete(name)
