"""Time to ready: publish -> the last required rendition exists, with real ``qcluster`` workers.

Per round, interleaved: django-cast's synchronous publish (its generation time, measured in the request), then
auto_renditions with a 1-process and a 2-process cluster (started and idle before the publish; the clock runs
from the publish call until ``status.post_progress`` reports nothing pending), then the Pillow-only ceiling
over the same originals and specs (decode once, resize and encode each spec, CPU time of all threads).

    python benchmarks/time_to_ready.py --size 2000x1500 --repeat 2
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import ceiling, site  # noqa: E402


def main() -> None:
    parser = site.add_common_arguments(argparse.ArgumentParser(description=__doc__))
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--size", default="4000x3000")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--workers", default="1,2", help="cluster sizes to try, comma separated")
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    site.setup(args)

    from wagtail.images.models import Rendition

    from auto_renditions import status
    from auto_renditions.models import ClaimedRendition
    from tests.factories import make_blog
    from tests.harness import Worker

    size = site.parse_size(args.size)
    blog = make_blog()
    counter = iter(range(10**6))
    details: dict[str, list[dict]] = {}

    def cast_sync(_round: int) -> float:
        post = site.ten_photo_post(blog, f"cast-{next(counter)}", args.images, size)
        site.use_publish_path("cast")
        with site.Timer() as timer:
            post.save_revision(user=post.owner).publish(user=post.owner)
        made = Rendition.objects.filter(image__in=[i for _, i in post.get_all_images()]).count()
        details.setdefault("cast", []).append({"wall_s": timer.wall, "cpu_s": timer.cpu, "renditions": made})
        return timer.wall

    def with_workers(n: int):
        def run(_round: int) -> float:
            post = site.ten_photo_post(blog, f"auto{n}-{next(counter)}", args.images, size)
            site.use_publish_path("auto")
            with Worker(workers=n) as worker:
                _wait_for_cluster(worker, n)
                cpu0 = site.cpu_seconds_of_group(worker.process.pid)
                t0 = time.perf_counter()
                post.save_revision(user=post.owner).publish(user=post.owner)
                published = time.perf_counter() - t0
                while True:
                    progress = status.post_progress([post.pk])
                    if progress and progress[0].ready:
                        break
                    if time.perf_counter() - t0 > args.timeout:
                        raise SystemExit(f"not ready after {args.timeout}s:\n{worker.output()[-3000:]}")
                    if worker.process.poll() is not None:
                        raise SystemExit(f"worker died:\n{worker.output()[-3000:]}")
                    time.sleep(0.05)
                ready = time.perf_counter() - t0
                cpu = site.cpu_seconds_of_group(worker.process.pid) - cpu0
            details.setdefault(f"auto_{n}w", []).append(
                {
                    "publish_s": published,
                    "ready_s": ready,
                    "worker_cpu_s": cpu,
                    "renditions": ClaimedRendition.objects.filter(post=post).count(),
                }
            )
            return ready

        return run

    def pillow(_round: int) -> float:
        post = site.ten_photo_post(blog, f"pillow-{next(counter)}", args.images, size)
        site.use_publish_path("floor")  # relations synced, no renditions
        post.save_revision(user=post.owner).publish(user=post.owner)
        from auto_renditions import planning

        by_image = planning.by_image(planning.required_renditions(post.get_all_images()).keys)
        jobs = []
        for image in [i for _, i in post.get_all_images()]:
            with image.open_file() as handle:
                jobs.append((handle.read(), sorted(by_image[image.pk])))
        result = ceiling.render_all(jobs)
        result["renditions"] = sum(len(s) for _, s in jobs)
        details.setdefault("pillow", []).append(result)
        return result["cpu_s"]

    variants = {"cast": cast_sync}
    workers = [int(n) for n in args.workers.split(",")]
    variants |= {f"auto_{n}w": with_workers(n) for n in workers}
    variants["pillow"] = pillow
    site.interleaved(variants, args.repeat)

    cores = os.cpu_count() or 1
    cast_s = site.median(d["wall_s"] for d in details["cast"])
    pillow_cpu = site.median(d["cpu_s"] for d in details["pillow"])
    summary = {"cast_sync_s": cast_s, "pillow_ceiling_cpu_s": pillow_cpu}
    ratios = {}
    for n in workers:
        ready = site.median(d["ready_s"] for d in details[f"auto_{n}w"])
        summary[f"auto_{n}w_ready_s"] = ready
        used = min(n, cores)
        ratios[f"auto_{n}w/cast"] = ready / cast_s
        ratios[f"auto_{n}w/(pillow_cpu/{used})"] = ready / (pillow_cpu / used)
    result = {
        "machine": site.machine(),
        "db": args.db,
        "broker": args.broker,
        "images": args.images,
        "size": args.size,
        "repeat": args.repeat,
        "summary": summary,
        "ratios": ratios,
        "targets": {
            "2w_le_0.75x_cast": ratios.get("auto_2w/cast", float("nan")) <= 0.75,
            "2w_le_1.15x_ceiling": ratios.get(f"auto_2w/(pillow_cpu/{min(2, cores)})", float("nan")) <= 1.15,
        },
        "runs": details,
    }
    rows = [(k, v) for k, v in summary.items()] + [(k, v) for k, v in ratios.items()]
    site.report("time to ready", result, rows, ("what", "seconds / ratio"), args)


def _wait_for_cluster(worker, n: int, timeout: float = 60) -> None:
    """Wait until the cluster's worker processes exist and the cluster has settled."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.process.poll() is not None:
            raise SystemExit(f"worker exited:\n{worker.output()[-3000:]}")
        # sentinel + monitor + pusher + n workers (+ the qcluster parent and a scheduler)
        if len(site.process_group(worker.process.pid)) >= n + 3:
            time.sleep(1.0)
            return
        time.sleep(0.2)
    raise SystemExit(f"cluster did not start:\n{worker.output()[-3000:]}")


if __name__ == "__main__":
    main()
