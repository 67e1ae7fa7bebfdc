"""The independent oracle: what must exist, computed from django-cast alone (never from the app's ledger)."""

from __future__ import annotations

import contextlib
import re
from collections import Counter
from io import StringIO
from pathlib import Path

from cast.renditions import RenditionFilters
from django.core.files.storage import default_storage
from django.core.management import CommandError, call_command, get_commands
from wagtail.images.models import Image, Rendition

from auto_renditions.conf import get_settings

RENDITION_FOLDER = "images"


def made_from(rendition_file: str, original_file: str) -> bool:
    """Wagtail names a rendition ``images/<original stem, cut to fit 59 chars>.<filter>.<ext>``; when that name is
    taken (an earlier file of the same rendition not deleted yet), Django's storage inserts ``_<7 random
    characters>`` before the first dot. Both are renditions of this original."""
    stem, name = Path(original_file).stem, Path(rendition_file).name
    if not stem:
        return False
    prefix = re.escape(stem if len(stem) <= 24 else stem[:24])
    tail = r"(_[A-Za-z0-9]{7})?\." if len(stem) <= 24 else ""
    return re.match(prefix + tail, name) is not None


def required_by(post) -> set[tuple[int, str]]:
    """Renditions django-cast renders for one post; images it cannot plan require nothing."""
    keys: set[tuple[int, str]] = set()
    for image_type, image in post.get_all_images():
        try:
            specs = RenditionFilters.from_wagtail_image_with_type(image, image_type).filter_strings
        except (ValueError, ZeroDivisionError):
            continue
        keys.update((image.pk, spec) for spec in specs)
    return keys


def live_requirement() -> set[tuple[int, str]]:
    from cast.models import Post

    keys: set[tuple[int, str]] = set()
    for post in Post.objects.live().prefetch_related("images", "galleries__images"):
        keys |= required_by(post)
    return keys


def storage_files(storage=None, folder: str = RENDITION_FOLDER) -> set[str]:
    storage = storage or default_storage
    try:
        _, files = storage.listdir(folder)
    except FileNotFoundError:
        return set()
    return {f"{folder}/{name}" for name in files}


def problems(exempt: set[tuple[int, str]] = frozenset(), storage=None) -> list[str]:
    """Everything that breaks the promise; ``exempt`` are keys allowed to be missing (failed for good)."""
    storage = storage or default_storage
    keep = set(get_settings().KEEP_FILTER_SPECS)
    rows = list(Rendition.objects.values_list("image_id", "filter_spec", "focal_point_key", "file"))
    originals = dict(Image.objects.values_list("pk", "file"))
    found = Counter((i, s, f) for i, s, f, _ in rows)
    actual = {(i, s) for i, s, _, _ in rows}
    expected = live_requirement()
    out = [f"duplicate rendition row {key}" for key, n in found.items() if n > 1]
    out += [f"missing rendition {key}" for key in sorted(expected - actual - set(exempt))]
    out += [f"unneeded rendition {key}" for key in sorted(actual - expected) if key[1] not in keep]
    out += [f"stale rendition {name} of image {i}" for i, _, _, name in rows if not made_from(name, originals[i])]
    names = {name for *_, name in rows}
    out += [f"row without file {name}" for name in sorted(names) if not storage.exists(name)]
    out += [f"orphan file {name}" for name in sorted(storage_files(storage) - names)]
    return out


def app_check_report() -> str:
    """``manage.py auto_renditions check --json`` (the ledger's view), to explain an oracle finding."""
    out = StringIO()
    with contextlib.suppress(CommandError, SystemExit):
        call_command("auto_renditions", "check", "--json", stdout=out, stderr=out)
    return out.getvalue()[:5000]


def app_check_exit_code(*args: str) -> int | None:
    """Exit code of ``manage.py auto_renditions check`` if that command exists (``None`` otherwise)."""
    if "auto_renditions" not in get_commands():
        return None
    try:
        call_command("auto_renditions", "check", *args, stdout=StringIO(), stderr=StringIO())
    except CommandError as error:  # what ``manage.py`` turns into the exit code
        return error.returncode
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0
