"""Read the images of a rendered page: every URL in ``<img src>``, ``<img srcset>`` and ``<source srcset>``."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

from django.conf import settings


class ImageTags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in {"img", "source"}:
            self.tags.append((tag, {k: v or "" for k, v in attrs}))


def image_tags(html: str) -> list[tuple[str, dict[str, str]]]:
    parser = ImageTags()
    parser.feed(html)
    return parser.tags


def srcset_urls(srcset: str) -> list[str]:
    return [part.strip().split(" ")[0] for part in srcset.split(",") if part.strip()]


def media_urls(html: str) -> tuple[list[str], list[str]]:
    """Return (the media URLs of all images, problems): an empty src/srcset is a problem."""
    urls, problems = [], []
    for tag, attrs in image_tags(html):
        if tag == "img":
            if not attrs.get("src", "").strip():
                problems.append(f"empty src: {attrs}")
            else:
                urls.append(attrs["src"])
        if "srcset" in attrs or tag == "source":
            found = srcset_urls(attrs.get("srcset", ""))
            if not found:
                problems.append(f"empty srcset on <{tag}>: {attrs}")
            urls += found
    return [url for url in urls if unquote(urlparse(url).path).startswith(settings.MEDIA_URL)], problems


def media_file(url: str) -> Path:
    path = unquote(urlparse(url).path)
    assert path.startswith(settings.MEDIA_URL), f"{url} is not a media URL"
    return Path(settings.MEDIA_ROOT) / path[len(settings.MEDIA_URL) :]
