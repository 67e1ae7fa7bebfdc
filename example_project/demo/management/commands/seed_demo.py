"""Seed the demo site once: a superuser, a blog, generated photos and posts that share them.

Idempotent: images, the blog and posts are found by title/slug and only what is missing is created, so the
demo command can run it on every start. Posts are published through Wagtail's revision path, exactly as the
admin does, so auto_renditions' ``page_published`` listener claims their renditions and queues the work.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from uuid import uuid4

from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management.base import BaseCommand
from django.db import transaction
from wagtail.images.models import Image
from wagtail.models import Page, Site

from demo.photos import encode, landscape

USERNAME = "admin"
PASSWORD = "admin"
BLOG_SLUG = "field-notes"


@dataclass(frozen=True)
class Photo:
    key: str
    title: str
    width: int
    height: int
    fmt: str = "JPEG"


#: Sizes and orientations a real blog gets: camera originals, a portrait, panoramas, small web images, a PNG logo.
PHOTOS = [
    Photo("harbour", "Harbour at dawn (4000×3000)", 4000, 3000),
    Photo("tower", "Lighthouse tower (3000×4000, portrait)", 3000, 4000),
    Photo("ridge", "Ridge panorama (6000×1500)", 6000, 1500),
    Photo("dunes", "Dunes (4000×3000)", 4000, 3000),
    Photo("pier", "Pier (2400×1600)", 2400, 1600),
    Photo("shell", "Shell (800×600, small)", 800, 600),
    Photo("pebble", "Pebble (400×300, tiny)", 400, 300),
    Photo("logo", "Logo with transparency (1200×900 PNG)", 1200, 900, "PNG"),
    Photo("coast", "Coast panorama (5000×1250)", 5000, 1250),
    Photo("draft", "Draft photo (3000×2000)", 3000, 2000),
]

#: Posts: (slug, title, regular images, galleries, publish). Images shared between posts show reference counts.
POSTS = [
    ("harbour-morning", "A morning at the harbour", ["harbour"], [["harbour", "tower", "ridge", "pier"]], True),
    ("along-the-coast", "Along the coast", ["tower"], [["dunes", "shell", "harbour", "coast"]], True),
    ("small-things", "Small things", ["logo", "pebble"], [["shell", "pebble", "logo"]], True),
    (
        "unfinished-draft",
        "An unfinished draft (not published: claims nothing)",
        ["draft"],
        [["draft", "dunes"]],
        False,
    ),
]


class Command(BaseCommand):
    help = "Create the demo superuser, blog, photos and posts if they do not exist yet (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--scale", type=float, default=1.0, help="Scale the generated photos (e.g. 0.1 for a quick smoke test)."
        )

    def handle(self, *args, scale: float, **options):
        user = self.superuser()
        blog = self.blog(user)
        images = {photo.key: self.image(photo, scale) for photo in PHOTOS}
        created = 0
        for slug, title, regular, galleries, publish in POSTS:
            if type(blog).objects.filter(pk=blog.pk).first().get_children().filter(slug=slug).exists():
                continue
            self.post(
                blog,
                user,
                slug,
                title,
                [images[k] for k in regular],
                [[images[k] for k in g] for g in galleries],
                publish,
            )
            created += 1
        self.stdout.write(f"Seeded: {len(images)} images, {created} new post(s) (existing ones are left alone).")
        self.stdout.write(f"Admin login: {USERNAME} / {PASSWORD}  (Wagtail admin at /cms/)")

    def superuser(self):
        users = get_user_model().objects
        user = users.filter(username=USERNAME).first()
        if user is None:
            user = users.create_superuser(USERNAME, "admin@example.com", PASSWORD)
        return user

    def blog(self, user):
        from cast.models import Blog

        blog = Blog.objects.filter(slug=BLOG_SLUG).first()
        if blog is not None:
            return blog
        blog = Blog(title="Field notes", slug=BLOG_SLUG, owner=user, comments_enabled=False)
        Page.get_first_root_node().add_child(instance=blog)
        blog.save_revision(user=user).publish(user=user)
        # The blog is the site's home page: / lists the posts.
        site = Site.objects.filter(is_default_site=True).first()
        if site is None:
            Site.objects.create(hostname="localhost", port=80, root_page=blog, is_default_site=True, site_name="Demo")
        else:
            site.root_page = blog
            site.save()
        return blog

    def image(self, photo: Photo, scale: float) -> Image:
        image = Image.objects.filter(title=photo.title).first()
        if image is not None:
            return image
        width, height = max(16, round(photo.width * scale)), max(16, round(photo.height * scale))
        picture = landscape(width, height, seed=sum(map(ord, photo.key)), alpha=photo.fmt == "PNG")
        ext = "png" if photo.fmt == "PNG" else "jpg"
        upload = SimpleUploadedFile(f"{photo.key}.{ext}", encode(picture, photo.fmt), content_type=f"image/{ext}")
        image = Image(title=photo.title, file=upload)
        image.save()
        self.stdout.write(f"  image {photo.key}: {width}×{height} {photo.fmt}")
        return image

    @transaction.atomic
    def post(self, blog, user, slug, title, regular, galleries, publish: bool):
        from cast.models import Post

        overview = [{"type": "paragraph", "value": f"<p>{title}. Photos generated by the demo seed.</p>"}]
        overview += [{"type": "image", "value": image.pk} for image in regular]
        for gallery in galleries:
            items = [{"id": str(uuid4()), "type": "item", "value": image.pk} for image in gallery]
            overview.append({"id": str(uuid4()), "type": "gallery", "value": {"layout": "default", "gallery": items}})
        body = json.dumps([{"type": "overview", "value": overview}, {"type": "detail", "value": []}])
        post = Post(title=title, slug=slug, owner=user, body=body, live=False)
        blog.add_child(instance=post)
        revision = post.save_revision(user=user)
        if publish:
            revision.publish(user=user)  # fires page_published: auto_renditions claims and queues on commit
        self.stdout.write(f"  post {slug}: {'published' if publish else 'draft'}")
