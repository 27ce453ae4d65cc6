"""The Session contract, run against the in-memory session AND the real broker (KafkaSession on the
shared stack), so the fake the fast tests rely on cannot drift from what Kafka does.

The ``kafka`` variants are marked ``integration`` (they need the stack); the ``memory`` ones take
milliseconds and run with the unit suite.
"""

from __future__ import annotations

import contextlib
import itertools
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import pytest
from confluent_kafka import Producer

from processor.config import KafkaSettings
from processor.session import TP, FatalKafkaError, KafkaSession, Record, Session
from tests.support.memory_broker import MemoryBroker, MemorySession


@dataclass(frozen=True)
class Out:
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


class Recorder:
    """A rebalance listener that only remembers."""

    def __init__(self) -> None:
        self.assigned: set[TP] = set()
        self.events: list[tuple[str, list[TP]]] = []

    def on_assign(self, tps: list[TP]) -> None:
        self.assigned |= set(tps)
        self.events.append(("assign", tps))

    def on_revoke(self, tps: list[TP]) -> None:
        self.assigned -= set(tps)
        self.events.append(("revoke", tps))

    def on_lost(self, tps: list[TP]) -> None:
        self.assigned -= set(tps)
        self.events.append(("lost", tps))


class Cluster(Protocol):
    quiet: float  # how long "nothing arrives" must last to mean nothing will

    def topic(self, partitions: int) -> str: ...
    def produce(self, topic: str, partition: int, values: list[bytes], headers: list[tuple[str, bytes]] | None = None
                ) -> None: ...
    def session(self, group: str, member: str) -> Session: ...
    def start(self, session: Session, topic: str, listener: Recorder) -> None: ...
    def bounce(self, session: Session, listener: Recorder, tp: TP) -> None: ...
    def read_committed(self, topic: str, n: int) -> list[bytes]: ...
    def close(self) -> None: ...


class MemoryCluster:
    quiet = 0.05

    def __init__(self) -> None:
        self.broker = MemoryBroker()
        self._n = itertools.count()
        self.producers: dict[str, MemorySession] = {}

    def topic(self, partitions: int) -> str:
        name = f"t{next(self._n)}"
        self.broker.create_topic(name, partitions)
        return name

    def produce(self, topic: str, partition: int, values: list[bytes], headers: list[tuple[str, bytes]] | None = None
                ) -> None:
        for v in values:
            self.broker.produce(topic, partition, v, b"k", headers)

    def session(self, group: str, member: str) -> Session:
        s = self.broker.session()
        s.txn_id = f"{group}-{member}"
        return s

    def start(self, session: Session, topic: str, listener: Recorder) -> None:
        assert isinstance(session, MemorySession)
        session.start(topic, listener)
        free = [tp for tp in self.broker.partitions(topic) if tp not in self.broker.owner]
        self.broker.assign(session, free)

    def bounce(self, session: Session, listener: Recorder, tp: TP) -> None:
        assert isinstance(session, MemorySession)
        self.broker.revoke(session, [tp])
        session.poll(0)
        self.broker.assign(session, [tp])
        session.poll(0)

    def read_committed(self, topic: str, n: int) -> list[bytes]:
        return [r.value or b"" for r in self.broker.read(topic)]

    def close(self) -> None:
        pass


class KafkaCluster:
    quiet = 3.0

    def __init__(self, stack: Any) -> None:
        self.stack = stack
        self.prefix = f"contract-{uuid.uuid4().hex[:8]}"
        self._n = itertools.count()
        self.sessions: list[KafkaSession] = []

    def topic(self, partitions: int) -> str:
        name = f"{self.prefix}-{next(self._n)}"
        self.stack.create_topics({name: partitions})
        return name

    def produce(self, topic: str, partition: int, values: list[bytes], headers: list[tuple[str, bytes]] | None = None
                ) -> None:
        p = Producer({"bootstrap.servers": self.stack.kafka_bootstrap, "enable.idempotence": True})
        for v in values:
            p.produce(topic, v, b"k", partition=partition, headers=headers)
        assert p.flush(30) == 0

    def session(self, group: str, member: str) -> Session:
        k = KafkaSettings(bootstrap_servers=self.stack.kafka_bootstrap, group_id=group, session_timeout_ms=6000)
        s = KafkaSession.connect(k, member, budget_seconds=20)
        self.sessions.append(s)
        return s

    def start(self, session: Session, topic: str, listener: Recorder) -> None:
        session.start(topic, listener)

    def bounce(self, session: Session, listener: Recorder, tp: TP) -> None:
        """A second member joins (cooperative-sticky moves one partition to it), then leaves: the
        partitions it took come back to ``session``."""
        other = Recorder()
        b = self.session(f"{tp[0]}-group", f"b-{uuid.uuid4().hex[:4]}")
        b.start(tp[0], other)
        poll_until(lambda _: bool(other.assigned), session, b, timeout=60)
        moved = set(other.assigned)
        b.close()
        poll_until(lambda _: moved <= listener.assigned, session, timeout=60)
        assert tp in moved or tp in listener.assigned

    def read_committed(self, topic: str, n: int) -> list[bytes]:
        return _read_raw(self.stack.kafka_bootstrap, topic, n)

    def close(self) -> None:
        for s in self.sessions:
            with contextlib.suppress(Exception):  # a fenced or already closed session
                s.close()


def _read_raw(bootstrap: str, topic: str, n: int, timeout: float = 30, settle: float = 1.5) -> list[bytes]:
    from confluent_kafka import Consumer

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex[:8]}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False, "isolation.level": "read_committed"})
    c.subscribe([topic])
    out: list[bytes] = []
    deadline = time.monotonic() + timeout
    last = time.monotonic()
    try:
        while time.monotonic() < deadline:
            msg = c.poll(0.2)
            if msg is not None and not msg.error():
                out.append(msg.value() or b"")
                last = time.monotonic()
            elif len(out) >= n and time.monotonic() - last > settle:
                break
    finally:
        c.close()
    return out


def poll_until(cond: Callable[[list[Record]], bool], *sessions: Session, timeout: float = 30) -> list[Record]:
    """Poll ``sessions`` until ``cond(records polled so far)`` holds; returns those records."""
    got: list[Record] = []
    deadline = time.monotonic() + timeout
    while not cond(got):
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        for s in sessions:
            r = s.poll(0.05)
            if r is not None:
                got.append(r)
    return got


def poll_for(session: Session, seconds: float) -> list[Record]:
    got: list[Record] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        r = session.poll(0.05)
        if r is not None:
            got.append(r)
    return got


@pytest.fixture(params=["memory", pytest.param("kafka", marks=pytest.mark.integration)])
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    c: Cluster = MemoryCluster() if request.param == "memory" else KafkaCluster(request.getfixturevalue("stack"))
    yield c
    c.close()


def joined(cluster: Cluster, topic: str, member: str = "a") -> tuple[Session, Recorder]:
    s = cluster.session(f"{topic}-group", member)
    rec = Recorder()
    cluster.start(s, topic, rec)
    return s, rec


# ------------------------------------------------------------------ the contract


def test_poll_delivers_each_partition_in_offset_order(cluster: Cluster) -> None:
    topic = cluster.topic(2)
    cluster.produce(topic, 0, [b"a0", b"a1", b"a2"], headers=[("h", b"v")])
    cluster.produce(topic, 1, [b"b0", b"b1"])
    s, rec = joined(cluster, topic)
    got = poll_until(lambda got: len(got) >= 5, s)
    assert rec.assigned == {(topic, 0), (topic, 1)}
    for p in (0, 1):
        mine = [r for r in got if r.partition == p]
        assert [r.offset for r in mine] == list(range(len(mine)))
    first = next(r for r in got if r.partition == 0)
    assert (first.value, first.key, first.headers) == (b"a0", b"k", [("h", b"v")])


def test_commit_is_atomic_and_the_next_member_starts_after_it(cluster: Cluster) -> None:
    topic, out = cluster.topic(1), cluster.topic(1)
    cluster.produce(topic, 0, [b"r0", b"r1", b"r2"])
    s, _ = joined(cluster, topic)
    poll_until(lambda got: len(got) >= 2, s)
    s.commit([Out(out, b"r0", b"result-0", []), Out(out, b"r1", b"result-1", [])], {(topic, 0): 2})
    assert cluster.read_committed(out, 2) == [b"result-0", b"result-1"]
    s.close()
    s2, _ = joined(cluster, topic, "b")
    assert poll_until_one(s2)[0].offset == 2


def test_offsets_sent_early_commit_with_the_records(cluster: Cluster) -> None:
    topic, out = cluster.topic(1), cluster.topic(1)
    cluster.produce(topic, 0, [b"r0", b"r1", b"r2"])
    s, _ = joined(cluster, topic)
    poll_until(lambda got: len(got) >= 2, s)
    s.begin({(topic, 0): 1})  # while the first request's audio would still be uploading
    s.commit([Out(out, b"r0", b"result-0", []), Out(out, b"r1", b"result-1", [])], {(topic, 0): 2})
    assert cluster.read_committed(out, 2) == [b"result-0", b"result-1"]
    s.close()
    s2, _ = joined(cluster, topic, "b")
    assert poll_until_one(s2)[0].offset == 2


def test_an_early_transaction_rolled_back_or_not_covered_commits_nothing_of_it(cluster: Cluster) -> None:
    topic, out = cluster.topic(2), cluster.topic(1)
    cluster.produce(topic, 0, [b"a0", b"a1"])
    cluster.produce(topic, 1, [b"b0"])
    s, _ = joined(cluster, topic)
    poll_until(lambda got: len(got) >= 3, s)
    s.begin({(topic, 0): 1})
    s.abort_open()
    s.begin({(topic, 0): 2})
    s.commit([Out(out, b"b0", b"result-b0", [])], {(topic, 1): 1})  # does not cover partition 0: rolled back
    assert cluster.read_committed(out, 1) == [b"result-b0"]
    s.close()
    s2, _ = joined(cluster, topic, "b")
    assert {(r.partition, r.offset) for r in poll_until(lambda got: len(got) >= 2, s2)} == {(0, 0), (0, 1)}


def poll_until_one(s: Session) -> list[Record]:
    got = poll_until(lambda got: len(got) >= 1, s)
    return got[:1]


def test_seek_to_committed_rewinds_to_the_last_commit(cluster: Cluster) -> None:
    topic, out = cluster.topic(1), cluster.topic(1)
    cluster.produce(topic, 0, [b"r0", b"r1", b"r2", b"r3"])
    s, _ = joined(cluster, topic)
    poll_until(lambda got: len(got) >= 3, s)
    s.commit([Out(out, None, b"x", [])], {(topic, 0): 1})
    assert s.seek_to_committed([(topic, 0)]) == []
    again = poll_until_one(s)
    assert again[0].offset == 1


def test_pause_stops_delivery_and_resume_restores_it(cluster: Cluster) -> None:
    topic = cluster.topic(1)
    s, rec = joined(cluster, topic)
    poll_until(lambda _: bool(rec.assigned), s)
    s.pause([(topic, 0)])
    cluster.produce(topic, 0, [b"r0", b"r1"])
    assert poll_for(s, cluster.quiet) == []
    s.resume([(topic, 0)])
    got = poll_until(lambda got: len(got) >= 2, s)
    assert [r.offset for r in got] == [0, 1]


def test_a_pause_survives_revoke_and_reassign_until_resume(cluster: Cluster) -> None:
    """librdkafka keeps an application pause on the partition across revoke and re-assign (and
    seek does not clear it): why the processor resumes at every assignment change (defect 3)."""
    topic = cluster.topic(2)
    s, rec = joined(cluster, topic)
    poll_until(lambda _: len(rec.assigned) == 2, s)
    tps = sorted(rec.assigned)
    s.pause(tps)
    revoked_before = sum(1 for kind, _ in rec.events if kind == "revoke")
    for tp in tps:
        if sum(1 for kind, _ in rec.events if kind == "revoke") == revoked_before:
            cluster.bounce(s, rec, tp)
    assert rec.assigned == set(tps)
    bounced = {tp for kind, ev in rec.events if kind == "revoke" for tp in ev}
    assert bounced
    for tp in tps:
        cluster.produce(topic, tp[1], [b"after-rebalance"])
    assert [r for r in poll_for(s, cluster.quiet) if r.tp in bounced] == []
    s.resume(tps)
    poll_until(lambda got: {r.tp for r in got} >= bounced, s)


def test_a_fenced_member_gets_a_fatal_error(cluster: Cluster) -> None:
    """A restarted pod (same transactional id) fences its zombie: the zombie's commit is fatal."""
    topic, out = cluster.topic(1), cluster.topic(1)
    cluster.produce(topic, 0, [b"r0"])
    s, _ = joined(cluster, topic)
    poll_until_one(s)
    twin = cluster.session(f"{topic}-group", "a")
    twin.start(f"{topic}-other", Recorder())  # init_transactions with the same id
    with pytest.raises(FatalKafkaError):
        s.commit([Out(out, None, b"zombie", [])], {(topic, 0): 1})
