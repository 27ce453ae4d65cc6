"""Property-based tests of the ledger: any interleaving of accept / complete / drop (drain) / commit /
abort / revoke / assign / lost / crash keeps the delivery promise.

A tiny model of Kafka stands around the ledger: one log per partition, the group's committed offsets,
a consumer position, and the committed outcomes (what a read_committed reader sees). Hypothesis
picks the steps; after every step no committed offset passes a request without a committed outcome
and no request has two; once the model settles (a fresh member takes everything and finishes it)
every request has exactly one.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import example, given, settings
from hypothesis import strategies as st

from processor.ledger import TP, Entry, Ledger

PARTITIONS: list[TP] = [("req", 0), ("req", 1)]
# The worker's everyday steps come up more often than the rare events, so that interesting states
# (several requests in flight, some finished out of order) are reached before a crash wipes them.
OPS = (["deliver"] * 4 + ["complete"] * 3 + ["drain"] * 2 + ["commit"] * 2
       + ["claim", "abort", "crash", "revoke", "lost", "assign", "produce"])


class Model:
    def __init__(self, sizes: list[int]) -> None:
        self.log_size = dict(zip(PARTITIONS, sizes, strict=True))
        self.committed: dict[TP, int] = dict.fromkeys(PARTITIONS, 0)
        self.outcomes: Counter[tuple[TP, int]] = Counter()
        self.new_member()

    def new_member(self) -> None:
        """A fresh process (after a crash or a drained shutdown) that the group assigns everything."""
        self.ledger: Ledger[Entry] = Ledger()
        self.assigned: set[TP] = set()
        self.position: dict[TP, int] = {}
        for tp in PARTITIONS:
            self.assign(tp)

    # ------------------------------------------------------------------ Kafka's side

    def assign(self, tp: TP) -> None:
        if tp not in self.assigned:
            self.assigned.add(tp)
            self.position[tp] = self.committed[tp]  # a new assignment fetches from the committed offset
            self.ledger.assign([tp])

    def revoke(self, tp: TP) -> None:
        if tp in self.assigned:
            self.commit(16)  # on_revoke: commit what is finished first
            self.ledger.revoke([tp])
            self.assigned.discard(tp)

    def lost(self, tp: TP) -> None:
        if tp in self.assigned:
            self.ledger.lost([tp])
            self.assigned.discard(tp)

    def deliver(self, tp: TP) -> None:
        if tp in self.assigned and self.position[tp] < self.log_size[tp]:
            self.ledger.accept(Entry(tp, self.position[tp]))
            self.position[tp] += 1

    # ------------------------------------------------------------------ the worker's side

    def live(self) -> list[Entry]:
        return [e for entries in self.ledger.entries.values() for e in entries if e.live]

    def complete(self, pick: int) -> None:
        """A stage hands in an outcome: any request, in any order. Counted from the newest, so the
        simplest examples Hypothesis tries first finish requests out of order (the interesting case)."""
        if live := self.live():
            e = live[-1 - pick % len(live)]
            self.ledger.complete(e, (e.tp, e.offset))

    def claim(self, pick: int) -> None:
        """A stage thread takes a request (on the GPU a drain lets it finish)."""
        if live := self.live():
            live[pick % len(live)].advance("synthesizing" if pick % 2 else "preparing")

    def commit(self, limit: int) -> None:
        ready = self.ledger.committable(limit)
        if not ready:
            return
        offsets: dict[TP, int] = {}
        for e in ready:
            assert e.tp in self.assigned, "committing for a partition we do not hold"
            offsets[e.tp] = e.offset + 1
        for e in ready:  # the transaction: outcomes and offsets together
            self.outcomes[e.outcome] += 1  # type: ignore[index]
        self.committed.update(offsets)
        self.ledger.committed_ok(ready)

    def drain(self) -> None:
        """SIGTERM: the loop drains, then commits whatever is committable."""
        self.ledger.drain()
        self.commit(16)

    def abort(self) -> None:
        """The transaction failed: nothing of it is visible; rewind to the committed offsets."""
        for tp in self.ledger.rewind():
            self.position[tp] = self.committed[tp]

    def step(self, op: str, n: int) -> None:
        tp = PARTITIONS[n % 2]
        if op == "deliver":
            self.deliver(tp)
        elif op == "complete":
            self.complete(n)
        elif op == "claim":
            self.claim(n)
        elif op == "commit":
            self.commit(1 + n % 4)
        elif op == "drain":
            self.drain()
        elif op == "abort":
            self.abort()
        elif op == "crash":
            self.new_member()
        elif op == "revoke":
            self.revoke(tp)
        elif op == "lost":
            self.lost(tp)
        elif op == "assign":
            self.assign(tp)
        elif op == "produce":
            self.log_size[tp] += 1 + n % 3

    # ------------------------------------------------------------------ the promise

    def check(self) -> None:
        for tp, c in self.committed.items():
            for off in range(c):
                assert self.outcomes[(tp, off)] >= 1, f"committed {tp}@{c} past {off}, which has no outcome"
        dup = {k: n for k, n in self.outcomes.items() if n > 1}
        assert not dup, f"duplicate outcomes: {dup}"

    def settle(self) -> None:
        """A fresh member takes every partition and finishes everything."""
        self.new_member()
        for tp in PARTITIONS:
            while self.position[tp] < self.log_size[tp]:
                self.deliver(tp)
        for e in self.live():
            self.ledger.complete(e, (e.tp, e.offset))
        self.commit(10_000)
        for tp in PARTITIONS:
            for off in range(self.log_size[tp]):
                assert self.outcomes[(tp, off)] == 1, f"{tp}@{off} has {self.outcomes[(tp, off)]} outcomes"


@settings(max_examples=200, deadline=None)
# Defect 1 as an anchor: offset 0 still queued, offset 1 finished (an error result), then SIGTERM.
@example(sizes=[2, 1], steps=[("deliver", 0), ("deliver", 0), ("complete", 0), ("drain", 0)])
@given(sizes=st.lists(st.integers(1, 6), min_size=2, max_size=2),
       steps=st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 5)), min_size=5, max_size=40))
def test_the_ledger_never_commits_past_a_request_without_an_outcome(sizes: list[int],
                                                                     steps: list[tuple[str, int]]) -> None:
    model = Model(sizes)
    for op, n in steps:
        model.step(op, n)
        model.check()
    model.settle()
