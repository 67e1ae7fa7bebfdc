"""A real Chromium against a live server and a real worker: publish in the admin, see the page before and after
the renditions exist, and watch the admin report count down.

Needs Debian's ``chromium`` (Playwright's own browser download is not used). Skipped only where Chromium is
missing outside CI; under ``CI=true`` a missing Chromium fails. Screenshots go to ``artifacts/`` at the repo root.
"""

from __future__ import annotations

import os
import shutil
import time

import pytest
from django.conf import settings

from auto_renditions.models import ClaimedRendition
from tests import harness
from tests.factories import make_image, make_post

pytestmark = pytest.mark.browser


ARTIFACTS = harness.ROOT / "artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
IMAGES_JS = """() => Array.from(document.images).map(i => ({
    src: i.getAttribute("src") || "", srcset: i.getAttribute("srcset") || "",
    current: i.currentSrc, width: i.naturalWidth, complete: i.complete}))"""


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path:
        return path
    if os.environ.get("CI") == "true":
        pytest.fail("Chromium is not installed (apt-get install chromium); the browser test must run in CI")
    pytest.skip("Chromium is not installed (apt-get install chromium) and CI is not 'true'")


@pytest.fixture
def browser_page(monkeypatch):
    executable = chromium_path()
    try:
        from playwright import sync_api
    except ImportError:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip("playwright is not installed (pip install -e .[test])")
    # Playwright's sync API keeps an event loop in this thread; the ORM calls between steps are still synchronous.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / ".gitignore").write_text("*\n")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(60_000)
            yield page
        finally:
            browser.close()


def loaded_images(page) -> list[dict]:
    """Every <img> on the page once loaded (lazy ones and ones in closed modals included)."""
    page.wait_for_load_state("load")
    page.evaluate("() => document.querySelectorAll('img[loading=lazy]').forEach(i => { i.loading = 'eager'; })")
    page.wait_for_function("() => Array.from(document.images).every(i => i.complete)")
    return page.evaluate(IMAGES_JS)


def pending_in_report(page, base: str, post_id: int) -> int:
    page.goto(f"{base}/cms/auto-renditions/?post={post_id}")
    return int(page.locator('[data-summary="pending"]').inner_text())


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_publish_view_before_and_after_worker(live_server, browser_page, blog):
    page, base = browser_page, live_server.url
    photos = [make_image(1600, 1200, seed=n) for n in range(3)]  # large enough that every slot has renditions
    post = make_post(blog, "browser-post", images=[photos[0]], galleries=[photos], publish=False)

    # Log in through Wagtail's login page.
    page.goto(f"{base}/cms/login/")
    page.fill("input[name=username]", "editor")
    page.fill("input[name=password]", "password")
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/cms/")

    # Publish in the admin: Wagtail's "Publish" bulk action on the page (a revision, then revision.publish(),
    # which fires page_published). The editor form itself rejects the body that the factories write.
    page.goto(f"{base}/cms/bulk/wagtailcore/page/publish/?next=/cms/&id={post.pk}")
    page.get_by_role("button", name="Yes, publish").click()
    page.wait_for_load_state("load")
    post.refresh_from_db()
    assert post.live
    required = ClaimedRendition.objects.filter(post=post).count()
    assert required > 0

    # Before any worker ran: the page shows the originals, every picture loads.
    assert pending_in_report(page, base, post.pk) == required
    page.screenshot(path=str(ARTIFACTS / "report-before.png"), full_page=True)
    page.goto(f"{base}{post.url}")
    before = loaded_images(page)
    page.screenshot(path=str(ARTIFACTS / "post-before-worker.png"), full_page=True)
    assert before, "the published post shows no <img>"
    assert [i for i in before if i["width"] == 0] == [], before
    assert any("/media/original_images/" in i["current"] for i in before)

    with harness.Worker() as worker:
        deadline, pending = time.monotonic() + 240, required
        while pending and time.monotonic() < deadline:
            if worker.process.poll() is not None:
                raise AssertionError(f"worker exited early:\n{worker.output()[-4000:]}")
            time.sleep(1)
            pending = pending_in_report(page, base, post.pk)
        assert pending == 0, f"{pending} renditions still pending\n{worker.output()[-4000:]}"
    page.screenshot(path=str(ARTIFACTS / "report-after.png"), full_page=True)

    page.goto(f"{base}/cms/pages/{post.pk}/edit/")
    page.screenshot(path=str(ARTIFACTS / "editor-after.png"))
    # The status sits in the editor header's "more" menu, whose items Wagtail only renders when it opens.
    page.locator("header [data-w-dropdown-target='toggle']").first.click()
    status = page.locator("[data-auto-renditions-status]")
    status.wait_for(state="visible")
    page.screenshot(path=str(ARTIFACTS / "editor-status.png"))
    assert status.get_attribute("data-auto-renditions-status") == "ready"
    assert " ".join(status.text_content().split()) == f"All {required} renditions ready"

    # After the worker: every picture loads, and srcset/currentSrc use the renditions.
    page.goto(f"{base}{post.url}")
    after = loaded_images(page)
    page.screenshot(path=str(ARTIFACTS / "post-after-worker.png"), full_page=True)
    assert len(after) == len(before)
    assert [i for i in after if i["width"] == 0] == [], after
    with_srcset = [i for i in after if i["srcset"] and not i["srcset"].startswith("data:")]  # modal placeholder
    assert with_srcset, after
    for image in with_srcset:
        urls = [part.split()[0] for part in image["srcset"].split(",") if part.strip()]
        assert all(url.startswith(f"{settings.MEDIA_URL}images/") for url in urls), image
        assert f"{settings.MEDIA_URL}images/" in image["current"], image
