"""Generation speed of one image's renditions, and what sharing work between specs would save.

Every round takes a fresh copy of one original (new image row and file) per variant, interleaved:

- ``cast``: django-cast's loop, one ``image.get_rendition(spec)`` per spec (open + decode per spec);
- ``batch``: Wagtail's ``image.get_renditions(*specs)`` (bytes read once, decoded per spec, 3 threads);
- ``app``: what the worker runs (``auto_renditions.generation``: one decode, one resize per size, 3 threads);
- ``decode_once``: ``batch`` with the original decoded once and shared by every spec (``Filter.get_willow_image``
  patched to hand out the decoded image);
- ``shared_resize``: ``decode_once`` plus one LANCZOS resize per target size, shared by the specs that differ
  only in output format (``width-N`` and ``width-N|format-avif``); crop of the full frame skipped;
- ``app_serial``: ``app`` rendering one spec at a time (what the worker does for originals over
  ``SERIAL_RENDER_PIXELS``);
- ``shared_sequential``: ``shared_resize`` with Wagtail's 3-thread pool cut to one thread (lower peak memory);
- ``intermediate`` (opt-in idea, output differs): ``shared_resize`` but each size is resized from the nearest
  larger size already made instead of from the original.

The patched variants still run all of Wagtail's ``Filter.run`` (orientation, operations, encoder settings,
storage, bulk insert). Every rendition file is compared with the ``batch`` output of the same round: identical
bytes, or the PSNR against it.

    python benchmarks/generation.py --size 4000x3000 --repeat 3
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gc
import io
import math
import os
import resource
import sys
import threading
from contextlib import ExitStack, contextmanager
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import ceiling, site  # noqa: E402

VARIANTS = ("cast", "batch", "app", "app_serial", "decode_once", "shared_resize", "shared_sequential", "intermediate")


@contextmanager
def decode_once(original: bytes, shared_resize: bool = False, intermediate: bool = False):
    """Patch Wagtail/Willow so every spec starts from one decoded copy (and optionally shares resizes)."""
    from PIL import Image as PILImage
    from wagtail.images.models import Filter
    from willow.plugins.pillow import PillowImage

    decoded = PILImage.open(io.BytesIO(original))
    decoded.load()
    base = PillowImage(decoded)
    cache: dict[tuple[int, int], PillowImage] = {}
    lock = threading.Lock()
    real_orient, real_crop, real_resize = PillowImage.auto_orient, PillowImage.crop, PillowImage.resize
    upright = decoded.getexif().get(0x0112, 1) == 1
    hits = {"resize": 0, "resized": 0}

    @contextmanager
    def get_willow_image(self, image, source=None):
        willow = PillowImage(decoded)
        willow.format_name = "jpeg"
        yield willow

    def auto_orient(self):
        if self.image is decoded and upright:
            return self  # Pillow would copy the whole frame to change nothing
        return real_orient(self)

    def crop(self, rect):
        left, top, right, bottom = rect
        width, height = decoded.size
        clamped = (max(0, left), max(0, top), min(width, right), min(height, bottom))  # as Willow clamps
        if self.image is decoded and clamped == (0, 0, width, height):
            return self  # the full frame: Pillow would only copy it
        return real_crop(self, rect)

    def resize(self, size):
        if self.image is not decoded:
            return real_resize(self, size)
        size = tuple(size)
        with lock:
            hits["resize"] += 1
            if size not in cache:
                hits["resized"] += 1
                source = base
                if intermediate:
                    larger = [s for s in cache if s[0] >= size[0] and s[1] >= size[1]]
                    if larger:
                        source = cache[min(larger)]
                cache[size] = real_resize(source, size)
        # Pillow keeps save() parameters on the image object: two threads encoding one object would race.
        return PillowImage(cache[size].image.copy())

    with ExitStack() as stack:
        stack.enter_context(mock.patch.object(Filter, "get_willow_image", get_willow_image))
        if shared_resize:
            stack.enter_context(mock.patch.object(PillowImage, "auto_orient", auto_orient))
            stack.enter_context(mock.patch.object(PillowImage, "crop", crop))
            stack.enter_context(mock.patch.object(PillowImage, "resize", resize))
        yield hits


def psnr(a: bytes, b: bytes) -> float:
    from PIL import Image as PILImage
    from PIL import ImageChops, ImageStat

    x, y = PILImage.open(io.BytesIO(a)).convert("RGB"), PILImage.open(io.BytesIO(b)).convert("RGB")
    if x.size != y.size:
        return float("nan")
    mse = sum(ImageStat.Stat(ImageChops.difference(x, y)).sum2) / (x.width * x.height * 3)
    return float("inf") if mse == 0 else 10 * math.log10(255**2 / mse)


def main() -> None:
    parser = site.add_common_arguments(argparse.ArgumentParser(description=__doc__))
    parser.add_argument("--size", default="4000x3000")
    parser.add_argument("--type", choices=["gallery", "regular"], default="gallery")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    site.setup(args)

    from wagtail.images.models import Rendition

    from auto_renditions import planning

    size = site.parse_size(args.size)
    template = site.images(1, size, prefix="gen")[0]
    with template.open_file() as handle:
        original = handle.read()
    specs = sorted(planning.required_renditions([(args.type, template)]).keys)
    specs = [s for _, s in specs]
    details: dict[str, list[dict]] = {}
    reference: dict[str, bytes] = {}

    def outputs(image) -> dict[str, bytes]:
        out = {}
        for rendition in Rendition.objects.filter(image=image):
            with rendition.file.open("rb") as handle:
                out[rendition.filter_spec] = handle.read()
        return out

    def variant(name: str):
        def run(_round: int) -> float:
            image = site.images(1, size, prefix=name)[0]
            gc.collect()
            rss_before = site.vm_hwm_kb(os.getpid())[0] / 1024
            site.reset_peak_rss()  # the shared decode below counts too
            with ExitStack() as stack:
                hits = {}
                if name in {"decode_once", "shared_resize", "shared_sequential", "intermediate"}:
                    shared = name in {"shared_resize", "shared_sequential", "intermediate"}
                    hits = stack.enter_context(decode_once(original, shared, name == "intermediate"))
                if name == "shared_sequential":  # Wagtail's pool of 3 threads cut to 1: one encoder at a time
                    real_pool = concurrent.futures.ThreadPoolExecutor
                    stack.enter_context(
                        mock.patch.object(
                            concurrent.futures, "ThreadPoolExecutor", lambda max_workers=None: real_pool(1)
                        )
                    )
                with site.Timer() as timer:
                    if name == "cast":
                        for spec in specs:
                            image.get_rendition(spec)
                    elif name in {"app", "app_serial"}:  # the worker's shared filters, 3 or 1 at a time
                        from auto_renditions import generation

                        generation.render(image, specs, serial=name == "app_serial")
                    elif name == "intermediate":  # largest first, so smaller sizes find a larger one made
                        image.get_renditions(*sorted(specs, key=lambda s: -ceiling.parse_spec(s)[0]))
                    else:
                        image.get_renditions(*specs)
            made = outputs(image)
            if name == "batch":
                reference.clear()
                reference.update(made)
            peak = site.vm_hwm_kb(os.getpid())[1] / 1024
            entry = {
                "wall_s": timer.wall,
                "cpu_s": timer.cpu,
                "renditions": len(made),
                "resizes": dict(hits),
                "rss_before_mb": rss_before,
                "peak_rss_mb": peak,
                "peak_rss_growth_mb": peak - rss_before,
            }
            if reference and name != "batch":
                same = [s for s in specs if made.get(s) == reference.get(s)]
                entry["identical_to_batch"] = len(same)
                if len(same) < len(specs):
                    entry["psnr_db"] = {s: psnr(made[s], reference[s]) for s in specs if s not in same}
                    entry["min_psnr_db"] = min(entry["psnr_db"].values())
            details.setdefault(name, []).append(entry)
            return timer.wall

        return run

    names = [v for v in args.variants.split(",") if v]
    if "batch" in names:  # the reference runs first in every round
        names = ["batch", *[n for n in names if n != "batch"]]
    site.interleaved({n: variant(n) for n in names}, args.repeat)
    summary = {
        n: {
            "wall_s": site.median(d["wall_s"] for d in details[n]),
            "cpu_s": site.median(d["cpu_s"] for d in details[n]),
            "identical": min((d.get("identical_to_batch", len(specs)) for d in details[n]), default=len(specs)),
            "peak_rss_growth_mb": max(d["peak_rss_growth_mb"] for d in details[n]),
            "min_psnr_db": min((d.get("min_psnr_db", float("inf")) for d in details[n]), default=float("inf")),
        }
        for n in names
    }
    base = summary.get("batch")
    if base:
        for n in names:
            summary[n]["wall/batch"] = summary[n]["wall_s"] / base["wall_s"]
            summary[n]["cpu/batch"] = summary[n]["cpu_s"] / base["cpu_s"]
    result = {
        "machine": site.machine(),
        "size": args.size,
        "type": args.type,
        "specs": specs,
        "repeat": args.repeat,
        "summary": summary,
        "runs": details,
        # Peak RSS of this whole process: run one variant per process (--variants X) to compare memory.
        "process_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    rows = [
        (
            n,
            s["wall_s"],
            s["cpu_s"],
            s.get("wall/batch", ""),
            s.get("cpu/batch", ""),
            f"{s['identical']}/{len(specs)}",
            s["peak_rss_growth_mb"],
            s["min_psnr_db"],
        )
        for n, s in summary.items()
    ]
    site.report(
        f"generation of {len(specs)} {args.type} specs of one {args.size} image",
        result,
        rows,
        ("variant", "wall s", "cpu s", "wall/batch", "cpu/batch", "identical", "peak RSS growth MB", "min PSNR dB"),
        args,
    )


if __name__ == "__main__":
    main()
