"""A throwaway django-cast site for the benchmark scripts, plus timing and reporting helpers.

Reuses ``tests/settings.py`` through its environment variables: a fresh temp folder (RUN_DIR, MEDIA_ROOT), a
SQLite file database (``transaction_mode`` IMMEDIATE) or a fresh PostgreSQL database, and a unique django-q2
cluster name, so a benchmark never touches a development database nor a parallel test run.
Call :func:`setup` before importing anything from Django models.
"""

from __future__ import annotations

import argparse
import atexit
import functools
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def add_common_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite", help="database backend")
    parser.add_argument("--broker", choices=["orm", "redis"], default="orm", help="django-q2 broker")
    parser.add_argument("--json", metavar="FILE", help="also write the JSON result to FILE")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (and PostgreSQL database)")
    return parser


def setup(args: argparse.Namespace) -> Path:
    """Point ``tests.settings`` at a new temp site, set Django up and migrate. Returns the run folder."""
    run_dir = Path(tempfile.mkdtemp(prefix="auto-renditions-bench-"))
    tag = uuid.uuid4().hex[:8]
    os.environ.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        AUTO_RENDITIONS_RUN_DIR=str(run_dir),
        AUTO_RENDITIONS_DB=args.db,
        AUTO_RENDITIONS_BROKER=args.broker,
        AUTO_RENDITIONS_Q_NAME=f"ar_bench_{tag}",
        PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    if args.broker == "redis":
        os.environ.setdefault("AUTO_RENDITIONS_REDIS_URL", "redis://127.0.0.1:6379/14")
    if args.db == "postgres":
        name = f"ar_bench_{tag}"
        os.environ["AUTO_RENDITIONS_DB_NAME"] = name
        _create_pg_database(name)
        if not args.keep:
            atexit.register(_drop_pg_database, name)
    else:
        os.environ["AUTO_RENDITIONS_DB_NAME"] = str(run_dir / "bench.sqlite3")
    if not args.keep:
        atexit.register(shutil.rmtree, run_dir, True)
    sys.path.insert(0, str(ROOT))

    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
    return run_dir


def _pg_admin_connection():
    import psycopg

    return psycopg.connect(
        host=os.environ.get("AUTO_RENDITIONS_PG_HOST", "127.0.0.1"),
        port=os.environ.get("AUTO_RENDITIONS_PG_PORT", "5432"),
        user=os.environ.get("AUTO_RENDITIONS_PG_USER", "postgres"),
        password=os.environ.get("AUTO_RENDITIONS_PG_PASSWORD", ""),
        dbname="postgres",
        autocommit=True,
    )


def _create_pg_database(name: str) -> None:
    with _pg_admin_connection() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')


def _drop_pg_database(name: str) -> None:
    from django.db import connections

    connections.close_all()
    with _pg_admin_connection() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import django
    import PIL
    import wagtail

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from importlib.metadata import version

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "django": django.get_version(),
        "wagtail": wagtail.__version__,
        "django_cast": version("django-cast"),
        "django_q2": version("django-q2"),
        "pillow": PIL.__version__,
        "loadavg_at_start": os.getloadavg(),
    }


def parse_size(text: str) -> tuple[int, int]:
    width, height = text.lower().split("x")
    return int(width), int(height)


@functools.cache
def _photo(width: int, height: int, seed: int) -> bytes:
    from tests.factories import photo_bytes

    return photo_bytes(width, height, seed=seed)


def images(count: int, size: tuple[int, int], prefix: str = "photo") -> list:
    """``count`` new Wagtail images (new rows and files) with photo-like content; bytes are cached per seed."""
    from django.core.files.uploadedfile import SimpleUploadedFile
    from wagtail.images.models import Image

    made = []
    for n in range(count):
        name = f"{prefix}-{uuid.uuid4().hex[:8]}.jpg"
        upload = SimpleUploadedFile(name, _photo(*size, seed=n), content_type="image/jpeg")
        image = Image(title=name, file=upload)
        image.save()
        made.append(image)
    return made


def ten_photo_post(blog, slug: str, count: int, size: tuple[int, int], *, gallery_share: float = 0.8):
    """An unpublished post with ``count`` photos: 80 % in one gallery, the rest as regular images."""
    from tests.factories import make_post

    photos = images(count, size, prefix=slug)
    in_gallery = round(count * gallery_share)
    return make_post(blog, slug, images=photos[in_gallery:], galleries=[photos[:in_gallery]], publish=False)


def median(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


class Timer:
    """Wall and CPU (this process) time of a block."""

    def __enter__(self) -> Timer:
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = time.process_time() - self.cpu0


def interleaved(variants: dict[str, Callable[[int], float]], repeat: int) -> dict[str, list[float]]:
    """Run every variant once per round (A, B, C, A, B, C, ...); return all results per variant."""
    results: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(repeat):
        for name, run in variants.items():
            value = run(round_)
            results[name].append(value)
            print(f"  round {round_ + 1}/{repeat} {name}: {value:.4f}", file=sys.stderr, flush=True)
    return results


def report(name: str, result: dict[str, Any], rows: list[tuple], headers: tuple, args: argparse.Namespace) -> None:
    """Print a short table (stderr-free, after the JSON) and the JSON; optionally write the JSON to a file."""
    from rich.console import Console
    from rich.table import Table

    result = {"benchmark": name, "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), **result}
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    table = Table(title=name)
    for header in headers:
        table.add_column(header)
    for row in rows:
        table.add_row(*[f"{cell:.3f}" if isinstance(cell, float) else str(cell) for cell in row])
    Console(stderr=False, width=200).print(table)


def vm_hwm_kb(pid: int) -> tuple[int, int]:
    """``(VmRSS, VmHWM)`` of a process in KiB, from ``/proc`` (0 if it is gone)."""
    rss = hwm = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm


def process_group(pgid: int) -> list[int]:
    """Pids of every process in a process group (the qcluster and its worker children)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid:
            pids.append(int(entry.name))
    return pids


def cpu_seconds_of_group(pgid: int) -> float:
    """utime + stime of every live process in the group (clock ticks converted to seconds)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in process_group(pgid):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    return total / ticks


#: Every receiver auto_renditions' ``signal_handlers.connect()`` wires that reacts to a publish.
AUTO_PUBLISH_UIDS = (
    "auto_renditions.publish_post",
    "auto_renditions.post_images",
    "auto_renditions.post_galleries",
    "auto_renditions.gallery_images",
)


def use_publish_path(path: str) -> None:
    """Wire ``page_published`` for one of the compared paths.

    - ``cast``: django-cast's default, synchronous renditions in the request;
    - ``floor``: django-cast's media sync only (``prepare_post_media(post, create_renditions=False)``);
    - ``auto``: auto_renditions' receivers (claims + enqueue on commit).
    """
    from cast.models import Gallery, Post
    from cast.post_media import prepare_published_post_media
    from django.db.models.signals import m2m_changed
    from wagtail.signals import page_published

    from auto_renditions import signal_handlers

    page_published.disconnect(dispatch_uid="auto_renditions.publish_post")
    page_published.disconnect(dispatch_uid=signal_handlers.CAST_PUBLISH_DISPATCH_UID)
    page_published.disconnect(dispatch_uid="benchmarks.floor")
    for uid, sender in (
        ("auto_renditions.post_images", Post.images.through),
        ("auto_renditions.post_galleries", Post.galleries.through),
        ("auto_renditions.gallery_images", Gallery.images.through),
    ):
        m2m_changed.disconnect(sender=sender, dispatch_uid=uid)
    if path == "cast":
        page_published.connect(prepare_published_post_media, dispatch_uid=signal_handlers.CAST_PUBLISH_DISPATCH_UID)
    elif path == "floor":
        page_published.connect(_floor_receiver, dispatch_uid="benchmarks.floor")
    elif path == "auto":
        signal_handlers.connect()
    else:
        raise ValueError(path)


def _floor_receiver(sender: Any, instance: Any, **kwargs: Any) -> None:
    from cast.models import Post
    from cast.post_media import prepare_post_media

    if isinstance(instance, Post) and instance.live:
        prepare_post_media(instance, create_renditions=False)


def reset_peak_rss() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0: write 5 to ``/proc/self/clear_refs``)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False
