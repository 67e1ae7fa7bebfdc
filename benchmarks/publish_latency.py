"""Publish latency: the same post published through django-cast's path, the media-sync floor, and auto_renditions.

Every round publishes three fresh copies of the post (new image rows and files, so nothing is cached), one per
path, interleaved (cast, floor, auto, cast, floor, auto, ...). Only ``post.save_revision().publish()`` is timed.
No worker runs: for auto_renditions this is the editor's request only.

    python benchmarks/publish_latency.py --size 2000x1500 --repeat 3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import site  # noqa: E402

PATHS = ("cast", "floor", "auto")


def main() -> None:
    parser = site.add_common_arguments(argparse.ArgumentParser(description=__doc__))
    parser.add_argument("--images", type=int, default=10, help="photos per post (80%% in a gallery)")
    parser.add_argument("--size", default="4000x3000", help="original size WxH")
    parser.add_argument("--repeat", type=int, default=2, help="interleaved rounds")
    parser.add_argument("--paths", default=",".join(PATHS), help="which paths to run, comma separated")
    parser.add_argument(
        "--cheap-rounds", type=int, default=8, help="extra interleaved rounds of the fast paths only (floor, auto)"
    )
    args = parser.parse_args()
    site.setup(args)

    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from wagtail.images.models import Rendition

    from tests.factories import make_blog

    size = site.parse_size(args.size)
    blog = make_blog()
    details: dict[str, list[dict]] = {p: [] for p in args.paths.split(",")}

    def variant(path: str):
        def run(round_: int) -> float:
            post = site.ten_photo_post(blog, f"{path}-{len(details[path])}", args.images, size)
            site.use_publish_path(path)
            before = Rendition.objects.count()
            with CaptureQueriesContext(connection) as queries, site.Timer() as timer:
                post.save_revision(user=post.owner).publish(user=post.owner)
            details[path].append(
                {
                    "wall_s": timer.wall,
                    "cpu_s": timer.cpu,
                    "queries": len(queries),
                    "renditions_made": Rendition.objects.count() - before,
                }
            )
            return timer.wall

        return run

    results = site.interleaved({p: variant(p) for p in details}, args.repeat)
    cheap = [p for p in details if p != "cast"]
    extra = site.interleaved({p: variant(p) for p in cheap}, args.cheap_rounds) if cheap else {}
    for p, values in extra.items():
        results[p] += values
    medians = {p: site.median(v) for p, v in results.items()}
    ratios = {}
    if "floor" in medians:
        ratios = {f"{p}/floor": medians[p] / medians["floor"] for p in medians if p != "floor"}
    if "cast" in medians and "auto" in medians:
        ratios["auto/cast"] = medians["auto"] / medians["cast"]
    result = {
        "machine": site.machine(),
        "db": args.db,
        "broker": args.broker,
        "images": args.images,
        "size": args.size,
        "repeat": args.repeat,
        "cheap_rounds": args.cheap_rounds,
        "median_wall_s": medians,
        "ratios": ratios,
        "target_auto_le_1.3x_floor": ratios.get("auto/floor", float("nan")) <= 1.3,
        "runs": details,
    }
    rows = [
        (
            p,
            medians[p],
            site.median(d["cpu_s"] for d in details[p]),
            int(site.median(d["queries"] for d in details[p])),
            details[p][0]["renditions_made"],
        )
        for p in details
    ]
    rows += [(name, value, "", "", "") for name, value in ratios.items()]
    site.report("publish latency", result, rows, ("path", "median wall s", "cpu s", "queries", "renditions"), args)


if __name__ == "__main__":
    main()
