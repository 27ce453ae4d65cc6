"""An in-memory Kafka for fast tests: ``MemoryBroker`` holds the logs and committed offsets, and
``MemorySession`` implements ``processor.session.Session`` against it.

It models what the processor relies on, and nothing more:
- one consumer group; partitions are assigned, revoked or lost by the test (``assign`` / ``revoke`` /
  ``lose``), delivered to the session's listener inside its next ``poll``, as librdkafka does;
- an application pause survives revoke and re-assign until ``resume`` (librdkafka's behaviour, and the
  reason the session resumes at every assignment change);
- a transaction is atomic: its records become visible and its offsets committed together, or neither;
  offsets for a partition the session does not hold are fenced (the transaction aborts);
- topic size limits (``max_record_bytes``): a larger record fails its transaction for good;
- injected faults: the next commit aborts or is fatal, a seek fails, a session crashes (it vanishes
  without callbacks, its uncommitted work is simply gone), or a commit gets stuck: its transaction is
  in doubt while the producer is replaced (``REPLACE_POLLS`` polls, during which commits abort and
  seeks fail, like ``KafkaSession``), then it is aborted ("stuck") or found committed
  ("stuck-commits": the stuck producer's commit reached the broker before the new one fenced it).

The Session contract (tests/support/session_contract.py) runs the same checks against this
(tests/unit/test_session_contract.py) and the real broker (tests/integration/test_session_contract_kafka.py).
"""

from __future__ import annotations

import itertools
import time
import zlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from processor.session import (
    TP,
    EarlyCommit,
    FatalKafkaError,
    OutcomeRefused,
    OutRecord,
    Rebalance,
    Record,
    TransactionAborted,
    Watermarks,
    settle_early,
)

# The longest an empty poll() sleeps, whatever its timeout: long enough to hand the GIL to the stage
# threads, short enough that a test never waits on it.
IDLE_POLL_NAP = 0.001


@dataclass(frozen=True)
class Stored:
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


# How many polls a producer replacement takes in the memory session.
REPLACE_POLLS = 3


class Crashed(Exception):
    """The session was crashed by the test; like a killed process, it can do nothing more."""


@dataclass
class MemoryBroker:
    logs: dict[TP, list[Stored]] = field(default_factory=dict)
    committed: dict[TP, int] = field(default_factory=dict)
    owner: dict[TP, MemorySession] = field(default_factory=dict)
    producers: dict[str, MemorySession] = field(default_factory=dict)  # transactional id -> newest session
    transactions: int = 0
    # A topic's max.message.bytes (key + value + headers here): a larger record is refused for good.
    max_record_bytes: dict[str, int] = field(default_factory=dict)

    def create_topic(self, topic: str, partitions: int = 1) -> None:
        for p in range(partitions):
            self.logs.setdefault((topic, p), [])

    def produce(self, topic: str, partition: int, value: bytes | None, key: bytes | None = None,
                headers: list[tuple[str, bytes]] | None = None) -> int:
        log = self.logs.setdefault((topic, partition), [])
        log.append(Stored(key, value, list(headers or [])))
        return len(log) - 1

    def read(self, topic: str) -> list[Stored]:
        """Every committed record of ``topic`` (all partitions, in partition then offset order)."""
        return [r for (t, _), log in sorted(self.logs.items()) if t == topic for r in log]

    def partitions(self, topic: str) -> list[TP]:
        return sorted(tp for tp in self.logs if tp[0] == topic)

    def session(self) -> MemorySession:
        return MemorySession(self)

    # ------------------------------------------------------------------ scripted group membership

    def assign(self, session: MemorySession, tps: list[TP]) -> None:
        for tp in tps:
            old = self.owner.get(tp)
            if old is not None and old is not session:
                raise AssertionError(f"{tp} is still held by another session: revoke or lose it first")
            self.owner[tp] = session
        session.events.append(("assign", list(tps)))

    def revoke(self, session: MemorySession, tps: list[TP]) -> None:
        """A cooperative revoke: the session may still commit for ``tps`` in its on_revoke."""
        session.events.append(("revoke", list(tps)))

    def lose(self, session: MemorySession, tps: list[TP]) -> None:
        """The session's membership expired: someone else may own the partitions now."""
        for tp in tps:
            if self.owner.get(tp) is session:
                del self.owner[tp]
        session.events.append(("lost", list(tps)))


class MemorySession:
    """``processor.session.Session`` over a ``MemoryBroker``."""

    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker
        self.listener: Rebalance | None = None
        self.topic: str | None = None
        self.events: deque[tuple[str, list[TP]]] = deque()
        self.assigned: list[TP] = []
        self.positions: dict[TP, int] = {}
        self.paused: set[TP] = set()
        self.faults: deque[str] = deque()  # "abort" | "fatal" | "stuck" | "stuck-commits" for the next commits
        self.replacing = 0  # polls until the producer replacement after a stuck commit is done
        # The stuck transaction: its records and offsets, and whether it turns out committed.
        self.in_doubt: tuple[list[OutRecord], dict[TP, int], bool] | None = None
        self.replacements = 0
        self.seek_failures = 0
        self.crashed = False
        self.closed = False
        self.opened: dict[TP, int] | None = None  # offsets sent by begin() in the open transaction
        self.begins = 0
        self.produced: tuple[OutRecord, ...] = ()  # records begin() put in the open transaction
        self.early_produced = 0  # commits that committed what begin() had produced
        # commit_opened() asks from another thread; like KafkaSession's own call thread, this session
        # acts on it before the next call from the poll loop (``_settle``).
        self.early_asks: deque[tuple[OutRecord, ...]] = deque()
        self.committed_early: list[EarlyCommit] = []
        self.early_commits = 0
        self.aborted_open = 0
        self.txn_id: str | None = None
        self.fenced = False  # sessions with the same id fence each other, newest wins
        self._rr = itertools.count()

    # ------------------------------------------------------------------ faults

    def fail_next_commit(self, kind: str = "abort") -> None:
        assert kind in ("abort", "fatal", "stuck", "stuck-commits")
        self.faults.append(kind)

    def _replaced(self) -> None:
        """The new producer has fenced the stuck one: the transaction in doubt ends one way or the
        other (committed only if this member still held its partitions when it reached the broker)."""
        assert self.in_doubt is not None
        records, offsets, commits = self.in_doubt
        self.in_doubt = None
        if commits and all(self.broker.owner.get(tp) is self for tp in offsets):
            self._write(records, offsets)

    def crash(self) -> None:
        """Like SIGKILL: the session is gone; its partitions are free for another session."""
        if self.in_doubt is not None:
            self._replaced()  # a stuck commit that had reached the broker stays committed
        self.crashed = True
        for tp, owner in list(self.broker.owner.items()):
            if owner is self:
                del self.broker.owner[tp]
        self.assigned = []

    def _alive(self) -> None:
        if self.crashed:
            raise Crashed

    # ------------------------------------------------------------------ Session

    def start(self, topic: str, listener: Rebalance) -> None:
        self._alive()
        self.topic = topic
        self.listener = listener
        if self.txn_id is not None:
            self.broker.producers[self.txn_id] = self

    def poll(self, timeout: float) -> Record | None:
        self._alive()
        self._settle()
        if self.replacing:
            self.replacing -= 1
            if not self.replacing:
                self._replaced()
        self._deliver_events()
        ready = [tp for tp in self.assigned if tp not in self.paused
                 and self.positions.get(tp, 0) < len(self.broker.logs.get(tp, []))]
        if not ready:
            # Kafka's poll blocks while nothing arrives; a test stepping the loop would otherwise spin
            # and hold the GIL against the stage threads it is waiting for. A short nap stands in.
            time.sleep(min(timeout, IDLE_POLL_NAP))
            return None
        tp = ready[next(self._rr) % len(ready)]
        offset = self.positions.get(tp, 0)
        self.positions[tp] = offset + 1
        r = self.broker.logs[tp][offset]
        return Record(tp[0], tp[1], offset, r.key, r.value, list(r.headers))

    def _deliver_events(self) -> None:
        assert self.listener is not None
        while self.events:
            kind, tps = self.events.popleft()
            if kind == "assign":
                new = [tp for tp in tps if tp not in self.assigned]
                self.assigned += new
                for tp in new:
                    self.positions[tp] = self.broker.committed.get(tp, 0)
                self.listener.on_assign(new)
            elif kind == "revoke":
                held = [tp for tp in tps if tp in self.assigned]
                self.listener.on_revoke(held)
                for tp in held:
                    self.assigned.remove(tp)
                    if self.broker.owner.get(tp) is self:
                        del self.broker.owner[tp]
            else:
                held = [tp for tp in tps if tp in self.assigned]
                for tp in held:
                    self.assigned.remove(tp)
                self.listener.on_lost(held)

    def pause(self, tps: list[TP]) -> None:
        self._alive()
        self.paused.update(tps)

    def resume(self, tps: list[TP]) -> None:
        self._alive()
        self.paused.difference_update(tps)

    def seek_to_committed(self, tps: list[TP]) -> list[TP]:
        self._alive()
        if self.replacing:  # the committed offsets are not final until the stuck producer is fenced
            return list(tps)
        if self.seek_failures > 0:
            self.seek_failures -= 1
            return list(tps)
        failed = []
        for tp in tps:
            if tp not in self.assigned:
                failed.append(tp)
                continue
            self.positions[tp] = self.broker.committed.get(tp, 0)
        return failed

    def begin(self, offsets: dict[TP, int], records: Sequence[OutRecord] = ()) -> None:
        self._alive()
        self._settle()
        if self.replacing:
            raise TransactionAborted("the transactional producer is being replaced")
        for tp in offsets:
            if self.broker.owner.get(tp) is not self:
                self.opened, self.produced = None, ()
                raise TransactionAborted(f"fenced: {tp} is not held by this member")
        if records and any(r is d for r in records for e in self.committed_early for d in e[0]):
            return  # committed already (commit_opened)
        self.opened = {**(self.opened or {}), **offsets}
        if records and not self.produced:
            self.produced = tuple(records)
        self.begins += 1

    def commit_opened(self, records: Sequence[OutRecord]) -> None:
        self.early_asks.append(tuple(records))  # a deque: safe from the finish thread

    def _settle(self) -> None:
        while self.early_asks:
            records = self.early_asks.popleft()
            if (self.opened is None or not _same(self.produced, records) or self.replacing or self.faults
                    or self.fenced or any(self.broker.owner.get(tp) is not self for tp in self.opened)
                    or self._refused(records)):
                continue  # left to the loop's commit, which meets whatever stopped it here
            self._write(records, self.opened)
            self.committed_early.append((records, self.opened))
            self.opened, self.produced = None, ()
            self.early_produced += 1
            self.early_commits += 1

    def abort_open(self) -> None:
        self._alive()
        self._settle()
        if self.opened is not None:
            self.opened = None
            self.produced = ()
            self.aborted_open += 1

    def commit(self, records: Sequence[OutRecord], offsets: dict[TP, int]) -> None:
        self._alive()
        self._settle()
        if self.replacing:
            raise TransactionAborted("the transactional producer is being replaced")
        settled = settle_early(self.committed_early, records, offsets)
        if settled is not None:
            self.committed_early, keep, offsets = settled
            if not keep and not offsets:
                return
            try:
                self.commit([records[i] for i in keep], offsets)
            except OutcomeRefused as exc:
                raise OutcomeRefused({keep[i]: why for i, why in exc.refused.items()}) from exc
            return
        same = _same(self.produced, records)
        if self.opened is not None and (any(offsets.get(tp, -1) < off for tp, off in self.opened.items())
                                        or (self.produced and not same)):
            self.abort_open()
        self.early_produced += same
        self.opened, self.produced = None, ()
        if self.txn_id is not None and self.broker.producers.get(self.txn_id) is not self:
            raise FatalKafkaError("fenced: a newer session holds this transactional id")
        if self.fenced:
            raise FatalKafkaError("injected: producer fenced")
        if self.faults:
            kind = self.faults.popleft()
            if kind == "fatal":
                self.fenced = True  # like librdkafka: a fatal producer error is for good
                raise FatalKafkaError("injected: producer fenced")
            if kind.startswith("stuck"):
                self.in_doubt = (list(records), dict(offsets), kind == "stuck-commits")
                self.replacing = REPLACE_POLLS
                self.replacements += 1
                raise TransactionAborted("injected: a call outlived its budget; producer being replaced")
            raise TransactionAborted("injected abort")
        for tp in offsets:
            if self.broker.owner.get(tp) is not self:
                raise TransactionAborted(f"fenced: {tp} is not held by this member")
        refused = self._refused(records)
        if refused:
            raise OutcomeRefused(refused)
        self._write(records, offsets)

    def _refused(self, records: Sequence[OutRecord]) -> dict[int, str]:
        return {i: "MSG_SIZE_TOO_LARGE" for i, r in enumerate(records)
                if len(r.key or b"") + len(r.value) + sum(len(n) + len(v) for n, v in r.headers)
                > self.broker.max_record_bytes.get(r.topic, 1 << 62)}

    def _write(self, records: Sequence[OutRecord], offsets: dict[TP, int]) -> None:
        for r in records:
            partition = zlib.crc32(r.key) % max(1, len(self.broker.partitions(r.topic))) if r.key else 0
            self.broker.produce(r.topic, partition, r.value, r.key, list(r.headers))
        self.broker.committed.update(offsets)
        self.broker.transactions += 1

    def watermarks(self, tps: list[TP]) -> dict[TP, Watermarks]:
        return {tp: Watermarks(0, len(self.broker.logs.get(tp, [])), self.positions.get(tp)) for tp in tps}

    def waiting(self, tps: list[TP]) -> bool:
        return any(self.positions.get(tp, 0) < len(self.broker.logs.get(tp, [])) for tp in tps)

    def committed(self, tps: list[TP]) -> dict[TP, int | None]:
        self._alive()
        return {tp: self.broker.committed.get(tp) for tp in tps}

    def last_error(self) -> tuple[float, str] | None:
        return None

    def close(self) -> None:
        """Leave the group: revoke what the listener was told it holds, release everything else."""
        self._alive()
        self._settle()
        if self.closed:
            return
        if self.in_doubt is not None:
            self._replaced()
        self.closed = True
        if self.assigned and self.listener is not None:
            self.listener.on_revoke(list(self.assigned))
        self.assigned = []
        self.events.clear()
        for tp, owner in list(self.broker.owner.items()):
            if owner is self:
                del self.broker.owner[tp]


def _same(produced: tuple[OutRecord, ...], records: Sequence[OutRecord]) -> bool:
    return bool(produced) and len(produced) == len(records) and all(
        a is b for a, b in zip(produced, records, strict=True))
