"""The source side's continuity rules, pure: what a reader of the topics does with each message.

:class:`BookContinuity` follows one book channel (the rules of Deribit's ``change_id`` chain, as
:class:`~deribit_kit.live.OrderBook` applies them); :class:`PartitionSequence` follows the sink's
per-partition numbering. Both answer with a verdict the source acts on, so the same rules are
tested here without Kafka and hold for any reader:

* a book waits (``syncing``) for a snapshot; from it, a change is applied when its
  ``prev_change_id`` is the last ``change_id`` (``FORWARD``); a change whose ``change_id`` is not
  newer is a duplicate (``DUPLICATE``, as after a consumer-group rebalance or a re-read); any other
  change breaks the chain (``BREAK``: forwarded once, so the book counts the gap itself, then
  ``resyncing``) and changes are dropped (``DROP``) until the next snapshot;
* the exchange's own snapshots are forwarded as they come (the live book took each one); a snapshot
  the sink built (``"by":"sink"``: on join, periodic, after a gap) or one read again is forwarded when
  the book needs one: a live book that already holds its ``change_id`` skips it (``REDUNDANT``), an
  older one is a duplicate;
* markers: ``resync``, ``gap`` and ``epoch_end`` make a live book resyncing (``INTERRUPT``: the
  source tells the broker, which marks the book and asks for a resync).
"""

from __future__ import annotations

from typing import Any, Final

__all__ = [
    "BREAK",
    "DROP",
    "DUPLICATE",
    "FORWARD",
    "INTERRUPT",
    "LIVE",
    "REDUNDANT",
    "RESYNCING",
    "SYNCING",
    "BookContinuity",
    "PartitionSequence",
]

SYNCING: Final = "syncing"
LIVE: Final = "live"
RESYNCING: Final = "resyncing"

FORWARD: Final = "forward"
BREAK: Final = "break"
DROP: Final = "drop"
DUPLICATE: Final = "duplicate"
REDUNDANT: Final = "redundant"
INTERRUPT: Final = "interrupt"
IGNORE: Final = "ignore"


class BookContinuity:
    """The chain of one book channel as a reader of the topic follows it."""

    __slots__ = ("change_id", "counts", "epoch", "state")

    def __init__(self) -> None:
        self.state: str = SYNCING
        self.change_id: int | None = None
        self.epoch: int | None = None
        self.counts: dict[str, int] = {}

    def _count(self, verdict: str) -> str:
        self.counts[verdict] = self.counts.get(verdict, 0) + 1
        return verdict

    def snapshot(self, data: Any, epoch: int, exchange: bool = False) -> str:
        """``exchange``: the exchange's own snapshot read in order (a subscribe, a resync, a
        reconnect): the live book took it, so this one does too. A snapshot the sink built, or one
        read again, serves only a book that needs it."""
        cid = data["change_id"]
        if not exchange and self.state == LIVE and self.epoch == epoch and self.change_id is not None:
            if cid == self.change_id:
                return self._count(REDUNDANT)
            if cid < self.change_id:
                return self._count(DUPLICATE)
        self.state = LIVE
        self.change_id = cid
        self.epoch = epoch
        return self._count(FORWARD)

    def change(self, data: Any, epoch: int) -> str:
        """A change continues the chain by ``prev_change_id`` alone: Deribit's change ids are the
        instrument's, not the connection's (after a reconnect the sink's snapshots come before its
        new epoch does)."""
        cid = data["change_id"]
        last = self.change_id
        if last is not None and cid <= last and self.state != SYNCING:
            return self._count(DUPLICATE)
        if self.state != LIVE:
            return self._count(DROP)
        if data["prev_change_id"] == last:
            self.change_id = cid
            self.epoch = epoch
            return self._count(FORWARD)
        self.state = RESYNCING
        return self._count(BREAK)

    def interrupt(self) -> str:
        """A ``resync``, ``gap`` or ``epoch_end`` marker, or lost messages of its partition."""
        if self.state == LIVE:
            self.state = RESYNCING
            return self._count(INTERRUPT)
        return self._count(IGNORE)

    def reset(self) -> None:
        """Forget the chain (the channel was unsubscribed): a snapshot starts it again."""
        self.state = SYNCING
        self.change_id = None
        self.epoch = None


class PartitionSequence:
    """The sink's numbering of one topic partition: ``s`` is 1, 2, ... within a sink run ``sid``."""

    __slots__ = ("duplicates", "last", "lost", "sid")

    def __init__(self) -> None:
        self.sid: str | None = None
        self.last = 0
        self.lost = 0
        self.duplicates = 0

    def see(self, sid: str, seq: int) -> int:
        """``-1``: a duplicate (skip it); ``0``: in order; ``n > 0``: ``n`` messages were lost before it."""
        if sid != self.sid:  # a new sink run (or the first message): its numbering starts here
            self.sid = sid
            self.last = seq
            return 0
        if seq <= self.last:
            self.duplicates += 1
            return -1
        missed = seq - self.last - 1
        self.last = seq
        self.lost += missed
        return missed
