"""Signals of auto_renditions that a site can hook into (all sent by the app, never by Django)."""

from django.dispatch import Signal

__all__ = ["claims_changed", "renditions_deleted", "renditions_failed", "renditions_generated"]

#: A ledger transaction changed claims. ``change``: :class:`auto_renditions.ledger.LedgerChange`
#: (``added``, ``removed``, ``released`` as ``(image_id, filter_spec)`` sets). Sent inside the transaction.
claims_changed = Signal()

#: A worker made renditions. ``image``, ``filter_specs``. Sent after they were saved.
renditions_generated = Signal()

#: A worker could not make renditions. ``image``, ``errors``: ``{filter_spec: message}``.
renditions_failed = Signal()

#: The app deleted rendition rows (due deletions, ``sync --prune``, ``check --fix``, renditions of a replaced
#: original). ``image_id``, ``filter_specs``: the specs whose rows went. Sent once per image inside the deleting
#: transaction; the files are removed on commit.
renditions_deleted = Signal()
