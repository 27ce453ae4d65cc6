"""The partition ledger: which requests this member holds, and what it may commit. No Kafka here.

Every request taken from Kafka becomes an ``Entry`` in its partition's list, in offset order, stamped
with the partition's assignment epoch. The ledger answers the questions the poll loop asks:

- ``accept``: is this record ours to work on (partition assigned, not draining, not taken already)?
- ``committable``: per partition, the prefix of entries that have an outcome. It stops at the first
  entry without one (still working, or dropped), so a commit never moves past a request whose result
  is not in the same or an earlier transaction.
- ``assign`` / ``revoke`` / ``lost`` / ``rewind``: a new epoch per assignment (from one counter, so a
  re-assigned partition never reuses one); entries of a partition we no longer hold are dropped.
- ``drain``: stop intake; drop what has not reached the GPU, and with it everything after it in the
  same partition, so nothing later can be committed over it (the next owner redoes them all).
- ``flow``: which partitions to pause or resume so that no more than the intake limit is in flight.
  Pause state belongs to an assignment: a rebalance forgets it, and the session resumes the
  partitions (librdkafka keeps an application pause across revoke and re-assign).

Entries are shared with the stage threads, which move them forward with ``Entry.advance``; the poll
thread drops them with ``Entry.drop``. Both take the entry's lock, so a drop and a stage's claim of
the same entry cannot both win.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

TP = tuple[str, int]
State = Literal["queued", "preparing", "synthesizing", "finishing", "done", "dropped"]
# Work that a drain gives back to the next owner: it has not reached the GPU yet.
NOT_STARTED: frozenset[State] = frozenset({"queued", "preparing"})


@dataclass(eq=False)
class Entry:
    """One request taken from a partition. ``outcome`` is whatever the caller commits for it."""

    tp: TP
    offset: int
    epoch: int = 0
    state: State = "queued"
    outcome: object | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def advance(self, state: State) -> bool:
        """Move to a working state; False if the entry was dropped (or already done) meanwhile."""
        with self._lock:
            if self.state in ("dropped", "done"):
                return False
            self.state = state
            return True

    def drop(self, only: Iterable[State] | None = None) -> bool:
        """Drop the entry (only from the given states, if any); False if it was done or not in them."""
        with self._lock:
            if self.state == "done" or (only is not None and self.state not in only):
                return self.state == "dropped"
            self.state = "dropped"
            return True

    def discard(self) -> None:
        """Drop even a finished entry: its outcome will not be committed."""
        with self._lock:
            self.state = "dropped"

    def finish(self, outcome: object) -> bool:
        with self._lock:
            if self.state == "dropped":
                return False
            self.state, self.outcome = "done", outcome
            return True

    @property
    def live(self) -> bool:
        return self.state not in ("done", "dropped")


E = TypeVar("E", bound=Entry)


@dataclass(frozen=True)
class FlowDecision:
    pause: list[TP]
    resume: list[TP]


class Ledger(Generic[E]):
    def __init__(self) -> None:
        self._epoch_seq = itertools.count(1)
        self.epochs: dict[TP, int] = {}
        self.entries: dict[TP, list[E]] = {}
        self.next_offset: dict[TP, int] = {}
        self.committed: dict[TP, int] = {}  # offsets this member committed in the current epoch
        self.paused: set[TP] = set()
        # Rewound partitions whose seek failed (mid-rebalance, coordinator away): their records are
        # refused until a seek succeeds, or the next commit could skip over requests.
        self.held: set[TP] = set()
        self.draining = False

    # ------------------------------------------------------------------ assignment

    def assign(self, tps: Iterable[TP]) -> None:
        for tp in tps:
            self.epochs[tp] = next(self._epoch_seq)
            self._reset(tp)

    def revoke(self, tps: Iterable[TP]) -> list[E]:
        """Forget the partitions; returns their entries that were dropped (never to be committed)."""
        dropped: list[E] = []
        for tp in tps:
            dropped += self._forget(tp)
        return dropped

    lost = revoke  # the same for the ledger; the difference (commit first or not) is the caller's

    def rewind(self) -> list[TP]:
        """After an aborted transaction: drop everything uncommitted, new epochs; returns the partitions
        to seek back to their committed offsets."""
        tps = list(self.epochs)
        for tp in tps:
            self.epochs[tp] = next(self._epoch_seq)
            self._reset(tp)
        return tps

    def hold(self, tps: Iterable[TP]) -> None:
        """Refuse records from exactly these partitions (replacing the previous set)."""
        self.held = set(tps) & set(self.epochs)

    def _reset(self, tp: TP) -> None:
        for e in self.entries.get(tp, []):
            e.drop()
        self.entries[tp] = []
        self.held.discard(tp)
        self.next_offset.pop(tp, None)
        self.committed.pop(tp, None)
        self.paused.discard(tp)

    def _forget(self, tp: TP) -> list[E]:
        dropped = [e for e in self.entries.pop(tp, []) if e.drop()]
        self.epochs.pop(tp, None)
        self.next_offset.pop(tp, None)
        self.committed.pop(tp, None)
        self.paused.discard(tp)
        self.held.discard(tp)
        return dropped

    # ------------------------------------------------------------------ intake and outcomes

    def accept(self, entry: E) -> bool:
        """Take a delivered record, or say no: not ours, draining, or a re-delivery of one we hold."""
        tp = entry.tp
        if tp not in self.epochs or self.draining or tp in self.held:
            return False
        if entry.offset < self.next_offset.get(tp, -1):
            return False
        entry.epoch = self.epochs[tp]
        self.next_offset[tp] = entry.offset + 1
        self.entries[tp].append(entry)
        return True

    def current(self, entry: Entry) -> bool:
        return entry.state != "dropped" and self.epochs.get(entry.tp) == entry.epoch

    def complete(self, entry: E, outcome: object) -> bool:
        """Record a stage's outcome; False (and ignored) if the entry is stale or dropped."""
        if self.epochs.get(entry.tp) != entry.epoch:
            entry.drop()
            return False
        return entry.finish(outcome)

    def committable(self, limit: int) -> list[E]:
        """Per partition, the entries with an outcome up to the first one without (at most ``limit``)."""
        out: list[E] = []
        for entries in self.entries.values():
            for e in entries:
                if e.state != "done" or len(out) >= limit:
                    break
                out.append(e)
        return out

    def committed_ok(self, entries: list[E]) -> dict[TP, int]:
        """The transaction holding ``entries`` committed: remove them; returns the offsets committed."""
        offsets: dict[TP, int] = {}
        for e in entries:
            held = self.entries.get(e.tp)
            if not held or held[0] is not e:
                raise AssertionError(f"committed out of order: {e.tp}@{e.offset}")
            held.pop(0)
            offsets[e.tp] = e.offset + 1
        self.committed.update(offsets)
        return offsets

    # ------------------------------------------------------------------ drain and flow control

    def drain(self) -> list[E]:
        """Stop intake and drop the work that has not reached the GPU, plus everything after it in its
        partition (an outcome there must not be committed over the dropped request)."""
        self.draining = True
        dropped: list[E] = []
        for tp, entries in self.entries.items():
            for i, e in enumerate(entries):
                if e.state in NOT_STARTED and e.drop(only=NOT_STARTED):
                    for later in entries[i + 1:]:
                        later.discard()
                    dropped += entries[i:]
                    self.entries[tp] = entries[:i]
                    break
        return dropped

    def in_flight(self) -> int:
        return sum(1 for entries in self.entries.values() for e in entries if e.live)

    def busy(self) -> bool:
        return any(e.live for entries in self.entries.values() for e in entries)

    def flow(self, limit: int, waiting: Callable[[], bool] = lambda: True) -> FlowDecision:
        """Pause every partition once more than ``limit`` requests are in flight (or when draining);
        resume them when below.

        ``limit`` leaves room for one more to arrive before a pause takes effect. While nothing more
        is known to be ``waiting`` in the partitions (an idle worker), that room is used instead: the
        pause waits until one more actually arrives. A pause (and the resume and re-fetch it costs
        later) then happens only when there is something to hold back, never more than one request
        later than it would have, and not at all at one request at a time."""
        in_flight = self.in_flight()
        if (self.draining or in_flight > limit + 1
                or (in_flight > limit and (bool(self.paused) or waiting()))):
            pause = [tp for tp in self.epochs if tp not in self.paused]
            self.paused.update(pause)
            return FlowDecision(pause, [])
        resume = sorted(self.paused)  # none while at the limit with nothing waiting: never paused then
        self.paused.clear()
        return FlowDecision([], resume)
