"""``manage.py auto_renditions`` on a site that arrives with legacy renditions and no ledger (the seed notebook).

Expected numbers are computed here from django-cast's ``RenditionFilters`` and the site's known layout, not from
the code under test. Transactional tests: Wagtail deletes rendition files on commit, and the command's own
transactions must really commit for ``check --fix`` to see its repairs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from cast.renditions import RenditionFilters
from django.conf import settings
from django.core.checks import run_checks
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone
from wagtail.images.models import Rendition

import auto_renditions.fingerprint  # noqa: F401 - registers the W010 check until apps.py imports it
from auto_renditions.models import Claim, ClaimedRendition, Failure, PendingDeletion, QueuedImage, SettingsFingerprint
from tests import harness
from tests.factories import make_blog, make_image, make_post

LEGACY = ("width-300", "width-768", "max-120x80", "width-2200")
ADMIN_THUMB = "max-165x165"
COVER = "fill-1200x630|format-jpeg|jpegquality-75"

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def specs(image, image_type: str) -> set[tuple[int, str]]:
    return {(image.pk, s) for s in RenditionFilters.from_wagtail_image_with_type(image, image_type).filter_strings}


def run(*args: str) -> tuple[int, str]:
    out = StringIO()
    try:
        call_command("auto_renditions", *args, stdout=out, stderr=StringIO())
    except CommandError as error:
        return error.returncode, out.getvalue()
    return 0, out.getvalue()


def run_json(*args: str) -> tuple[int, dict]:
    code, out = run(*args, "--json")
    return code, json.loads(out)


def state() -> tuple:
    """Everything the command may change: ledger rows, rendition rows and rendition files."""
    folder = Path(settings.MEDIA_ROOT) / "images"
    files = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
    return (
        sorted(ClaimedRendition.objects.values_list("post_id", "image_id", "filter_spec")),
        sorted(QueuedImage.objects.values_list("image_id", flat=True)),
        sorted(PendingDeletion.objects.values_list("image_id", "filter_spec")),
        sorted(Rendition.objects.values_list("image_id", "filter_spec")),
        SettingsFingerprint.objects.count(),
        files,
    )


def file_exists(name: str) -> bool:
    return (Path(settings.MEDIA_ROOT) / name).exists()


@pytest.fixture
def site():
    """Three posts (one a draft) sharing images, legacy renditions everywhere, no ledger (app just installed).

    - ``a`` 600×400: regular in p1 and in p1's gallery; all its required renditions exist already.
    - ``b`` 1600×1200: in p1's gallery and regular in p2 (shared); ``c`` 600×400: regular in p2.
    - ``e`` 600×400: only in the draft p3. ``d`` 600×400: no post (a blog cover, say).
    """
    blog = make_blog()
    a, b, c, d, e = make_image(600, 400), make_image(1600, 1200), make_image(600, 400), make_image(), make_image()
    p1 = make_post(blog, "p1", images=[a], galleries=[[a, b]])
    p2 = make_post(blog, "p2", images=[b, c])
    p3 = make_post(blog, "p3", images=[e])
    p3.unpublish()  # a post that was live once: cast recorded its images
    # Forget the ledger: the site predates the app.
    for model in (Claim, QueuedImage, PendingDeletion, Failure):
        model.objects.all().delete()
    required = specs(a, "regular") | specs(a, "gallery") | specs(b, "gallery") | specs(b, "regular")
    required |= specs(c, "regular")
    for image in (a, b, c, d, e):
        for spec in LEGACY:
            image.get_rendition(spec)
    a.get_renditions(*sorted(s for _, s in specs(a, "regular") | specs(a, "gallery")))
    a.get_rendition(ADMIN_THUMB)
    a.get_rendition(COVER)
    d.get_rendition(COVER)
    obsolete = {(i.pk, s) for i in (a, b, c, e) for s in LEGACY}
    assert not obsolete & required  # the legacy specs really are obsolete under the current settings
    return {
        "images": {"a": a, "b": b, "c": c, "d": d, "e": e},
        "posts": {"p1": p1, "p2": p2, "p3": p3},
        "required": required,
        "obsolete": obsolete,
        "missing": required - specs(a, "regular") - specs(a, "gallery"),
        "blog": blog,
    }


def test_plan_numbers_are_exact_and_nothing_is_written(site):
    before = state()
    code, data = run_json("plan")
    assert code == 0
    assert state() == before
    assert data["required"] == len(site["required"])
    assert data["missing"] == len(site["missing"]) > 0
    assert data["obsolete"] == len(site["obsolete"]) == 16
    rows = Rendition.objects.filter(image_id__in=[i for i, _ in site["obsolete"]], filter_spec__in=LEGACY)
    sizes = sum((Path(settings.MEDIA_ROOT) / r.file.name).stat().st_size for r in rows)
    assert data["obsolete_bytes"] == sizes > 0
    images = site["images"]
    assert set(data["images"]) == {str(images[n].pk) for n in "abce"}  # d is no post's image
    assert sorted(data["images"][str(images["e"].pk)]["obsolete"]) == sorted(LEGACY)
    assert data["images"][str(images["a"].pk)]["missing"] == []
    assert {(int(i), s) for i, item in data["images"].items() for s in item["missing"]} == site["missing"]


def test_plan_for_one_post_counts_shared_images_against_every_live_post(site):
    images = site["images"]
    code, data = run_json("plan", "--post-slug", "p2")
    assert code == 0
    p2_required = specs(images["b"], "regular") | specs(images["c"], "regular")
    assert data["required"] == len(p2_required)
    # b's gallery renditions are p1's business: neither missing for p2 nor obsolete.
    assert data["missing"] == len(p2_required)
    assert data["obsolete"] == 2 * len(LEGACY)  # the legacy renditions of b and c
    code, text = run("plan", "--blog-slug", "blog")
    assert code == 0 and "16 obsolete" in text


def test_sync_prune_yes_now_leaves_exactly_required_plus_keep_list(site):
    images = site["images"]
    d_rows = set(Rendition.objects.filter(image=images["d"]).values_list("filter_spec", "file"))
    doomed_files = list(
        Rendition.objects.filter(image_id__in=[i for i, _ in site["obsolete"]], filter_spec__in=LEGACY).values_list(
            "file", flat=True
        )
    )
    code, data = run_json("sync", "--prune", "--yes", "--now")
    assert code == 0, json.dumps(data)
    assert data["deleted"] == 16
    post_images = [images[n].pk for n in "abce"]
    expected = site["required"] | {(images["a"].pk, ADMIN_THUMB), (images["a"].pk, COVER)}
    assert set(Rendition.objects.filter(image_id__in=post_images).values_list("image_id", "filter_spec")) == expected
    assert set(Rendition.objects.filter(image=images["d"]).values_list("filter_spec", "file")) == d_rows
    assert all(file_exists(r.file.name) for r in Rendition.objects.all())
    assert not any(file_exists(name) for name in doomed_files)
    assert set(ClaimedRendition.objects.values_list("image_id", "filter_spec")) == site["required"]
    assert not QueuedImage.objects.exists()
    assert SettingsFingerprint.objects.count() == 1
    assert run_json("plan")[1]["missing"] == run_json("plan")[1]["obsolete"] == 0
    assert run("check", "--min-orphan-age", "0")[0] == 0


def test_sync_without_now_queues_then_workers_fill_in(site):
    code, _ = run("sync")
    assert code == 0
    images = site["images"]
    assert set(QueuedImage.objects.values_list("image_id", flat=True)) == {images["b"].pk, images["c"].pk}
    assert Rendition.objects.filter(filter_spec__in=LEGACY).count() == 5 * len(LEGACY)  # no --prune: kept
    harness.settle_in_process()
    have = set(Rendition.objects.values_list("image_id", "filter_spec"))
    assert site["required"] <= have


def test_sync_releases_claims_of_posts_that_are_not_live(site):
    from cast.models import Post

    run("sync")
    p1 = site["posts"]["p1"]
    Post.objects.filter(pk=p1.pk).update(live=False)  # behind the listeners' back
    assert Claim.objects.filter(post_id=p1.pk).exists()
    assert run("sync")[0] == 0
    assert not Claim.objects.filter(post_id=p1.pk).exists()
    a, b = site["images"]["a"], site["images"]["b"]
    p1_only = (specs(a, "regular") | specs(a, "gallery") | specs(b, "gallery")) - specs(b, "regular")
    assert set(PendingDeletion.objects.values_list("image_id", "filter_spec")) == p1_only


@pytest.mark.parametrize(
    "args",
    [
        ("plan", "--post-slug", "nope"),
        ("plan", "--blog-slug", "nope"),
        ("plan", "--post-slug", "p1", "--blog-slug", "blog"),
        ("sync", "--post-slug", "nope", "--prune", "--yes"),
        ("sync", "--dry-run", "--now"),
        ("sync", "--prune"),  # deleting needs --yes when there is no terminal to ask on
        ("check", "--min-orphan-age", "-1"),
        ("check", "--min-orphan-age", "nan"),
        ("check", "--fix", "--min-orphan-age", "inf"),
        ("check", "--min-orphan-age", "1e20"),
        ("plan", "--post-slug", ""),
        ("plan", "--blog-slug", " "),
        ("sync", "--prune", "--yes", "--post-slug", ""),  # would prune the whole site
        ("sync", "--prune", "--yes", "--blog-slug", ""),
    ],
)
def test_bad_input_exits_2_and_changes_nothing(site, args):
    before = state()
    code, _ = run(*args)
    assert code == 2
    assert state() == before


def test_bad_orphan_age_on_the_command_line_is_a_message_not_a_traceback(site):
    result = subprocess.run(
        [sys.executable, "-m", "django", "auto_renditions", "check", "--min-orphan-age", "nan"],
        cwd=harness.ROOT,
        env=harness.Worker().env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "--min-orphan-age must be a number of seconds from 0 to" in result.stderr


def test_an_ambiguous_blog_slug_is_refused_and_the_blogs_listed(site):
    from cast.models import Blog
    from wagtail.models import Page, Site

    section = Site.objects.get(is_default_site=True).root_page.add_child(
        instance=Page(title="Archive", slug="archive")
    )
    other = section.add_child(instance=Blog(title="Old blog", slug="blog", owner=site["blog"].owner))
    make_post(other, "old-post", images=[site["images"]["d"]])
    before = state()
    for args in (("plan",), ("sync", "--prune", "--yes")):
        with pytest.raises(CommandError) as raised:
            call_command("auto_renditions", *args, "--blog-slug", "blog", stdout=StringIO(), stderr=StringIO())
        assert raised.value.returncode == 2
        message = str(raised.value)
        assert f"id {site['blog'].pk} at " in message and f"id {other.pk} at {other.url_path}" in message
    assert state() == before


def _without_size_or_original(image) -> None:
    """An image row as a failed upload or a restored backup leaves it: width 0 and the original gone."""
    from wagtail.images.models import Image

    (Path(settings.MEDIA_ROOT) / image.file.name).unlink()
    Image.objects.filter(pk=image.pk).update(width=0)


def test_an_image_row_without_size_or_original_does_not_stop_plan_sync_check(site):
    images = site["images"]
    bad = make_image(800, 600)
    _without_size_or_original(bad)
    p4 = make_post(site["blog"], "p4", images=[bad, images["d"]])
    required = site["required"] | specs(images["d"], "regular")

    code, data = run_json("plan")
    assert code == 0
    assert [item["image_id"] for item in data["unplannable"]] == [bad.pk]
    assert data["required"] == len(required)

    code, data = run_json("sync")
    assert code == 0, json.dumps(data)
    assert set(ClaimedRendition.objects.values_list("image_id", "filter_spec")) == required
    assert Claim.objects.filter(post=p4, image=images["d"]).exists()
    assert list(Failure.objects.filter(image=bad).values_list("filter_spec", flat=True)) == ["*"]

    assert run("check", "--min-orphan-age", "0")[0] == 0
    code, data = run_json("sync", "--prune", "--yes", "--now")
    assert code == 0, json.dumps(data)
    assert required <= set(Rendition.objects.values_list("image_id", "filter_spec"))
    assert run("check", "--min-orphan-age", "0")[0] == 0


def test_dry_run_changes_nothing(site):
    before = state()
    code, data = run_json("sync", "--prune", "--dry-run")
    assert code == 0
    assert data["obsolete"] == 16 and data["missing"] == len(site["missing"])
    assert state() == before


def _synced(site):
    assert run("sync", "--prune", "--yes", "--now")[0] == 0
    assert run("check", "--min-orphan-age", "0")[0] == 0


def _drift(site):
    Claim.objects.filter(post=site["posts"]["p2"]).first().delete()


def _unqueued(site):
    b = site["images"]["b"]
    spec = sorted(specs(b, "regular"))[0][1]
    rendition = Rendition.objects.get(image=b, filter_spec=spec)
    Rendition.objects.filter(pk=rendition.pk)._raw_delete("default")  # no signals: behind our back
    (Path(settings.MEDIA_ROOT) / rendition.file.name).unlink()
    QueuedImage.objects.all().delete()


def _stale_claim(site):
    from cast.models import Post

    Post.objects.filter(pk=site["posts"]["p2"].pk).update(live=False)


def _overdue(site):
    a = site["images"]["a"]
    a.get_rendition("width-300")
    PendingDeletion.objects.create(image=a, filter_spec="width-300", due_at=timezone.now())


def _missing_file(site):
    rendition = Rendition.objects.filter(image=site["images"]["c"], filter_spec__contains="avif").first()
    (Path(settings.MEDIA_ROOT) / rendition.file.name).unlink()


def _orphan(site):
    stem = Path(site["images"]["a"].file.name).stem  # named like a rendition of an existing original
    (Path(settings.MEDIA_ROOT) / "images" / f"{stem}.width-999.jpg").write_bytes(b"not a rendition")


@pytest.mark.parametrize(
    "kind,induce",
    [
        ("drift", _drift),
        ("unqueued", _unqueued),
        ("stale_claim", _stale_claim),
        ("overdue_deletion", _overdue),
        ("missing_file", _missing_file),
        ("orphan_file", _orphan),
    ],
)
def test_check_reports_each_violation_and_fix_repairs_it(site, kind, induce):
    _synced(site)
    induce(site)
    code, data = run_json("check", "--min-orphan-age", "0")
    assert code == 1
    assert {v["kind"] for v in data["violations"]} == {kind}
    code, data = run_json("check", "--fix", "--min-orphan-age", "0")
    assert code == 0, json.dumps(data)
    assert data["fixed"] and data["remaining"] == []
    harness.settle_in_process()
    assert run("check", "--min-orphan-age", "0")[0] == 0
    have = set(Rendition.objects.values_list("image_id", "filter_spec"))
    if kind != "stale_claim":
        assert site["required"] <= have


def test_young_files_without_rows_are_not_orphans_yet(site):
    _synced(site)
    _orphan(site)
    assert run("check")[0] == 0  # default: 5 minutes of grace for a row being inserted
    assert run("check", "--min-orphan-age", "0")[0] == 1


def test_settings_fingerprint_warning(site, settings):
    def warnings():
        return [
            m for m in run_checks(tags=["auto_renditions"], databases=["default"]) if m.id == "auto_renditions.W010"
        ]

    assert warnings() == []  # nothing stored yet
    run("sync")
    assert warnings() == []
    settings.CAST_IMAGE_FORMATS = ["jpeg", "webp"]
    found = warnings()
    assert len(found) == 1 and "sync --prune" in found[0].hint and "CAST_IMAGE_FORMATS" in found[0].msg
    settings.CAST_IMAGE_FORMATS = ["jpeg", "avif"]
    settings.WAGTAILIMAGES_AVIF_QUALITY = 61  # Wagtail's default, spelled out: same fingerprint
    assert warnings() == []
    settings.WAGTAILIMAGES_JPEG_QUALITY = 90
    assert len(warnings()) == 1


def test_status_reports_failures_and_unready_posts(site):
    run("sync")
    b = site["images"]["b"]
    Failure.objects.create(image=b, filter_spec="width-1110|format-avif", error="OSError: boom", attempts=3)
    code, data = run_json("status")
    assert code == 0
    assert [(f["image_id"], f["error"], f["attempts"]) for f in data["failures"]] == [(b.pk, "OSError: boom", 3)]
    assert {p["post_id"] for p in data["posts_not_ready"]} == {site["posts"]["p1"].pk, site["posts"]["p2"].pk}
    assert data["queued_images"] == 2
    assert data["fingerprint_stored"] == data["fingerprint_current"]


def test_entry_point_status_json_in_a_subprocess(site):
    run("sync")
    result = subprocess.run(
        [sys.executable, "-m", "django", "auto_renditions", "status", "--json"],
        cwd=harness.ROOT,
        env=harness.Worker().env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["queued_images"] == 2
    assert len(data["posts_not_ready"]) == 2


class _Terminal(StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("answer,code", [("n", 1), ("y", 0)])
def test_prune_asks_on_a_terminal(site, monkeypatch, answer, code):
    asked = []
    monkeypatch.setattr(sys, "stdin", _Terminal())
    monkeypatch.setattr("builtins.input", lambda prompt: asked.append(prompt) or answer)
    before = state()
    assert run("sync", "--prune")[0] == code
    assert len(asked) == 1 and "Delete 16 obsolete" in asked[0]
    if answer == "n":
        assert state() == before
    else:
        assert not Rendition.objects.filter(image_id__in=[i for i, _ in site["obsolete"]], filter_spec__in=LEGACY)
