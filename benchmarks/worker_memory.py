"""Worker memory: peak RSS of real ``qcluster`` worker processes.

Phase 1 publishes posts of 24-megapixel originals (``--big-size``, default 6000x4000) and records the peak
resident size (``VmHWM`` from ``/proc``) of every process of the cluster. Phase 2 runs ``--tasks`` generation
tasks (one per image, small originals so it stays quick) and samples the workers' current RSS after every
batch, to show whether memory stays flat as tasks accumulate. django-q2 recycles a worker process after
``recycle`` tasks (default 500): ``--tasks 500`` crosses that line.

    python benchmarks/worker_memory.py --big-images 4 --tasks 100
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import site  # noqa: E402


def main() -> None:
    parser = site.add_common_arguments(argparse.ArgumentParser(description=__doc__))
    parser.add_argument("--big-images", type=int, default=4)
    parser.add_argument("--big-size", default="6000x4000")
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--small-size", default="1600x1200")
    parser.add_argument("--batch", type=int, default=10, help="images per post in phase 2")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="extra worker env")
    args = parser.parse_args()
    site.setup(args)

    from auto_renditions import status
    from tests.factories import make_blog
    from tests.harness import Worker

    blog = make_blog()
    site.use_publish_path("auto")
    result: dict = {"machine": site.machine(), "db": args.db, "broker": args.broker, "workers": args.workers}

    def wait_ready(post_ids, worker, timeout=900) -> float:
        t0 = time.perf_counter()
        while True:
            progress = status.post_progress(post_ids)
            if progress and all(p.ready for p in progress):
                return time.perf_counter() - t0
            if worker.process.poll() is not None or time.perf_counter() - t0 > timeout:
                raise SystemExit(f"worker stopped or timed out:\n{worker.output()[-3000:]}")
            time.sleep(0.1)

    extra_env = dict(item.split("=", 1) for item in args.env)
    result["worker_env"] = extra_env
    with Worker(workers=args.workers, extra_env=extra_env) as worker:
        pgid = worker.process.pid
        time.sleep(3)
        idle = _rss_by_pid(pgid)
        # Phase 1: 24-megapixel originals.
        post = site.ten_photo_post(blog, "big", args.big_images, site.parse_size(args.big_size))
        post.save_revision(user=post.owner).publish(user=post.owner)
        big_s = wait_ready([post.pk], worker)
        after_big = _rss_by_pid(pgid)
        result["big"] = {
            "size": args.big_size,
            "images": args.big_images,
            "seconds": big_s,
            "idle_rss_mb": idle,
            "after_rss_mb": after_big,
            "peak_hwm_mb": max(h for _, h in after_big.values()),
        }
        # Phase 2: many tasks.
        samples = []
        done = 0
        while done < args.tasks:
            n = min(args.batch, args.tasks - done)
            post = site.ten_photo_post(blog, f"many-{done}", n, site.parse_size(args.small_size))
            post.save_revision(user=post.owner).publish(user=post.owner)
            wait_ready([post.pk], worker)
            done += n
            rss = _rss_by_pid(pgid)
            samples.append({"tasks": done, "max_rss_mb": max(r for r, _ in rss.values()), "rss_mb": rss})
            print(f"  {done} tasks: max worker RSS {samples[-1]['max_rss_mb']:.0f} MB", file=sys.stderr)
        final = _rss_by_pid(pgid)
    first, last = samples[0]["max_rss_mb"], samples[-1]["max_rss_mb"]
    result["many"] = {
        "tasks": args.tasks,
        "size": args.small_size,
        "samples": samples,
        "first_max_rss_mb": first,
        "last_max_rss_mb": last,
        "growth_mb": last - first,
        "peak_hwm_mb": max(h for _, h in final.values()),
    }
    peak = max(result["big"]["peak_hwm_mb"], result["many"]["peak_hwm_mb"])
    result["peak_hwm_mb"] = peak
    result["target_le_400mb"] = peak <= 400
    rows = [
        ("idle cluster, max process RSS", max(r for r, _ in idle.values())),
        (f"{args.big_images}× {args.big_size}: peak VmHWM", result["big"]["peak_hwm_mb"]),
        (f"{args.big_images}× {args.big_size}: seconds to ready", big_s),
        (f"after {samples[0]['tasks']} small tasks: max RSS", first),
        (f"after {args.tasks} small tasks: max RSS", last),
        ("peak VmHWM of any cluster process", peak),
    ]
    site.report("worker memory (MB)", result, rows, ("what", "value"), args)


def _rss_by_pid(pgid: int) -> dict[int, tuple[float, float]]:
    """``{pid: (RSS MB, peak RSS MB)}`` for every process in the cluster's group."""
    out = {}
    for pid in site.process_group(pgid):
        rss, hwm = site.vm_hwm_kb(pid)
        out[pid] = (rss / 1024, hwm / 1024)
    return out


if __name__ == "__main__":
    main()
