"""The ``AUTO_RENDITIONS`` settings dict, with documented defaults.

Read through :func:`get_settings` every time (never cached at import) so ``override_settings`` works in tests.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields

from django.conf import settings

__all__ = ["DEFAULT_KEEP_FILTER_SPECS", "AutoRenditionsSettings", "get_settings"]

#: Filter specs the app never deletes, whoever claimed them: the ones Wagtail 8's admin and django-cast 0.2.67
#: render outside post bodies (found with grep in the installed packages). Wagtail admin: listing thumbnails
#: ``max-165x165``, edit/preview ``max-800x600``, chooser ``max-150x150``, ``original``. django-cast: social cover
#: (``SOCIAL_COVER_RENDITION_SPEC``), Podlove poster (``PODLOVE_POSTER_RENDITION_SPEC``), contributor avatars
#: (``Contributor.AVATAR_RENDITION_FILTER``), the podlove facade cover ``fill-400x400``, the blog header
#: ``fill-1920x600`` and embed previews ``fill-600x338``.
DEFAULT_KEEP_FILTER_SPECS: tuple[str, ...] = (
    "max-165x165",
    "max-800x600",
    "max-150x150",
    "original",
    "fill-1200x630|format-jpeg|jpegquality-75",
    "max-512x512|format-webp",
    "fill-80x80|format-webp",
    "fill-400x400",
    "fill-1920x600",
    "fill-600x338",
)


@dataclass(frozen=True)
class AutoRenditionsSettings:
    #: Seconds a rendition that lost its last claim survives before it is deleted. Cached HTML (CDN, feed
    #: readers) keeps pointing at old URLs for a while, and an editor may undo an unpublish; a day covers both.
    #: 0 deletes right after the releasing transaction commits.
    DELETE_GRACE_SECONDS: int = 24 * 60 * 60
    #: Seconds one generation task may run (its django-q2 timeout). Its lease is shorter and renewed while it
    #: runs, so a worker that died is taken over about a minute later (``tasks.LEASE_SECONDS``).
    TASK_TIMEOUT: int = 300
    #: Attempts per (image, spec) before a failure is left for an operator (``auto_renditions status``).
    MAX_ATTEMPTS: int = 3
    #: Seconds before the first retry of a failed rendition; doubled for every further attempt.
    RETRY_BACKOFF_SECONDS: int = 60
    #: Filter specs that are never deleted.
    KEEP_FILTER_SPECS: tuple[str, ...] = DEFAULT_KEEP_FILTER_SPECS
    #: django-q2 cluster name to send tasks to (``None``: the default ``Q_CLUSTER``).
    Q_CLUSTER: str | None = None
    #: Minutes between two runs of the housekeeping task (due deletions, lost tasks); installed as a
    #: django-q2 schedule by ``migrate``. 0 disables the schedule.
    SWEEP_MINUTES: int = 1
    #: Originals with more pixels than this render one spec at a time instead of three, because each of
    #: Wagtail's pool threads keeps its own heap (figures: ``docs/BENCHMARKS.md``, section 4). 0 renders every
    #: image serially.
    SERIAL_RENDER_PIXELS: int = 12_000_000


def get_settings() -> AutoRenditionsSettings:
    """Return the effective settings; unknown keys raise so that a typo is not silently ignored."""
    user = dict(getattr(settings, "AUTO_RENDITIONS", {}) or {})
    known = {f.name for f in fields(AutoRenditionsSettings)}
    unknown = set(user) - known
    if unknown:
        raise ValueError(
            f"Unknown AUTO_RENDITIONS keys: {', '.join(sorted(unknown))}. Known: {', '.join(sorted(known))}"
        )
    if "KEEP_FILTER_SPECS" in user:
        user["KEEP_FILTER_SPECS"] = _filter_specs(user["KEEP_FILTER_SPECS"])
    return AutoRenditionsSettings(**user)


def _filter_specs(value: object) -> tuple[str, ...]:
    """KEEP_FILTER_SPECS as a tuple; a lone string is refused, or it would become a list of single characters."""
    if isinstance(value, str) or not isinstance(value, Iterable):
        hint = f" (one spec: ({value!r},))" if isinstance(value, str) else ""
        raise TypeError(
            f"AUTO_RENDITIONS['KEEP_FILTER_SPECS'] must be a list or tuple of filter specs, not {value!r}{hint}."
        )
    specs = tuple(value)
    wrong = [spec for spec in specs if not isinstance(spec, str) or not spec]
    if wrong:
        raise TypeError(f"AUTO_RENDITIONS['KEEP_FILTER_SPECS'] must hold non-empty strings, not {wrong!r}.")
    return specs
