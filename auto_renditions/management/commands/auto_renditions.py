"""``manage.py auto_renditions plan|sync|check|status``: adopt an existing site, repair it, and look at it.

``plan`` writes nothing; ``sync`` builds the ledger from all live posts, queues (or ``--now`` makes) what is
missing and with ``--prune`` deletes what no live post needs; ``check`` verifies the invariants (exit 1 on a
violation) and ``--fix`` repairs them; ``status`` shows the queue. Bad input exits with code 2, changing nothing.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from ... import fingerprint, inventory, ledger, preview, status, tasks
from ...models import PendingDeletion, QueuedImage
from .. import invariants

#: The largest ``--min-orphan-age`` (100 years): older cut-offs fall outside the dates Python can represent.
MAX_ORPHAN_AGE = 100 * 365.25 * 24 * 60 * 60


def _add_scope(parser: CommandParser) -> None:
    parser.add_argument("--post-slug", help="Only the post(s) with this slug.")
    parser.add_argument("--blog-slug", help="Only the posts of the blog with this slug.")


class Command(BaseCommand):
    help = "Plan, sync, prune, check and show the state of image renditions for django-cast posts."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True, metavar="{plan,sync,check,status}")
        plan = sub.add_parser("plan", help="Show missing and obsolete renditions; writes nothing.")
        _add_scope(plan)
        plan.add_argument("--json", action="store_true", help="Machine-readable output.")
        plan.add_argument("--no-sizes", action="store_true", help="Do not ask storage for obsolete file sizes.")
        sync = sub.add_parser("sync", help="Build or repair the ledger and queue missing renditions.")
        _add_scope(sync)
        sync.add_argument("--prune", action="store_true", help="Also delete obsolete and due renditions.")
        sync.add_argument("--dry-run", action="store_true", help="Say what would be done; change nothing.")
        sync.add_argument("--now", action="store_true", help="Make missing renditions in this process.")
        sync.add_argument("--yes", action="store_true", help="Delete without asking.")
        sync.add_argument("--json", action="store_true", help="Machine-readable output.")
        check = sub.add_parser("check", help="Verify the invariants; exit 1 on any violation.")
        check.add_argument("--json", action="store_true", help="Machine-readable output.")
        check.add_argument("--fix", action="store_true", help="Repair what can be repaired.")
        check.add_argument(
            "--min-orphan-age",
            type=float,
            default=300,
            help="Seconds a file without a row must be old to count as an orphan (a worker may be inserting it).",
        )
        stat = sub.add_parser("status", help="Queue depth, work in flight, failures, posts not yet rendered.")
        stat.add_argument("--json", action="store_true", help="Machine-readable output.")

    def handle(self, *args: Any, **options: Any) -> None:
        self.as_json = options.get("json", False)
        self.interactive = self.stdout.isatty() and not self.as_json
        action = options["action"]
        getattr(self, f"handle_{action}")(options)

    # -- helpers -----------------------------------------------------------------------------------------

    def wrap(self, items: Iterable, total: int, description: str) -> Iterable:
        """A rich progress bar on a terminal for long runs; the plain iterable otherwise."""
        if not self.interactive or total < 50:
            return items
        from rich.console import Console
        from rich.progress import track

        return track(items, description=description, total=total, console=Console(file=sys.stderr))

    def emit(self, data: dict, lines: Iterable[str]) -> None:
        if self.as_json:
            self.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str))
        else:
            for line in lines:
                self.stdout.write(line)

    def scope(self, options: dict) -> set[int] | None:
        """Post ids for ``--post-slug`` / ``--blog-slug`` (live or not), ``None`` for the whole site."""
        from cast.models import Blog, Post

        post_slug, blog_slug = options.get("post_slug"), options.get("blog_slug")
        for flag, value in (("--post-slug", post_slug), ("--blog-slug", blog_slug)):
            if value is not None and not value.strip():  # an empty scope must not widen to the whole site
                raise CommandError(f"{flag} needs a slug; leave it out to mean the whole site.", returncode=2)
        if post_slug is not None and blog_slug is not None:
            raise CommandError("Use either --post-slug or --blog-slug, not both.", returncode=2)
        if post_slug is not None:
            ids = set(Post.objects.filter(slug=post_slug).values_list("pk", flat=True))
            if not ids:
                raise CommandError(f"No post with slug {post_slug!r}.", returncode=2)
            return ids
        if blog_slug is not None:
            blogs = list(Blog.objects.filter(slug=blog_slug).order_by("path"))
            if not blogs:
                raise CommandError(f"No blog with slug {blog_slug!r}.", returncode=2)
            if len(blogs) > 1:
                found = "; ".join(f"id {blog.pk} at {blog.url_path}" for blog in blogs)
                raise CommandError(
                    f"{len(blogs)} blogs have the slug {blog_slug!r} ({found}): it does not say which one.",
                    returncode=2,
                )
            return set(Post.objects.descendant_of(blogs[0]).values_list("pk", flat=True))
        return None

    # -- plan --------------------------------------------------------------------------------------------

    def handle_plan(self, options: dict) -> None:
        scope = self.scope(options)
        plan = inventory.make_plan(scope)
        if not options["no_sizes"]:
            plan.sizes = inventory.measure(plan.obsolete, self.wrap)
        self.emit(self.plan_data(plan, scope), self.plan_lines(plan))

    def plan_data(self, plan: inventory.Plan, scope: set[int] | None) -> dict:
        return {
            "scope": "site" if scope is None else sorted(scope),
            "required": len(plan.required),
            "missing": len(plan.missing),
            "obsolete": len(plan.obsolete),
            "obsolete_bytes": plan.obsolete_bytes,
            "obsolete_files_missing": sum(1 for size in plan.sizes.values() if size is None),
            "images": {str(k): v for k, v in plan.per_image().items()},
            "unplannable": [{"image_id": u.image_id, "error": u.error} for u in plan.unplannable],
        }

    def plan_lines(self, plan: inventory.Plan) -> Iterable[str]:
        for image_id, item in plan.per_image().items():
            yield (
                f"image {image_id}: {len(item['missing'])} missing, {len(item['obsolete'])} obsolete "
                f"({_bytes(item['obsolete_bytes'])})"
            )
            for spec in item["missing"]:
                yield f"  + {spec}"
            for spec in item["obsolete"]:
                yield f"  - {spec}"
        for unplannable in plan.unplannable:
            yield f"image {unplannable.image_id}: cannot be planned: {unplannable.error}"
        yield (
            f"Total: {len(plan.required)} required, {len(plan.missing)} missing, {len(plan.obsolete)} obsolete "
            f"({_bytes(plan.obsolete_bytes)} on storage)."
        )

    # -- sync --------------------------------------------------------------------------------------------

    def handle_sync(self, options: dict) -> None:
        from cast.models import Post

        if options["dry_run"] and options["now"]:
            raise CommandError("--dry-run and --now contradict each other.", returncode=2)
        scope = self.scope(options)
        prune, dry_run = options["prune"], options["dry_run"]
        if prune and not dry_run and not options["yes"] and not sys.stdin.isatty():
            raise CommandError(
                "sync --prune deletes renditions and needs confirmation: pass --yes (no terminal to ask on).",
                returncode=2,
            )
        live = Post.objects.live()
        live_ids = set((live if scope is None else live.filter(pk__in=scope)).values_list("pk", flat=True))
        stale = inventory.stale_claim_posts(live_ids)
        if scope is not None:
            stale &= scope
        plan = inventory.make_plan(scope)
        due = PendingDeletion.objects.filter(due_at__lte=timezone.now())
        if scope is not None:
            due = due.filter(image_id__in={i for i, _ in plan.required} | {r.image_id for r in plan.obsolete})
        due_count = due.count()
        report: dict[str, Any] = {
            "dry_run": dry_run,
            "posts_synced": len(live_ids),
            "posts_released": len(stale),
            "missing": len(plan.missing),
            "obsolete": len(plan.obsolete) if prune else 0,
            "due_deletions": due_count if prune else 0,
        }
        if dry_run:
            self.emit(report, self.sync_lines(report, would=True))
            return
        if prune and (plan.obsolete or due_count) and not options["yes"]:
            answer = input(f"Delete {len(plan.obsolete)} obsolete and {due_count} released rendition(s)? [y/N] ")
            if answer.strip().lower() not in {"y", "yes"}:
                raise CommandError("Aborted; nothing changed.", returncode=1)
        queued: set[int] = set()
        for batch in self.wrap(list(inventory.batches(live_ids)), -(-len(live_ids) // inventory.BATCH), "Syncing"):
            queued |= ledger.sync_posts(batch).queued_images
        for batch in inventory.batches(stale):
            ledger.release_posts(batch)
        if prune:
            report["deleted"] = inventory.prune(plan.obsolete, self.wrap)
            due_images = None if scope is None else {i for i, _ in plan.required} | {r.image_id for r in plan.obsolete}
            report["due_deleted"] = tasks.delete_due_renditions(due_images)
        report["queued_images"] = QueuedImage.objects.count()
        if options["now"]:
            report["generated"] = self.generate(None if scope is None else {i for i, _ in plan.required})
        if scope is None:
            report["fingerprint"] = fingerprint.store()
        self.emit(report, self.sync_lines(report, would=False))

    def generate(self, image_ids: set[int] | None) -> list[str]:
        queued = QueuedImage.objects.order_by("image_id")
        if image_ids is not None:
            queued = queued.filter(image_id__in=image_ids)
        ids = list(queued.values_list("image_id", flat=True))
        return [tasks.generate_image_renditions(i) for i in self.wrap(ids, len(ids), "Generating renditions")]

    def sync_lines(self, report: dict, would: bool) -> Iterable[str]:
        verb = "would" if would else "did"
        yield f"Sync ({verb}): claims of {report['posts_synced']} live post(s) synced."
        if report["posts_released"]:
            yield f"Released the claims of {report['posts_released']} post(s) that are not live."
        yield f"{report['missing']} missing rendition(s) to make."
        if would:
            yield f"{report['obsolete']} obsolete and {report['due_deletions']} released rendition(s) to delete."
            return
        if "deleted" in report:
            yield f"Deleted {report['deleted']} obsolete rendition(s); due deletions: {report['due_deleted']}."
        if "generated" in report:
            yield f"Generated renditions for {len(report['generated'])} image(s)."
        else:
            yield f"{report['queued_images']} image(s) queued for the workers."
        if "fingerprint" in report:
            yield f"Settings fingerprint stored: {report['fingerprint'][:12]}."

    # -- check -------------------------------------------------------------------------------------------

    def handle_check(self, options: dict) -> None:
        min_age = options["min_orphan_age"]
        if not (math.isfinite(min_age) and 0 <= min_age <= MAX_ORPHAN_AGE):
            raise CommandError(
                f"--min-orphan-age must be a number of seconds from 0 to {MAX_ORPHAN_AGE:.0f} (100 years), "
                f"not {min_age!r}.",
                returncode=2,
            )
        found = invariants.find(self.wrap, min_age)
        repairs: list[str] = []
        remaining = found
        if options["fix"] and found:
            repairs = invariants.fix(found)
            remaining = invariants.find(self.wrap, min_age)
        data = {
            "violations": [v.as_dict() for v in found],
            "fixed": repairs,
            "remaining": [v.as_dict() for v in remaining] if options["fix"] else None,
            "ok": not remaining,
            "unknown_files": (unknown := invariants.unknown_files(min_age)),
        }
        lines = [v.describe() for v in found]
        lines += [f"{invariants.UNKNOWN}: {name}" for name in unknown]
        lines += [f"fixed: {line}" for line in repairs]
        if options["fix"] and found:
            lines += [f"still: {v.describe()}" for v in remaining]
        lines.append("OK: all invariants hold." if not remaining else f"{len(remaining)} violation(s).")
        self.emit(data, lines)
        if remaining:
            raise CommandError(f"{len(remaining)} violation(s) of the rendition invariants.", returncode=1)

    # -- status ------------------------------------------------------------------------------------------

    def handle_status(self, options: dict) -> None:
        stored = fingerprint.stored()
        failures = [
            {
                "image_id": f.image_id,
                "filter_spec": f.filter_spec,
                "error": f.error,
                "attempts": f.attempts,
                "last_failed_at": f.last_failed_at.isoformat(),
            }
            for f in status.failures()
        ]
        not_ready = [
            {"post_id": p.post_id, "title": p.title, "required": p.required, "pending": p.pending, "failed": p.failed}
            for p in status.posts_not_ready()
        ]
        data: dict[str, Any] = {
            "broker_queue": status.broker_queue_size(),
            "queued_images": status.queued_images().count(),
            "in_flight": list(status.in_flight().values_list("image_id", flat=True)),
            "failures": failures,
            "posts_not_ready": not_ready,
            "pending_deletions": status.pending_deletions().count(),
            "overdue_deletions": status.overdue_deletions().count(),
            "drafts": preview.draft_status(),
            "fingerprint_current": fingerprint.fingerprint(),
            "fingerprint_stored": stored.fingerprint if stored else None,
        }
        lines = [
            f"Broker queue: {data['broker_queue'] if data['broker_queue'] is not None else 'unknown'} task(s); "
            f"{data['queued_images']} image(s) queued, {len(data['in_flight'])} in flight.",
            f"Deletions: {data['pending_deletions']} pending, {data['overdue_deletions']} overdue.",
            f"Failures: {len(failures)}.",
        ]
        lines += [f"  image {f['image_id']} {f['filter_spec']}: {f['error']} ({f['attempts']}x)" for f in failures]
        drafts = data["drafts"]
        lines.append(
            f"Previewed drafts: {drafts['drafts']} claim {drafts['renditions']} rendition(s), "
            f"{drafts['missing']} not made yet, {drafts['expired']} claim(s) expired."
        )
        lines.append(f"Posts not fully rendered: {len(not_ready)}.")
        lines += [f"  post {p['post_id']} {p['title']}: {p['pending']}/{p['required']} pending" for p in not_ready]
        if stored is None:
            lines.append("Settings fingerprint: not stored yet (run `auto_renditions sync`).")
        elif stored.fingerprint != data["fingerprint_current"]:
            lines.append("Settings changed since the last sync: run `auto_renditions sync --prune`.")
        self.emit(data, lines)


def _bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"
