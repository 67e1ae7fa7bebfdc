"""Planning cost: SQL queries and time of one publish's ledger work, and of the whole-site ``plan``.

1. A post with 10 .. 100 images: ``ledger.sync_posts([post])`` for a first publish (every claim new) and a
   re-publish (nothing changed). The ledger's query count must not grow with the number of images; the
   on-commit enqueue (django-q2 ``async_task``, one per image) is reported separately.
2. The same 100-image post after the site has grown to ``--filler-posts`` posts and ``--filler-claims`` ledger
   rows (bulk-created Claim rows of filler post/image ids with ten specs each, so 200k rows claim 2M renditions;
   foreign-key checks off while inserting: they only have to make the tables and indexes big).
3. ``manage.py auto_renditions plan --json`` over ``--plan-renditions`` renditions (real live posts and images,
   Rendition rows bulk-created with fake file names); without the command, the notebook's diff instead.

``--against REF`` also runs the ledger module of an earlier commit (``git show REF:auto_renditions/ledger.py``,
loaded beside the current one) on the large site, interleaved round by round with the current ledger: the
side-by-side before/after of a ledger change. It needs that commit's ledger to work with today's other modules
and schema (``benchmarks/ab.py`` compares commits whatever they changed, one process each).

``machine.reference`` holds two figures of the machine itself (django-cast's planning of 100 images one by one,
100 ``SELECT 1`` round trips), to relate runs on different machines.

Images are rows with fake file names and real dimensions: planning never opens files.

    python benchmarks/planning_cost.py
"""

from __future__ import annotations

import argparse
import io
import itertools
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import site  # noqa: E402


def main() -> None:
    parser = site.add_common_arguments(argparse.ArgumentParser(description=__doc__))
    parser.add_argument("--counts", default="10,25,50,100", help="images per post")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--filler-posts", type=int, default=10_000)
    parser.add_argument("--filler-claims", type=int, default=200_000)
    parser.add_argument("--plan-renditions", type=int, default=20_000)
    parser.add_argument("--against", metavar="REF", help="also time the ledger of this git commit, side by side")
    args = parser.parse_args()
    site.setup(args)

    from tests.factories import make_blog

    blog = make_blog()
    counts = [int(n) for n in args.counts.split(",")]
    result: dict = {"machine": site.machine(), "db": args.db, "broker": args.broker, "repeat": args.repeat}
    rows: list[tuple] = []

    per_size = {}
    for n in counts:
        per_size[n] = measure_sync(blog, n, args.repeat)
        rows.append((f"sync_posts, {n} images (empty site)", *_row(per_size[n])))
    result["by_images"] = per_size
    ledger_counts = {per_size[n]["first"]["ledger_queries"] for n in counts}
    result["ledger_queries_constant"] = len(ledger_counts) == 1

    result["machine"]["reference"] = measure_machine(blog, max(counts), args.repeat)

    fill(args.filler_posts, args.filler_claims)
    syncs = {"this": None} | ({args.against: ledger_at(args.against).sync_posts} if args.against else {})
    big_by_ledger = measure_sync(blog, max(counts), args.repeat, syncs)
    big = big_by_ledger.pop("this")
    result["big_site"] = {"filler_posts": args.filler_posts, "filler_claims": args.filler_claims, **big}
    result["target_le_20ms_big_site"] = big["first"]["ledger_ms"] <= 20
    rows.append((f"sync_posts, {max(counts)} images, {args.filler_claims} claims", *_row(big)))
    for ref, measured in big_by_ledger.items():
        result["big_site"][f"ledger at {ref}"] = measured
        result["big_site"][f"this / {ref}"] = {
            kind: big[kind]["ledger_ms"] / measured[kind]["ledger_ms"] for kind in ("first", "again", "fresh")
        }
        rows.append((f"  same, side by side: ledger at {ref}", *_row(measured)))

    result["plan"] = measure_plan(blog, args.plan_renditions)
    result["target_plan_le_0.5s"] = result["plan"]["median_s"] <= 0.5
    rows.append(
        (
            f"{result['plan']['what']} over {result['plan']['renditions']} renditions (ms)",
            "",
            result["plan"]["median_s"] * 1000,
            "",
            "",
            "",
            "",
            "",
        )
    )
    site.report(
        "planning cost",
        result,
        rows,
        (
            "case",
            "ledger queries",
            "ledger ms",
            "new connection ms",
            "enqueue queries",
            "re-sync queries",
            "re-sync ms",
            "total ms",
        ),
        args,
    )


def _row(m: dict) -> tuple:
    first, again = m["first"], m["again"]
    return (
        first["ledger_queries"],
        first["ledger_ms"],
        m["fresh"]["ledger_ms"],
        first["enqueue_queries"],
        again["ledger_queries"],
        again["ledger_ms"],
        first["total_ms"],
    )


def fake_images(count: int, prefix: str, width: int = 4000, height: int = 3000) -> list:
    from wagtail.images.models import Image

    tag = uuid.uuid4().hex[:6]
    images = [
        Image(
            title=f"{prefix}-{n}",
            file=f"original_images/{prefix}-{tag}-{n}.jpg",
            width=width,
            height=height,
            file_size=1_000_000,
        )
        for n in range(count)
    ]
    return Image.objects.bulk_create(images)


def live_post(blog, slug: str, count: int):
    """A live post with ``count`` images (80 % in one gallery), media relations synced, no claims yet."""
    from cast.post_media import prepare_post_media

    from tests.factories import make_post

    photos = fake_images(count, slug)
    split = round(count * 0.8)
    post = make_post(blog, slug, images=photos[split:], galleries=[photos[:split]], publish=False)
    type(post).objects.filter(pk=post.pk).update(live=True)
    post.refresh_from_db()
    prepare_post_media(post, create_renditions=False)
    return post


def ledger_at(ref: str):
    """The ledger module of git commit ``ref``, imported beside the current one (same package, same models)."""
    import importlib.util
    import subprocess
    import tempfile

    source = subprocess.run(
        ["git", "show", f"{ref}:auto_renditions/ledger.py"], cwd=site.ROOT, check=True, capture_output=True, text=True
    ).stdout
    path = Path(tempfile.mkdtemp(prefix="ledger-at-")) / "ledger.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("auto_renditions._ledger_at_ref", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def measure_sync(blog, count: int, repeat: int, syncs: dict | None = None) -> dict:
    """Median queries and ms of a first sync (all claims new) and of a re-sync (nothing to change).

    With ``syncs`` (``{name: sync_posts or None for the current ledger}``), each round runs every one in turn on
    the same post and the result is ``{name: medians}``.
    """
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext
    from django_q.models import OrmQ

    from auto_renditions import ledger
    from auto_renditions.models import Claim, ClaimedRendition, QueuedImage

    site.use_publish_path("floor")  # no listener may claim behind the measured call
    post = live_post(blog, f"plan-{count}-{uuid.uuid4().hex[:6]}", count)
    variants = {name: sync or ledger.sync_posts for name, sync in (syncs or {"this": None}).items()}
    runs = {name: {"first": [], "again": [], "fresh": []} for name in variants}
    for _, (name, sync_posts) in itertools.product(range(repeat), variants.items()):
        for kind in ("first", "again", "fresh"):
            if kind in ("first", "fresh"):
                Claim.objects.filter(post=post).delete()
                QueuedImage.objects.all().delete()
                OrmQ.objects.all().delete()
            if kind == "fresh":  # a new connection: the database has none of the ledger's tables cached yet
                connection.close()
                with connection.cursor() as cursor:
                    cursor.execute("SELECT 1")
            with CaptureQueriesContext(connection) as total:
                t0 = time.perf_counter()
                with transaction.atomic(), CaptureQueriesContext(connection) as inner:
                    t1 = time.perf_counter()
                    sync_posts([post.pk])
                    ledger_s = time.perf_counter() - t1
                total_s = time.perf_counter() - t0  # includes the on-commit enqueue
            runs[name][kind].append(
                {
                    "ledger_queries": len(inner),
                    "ledger_ms": ledger_s * 1000,
                    "enqueue_queries": len(total) - len(inner),
                    "total_ms": total_s * 1000,
                }
            )
    claims = ClaimedRendition.objects.filter(post=post).count()
    medians = {
        name: {
            "images": count,
            "claims": claims,
            "claim_rows": Claim.objects.filter(post=post).count(),
            **{kind: {key: site.median(r[key] for r in rs) for key in rs[0]} for kind, rs in by_kind.items()},
        }
        for name, by_kind in runs.items()
    }
    return medians if syncs else medians["this"]


def measure_machine(blog, count: int, repeat: int) -> dict:
    """Figures of this machine, not of the ledger, to relate runs on different machines: django-cast's planning of
    ``count`` images one by one (Python), and ``count`` round trips of ``SELECT 1`` through Django."""
    from cast.renditions import RenditionFilters
    from django.db import connection

    post = live_post(blog, f"machine-{uuid.uuid4().hex[:6]}", count)
    images = list(post.get_all_images())
    planning_s, round_trips_s = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for image_type, image in images:
            RenditionFilters.from_wagtail_image_with_type(image, image_type)
        planning_s.append(time.perf_counter() - t0)
        with connection.cursor() as cursor:
            t0 = time.perf_counter()
            for _ in range(count):
                cursor.execute("SELECT 1")
                cursor.fetchone()
            round_trips_s.append(time.perf_counter() - t0)
    return {
        f"cast_planning_{count}_images_ms": site.median(planning_s) * 1000,
        f"select_1_x{count}_ms": site.median(round_trips_s) * 1000,
    }


def fill(posts: int, claims: int) -> None:
    """Make the ledger big: ``claims`` Claim rows (ten specs each) over ``posts`` filler post ids (FK checks off)."""
    from django.db import connection, transaction

    from auto_renditions.models import Claim

    base = 10_000_000
    per_post = max(1, claims // posts)
    specs = sorted(f"width-{w}{f}" for w in (120, 240, 360, 1110, 2220) for f in ("", "|format-avif"))
    _foreign_keys(connection, on=False)
    try:
        with transaction.atomic():
            batch = []
            for n in range(claims):
                batch.append(Claim(post_id=base + n // per_post, image_id=base + n, filter_specs=specs))
                if len(batch) == 10_000:
                    Claim.objects.bulk_create(batch)
                    batch = []
            Claim.objects.bulk_create(batch)
    finally:
        _foreign_keys(connection, on=True)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def _foreign_keys(connection, on: bool) -> None:
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute(f"PRAGMA foreign_keys = {'ON' if on else 'OFF'}")
        else:
            cursor.execute(f"SET session_replication_role = {'DEFAULT' if on else 'replica'}")


def measure_plan(blog, renditions: int, repeat: int = 3) -> dict:
    """Time ``auto_renditions plan --json`` (or the notebook's diff) over a site with ``renditions`` renditions."""
    from django.core.management import call_command
    from wagtail.images.models import Rendition

    from auto_renditions import ledger, planning

    site.use_publish_path("floor")
    posts, made = [], 0
    while made < renditions:
        post = live_post(blog, f"site-{len(posts)}-{uuid.uuid4().hex[:6]}", 10)
        required = planning.required_renditions(post.get_all_images()).keys
        Rendition.objects.bulk_create(
            [
                Rendition(
                    image_id=i,
                    filter_spec=s,
                    file=f"images/fake-{i}-{n}.jpg",
                    width=100,
                    height=75,
                    focal_point_key="",
                )
                for n, (i, s) in enumerate(sorted(required))
            ],
            ignore_conflicts=True,
        )
        posts.append(post.pk)
        made += len(required)
    ledger.sync_posts(posts)
    total = Rendition.objects.count()
    times, what = [], "manage.py auto_renditions plan --json --no-sizes"
    for _ in range(repeat):
        t0 = time.perf_counter()
        try:
            call_command("auto_renditions", "plan", "--json", "--no-sizes", stdout=io.StringIO())
        except Exception as error:  # noqa: BLE001 - the command is being written in parallel
            what = f"notebook diff (plan command failed: {type(error).__name__}: {error})"
            notebook_diff()
        times.append(time.perf_counter() - t0)
    return {"what": what, "posts": len(posts), "renditions": total, "median_s": site.median(times), "runs_s": times}


def notebook_diff() -> tuple[set, set]:
    from cast.models import Post
    from wagtail.images.models import Rendition

    from auto_renditions import planning

    required: set = set()
    for post in Post.objects.live().prefetch_related("images", "galleries__images"):
        required |= planning.required_renditions(post.get_all_images()).keys
    existing = set(Rendition.objects.values_list("image_id", "filter_spec"))
    return required - existing, existing - required


if __name__ == "__main__":
    main()
