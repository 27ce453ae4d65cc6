"""The Session contract: ONE set of checks that every ``processor.session.Session`` must pass, so the
in-memory session the fast tests rely on cannot drift from what Kafka does.

``SessionContract`` holds the checks; a runner subclasses it and supplies a ``cluster`` fixture:
- ``tests/unit/test_session_contract.py``: the in-memory broker (milliseconds, no Kafka);
- ``tests/integration/test_session_contract_kafka.py``: ``KafkaSession`` on the real broker.

A ``Cluster`` is the little a check needs from a backend: topics, records produced from outside,
sessions that join a group, a rebalance that takes one partition away and gives it back, and the
committed records of a topic as a ``read_committed`` reader sees them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import pytest

from processor.session import TP, FatalKafkaError, Record, Session


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


def poll_until_one(s: Session) -> list[Record]:
    got = poll_until(lambda got: len(got) >= 1, s)
    return got[:1]


def poll_for(session: Session, seconds: float) -> list[Record]:
    got: list[Record] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        r = session.poll(0.05)
        if r is not None:
            got.append(r)
    return got


def joined(cluster: Cluster, topic: str, member: str = "a") -> tuple[Session, Recorder]:
    s = cluster.session(f"{topic}-group", member)
    rec = Recorder()
    cluster.start(s, topic, rec)
    return s, rec


class SessionContract:
    """What the processor relies on from a session. Runners subclass this and define ``cluster``."""

    def test_poll_delivers_each_partition_in_offset_order(self, cluster: Cluster) -> None:
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

    def test_commit_is_atomic_and_the_next_member_starts_after_it(self, cluster: Cluster) -> None:
        topic, out = cluster.topic(1), cluster.topic(1)
        cluster.produce(topic, 0, [b"r0", b"r1", b"r2"])
        s, _ = joined(cluster, topic)
        poll_until(lambda got: len(got) >= 2, s)
        s.commit([Out(out, b"r0", b"result-0", []), Out(out, b"r1", b"result-1", [])], {(topic, 0): 2})
        assert cluster.read_committed(out, 2) == [b"result-0", b"result-1"]
        s.close()
        s2, _ = joined(cluster, topic, "b")
        assert poll_until_one(s2)[0].offset == 2

    def test_offsets_sent_early_commit_with_the_records(self, cluster: Cluster) -> None:
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

    def test_records_produced_early_commit_once_and_only_if_the_commit_names_them(self, cluster: Cluster) -> None:
        topic, out = cluster.topic(1), cluster.topic(1)
        cluster.produce(topic, 0, [b"r0", b"r1"])
        s, _ = joined(cluster, topic)
        poll_until(lambda got: len(got) >= 2, s)
        first = Out(out, b"r0", b"result-0", [])
        s.begin({(topic, 0): 1}, [first])  # produced while its audio uploads
        s.commit([first], {(topic, 0): 1})  # the very same record: not produced a second time
        # The second upload failed: its error outcome commits; the success produced early never shows.
        s.begin({(topic, 0): 2}, [Out(out, b"r1", b"success-1", [])])
        s.commit([Out(out, b"r1", b"error-1", [])], {(topic, 0): 2})
        s.commit([Out(out, None, b"marker", [])], {(topic, 0): 2})
        assert cluster.read_committed(out, 3) == [b"result-0", b"error-1", b"marker"]

    def test_commit_opened_commits_the_early_transaction_once_and_only_with_its_own_records(
            self, cluster: Cluster) -> None:
        """The finish thread commits the transaction the loop opened the moment the audio is stored
        (``commit_opened``); the loop's later commit naming the same record completes without producing
        it again, even when another commit came in between; anything else leaves it to the loop."""
        topic, out = cluster.topic(2), cluster.topic(1)
        cluster.produce(topic, 0, [b"a0", b"a1", b"a2"])
        cluster.produce(topic, 1, [b"b0"])
        s, _ = joined(cluster, topic)
        poll_until(lambda got: len(got) >= 4, s)
        a0 = Out(out, b"a0", b"result-a0", [])
        s.begin({(topic, 0): 1}, [a0])
        s.commit_opened([Out(out, b"a0", b"result-a0", [])])  # an equal record, not the same one: ignored
        s.commit_opened([a0])
        assert poll_for(s, 0.2) == []  # (the in-memory session acts on it at the next call, as Kafka's own thread)
        assert cluster.read_committed(out, 1) == [b"result-a0"]  # visible before the loop's commit
        s.commit([Out(out, b"b0", b"result-b0", [])], {(topic, 1): 1})  # another job's, in between
        s.abort_open()  # committed already: nothing to roll back
        s.commit([a0], {(topic, 0): 1})  # the loop names it: nothing left to do
        # Opened, then not stored as produced (its upload failed): the error outcome commits instead.
        s.begin({(topic, 0): 2}, [Out(out, b"a1", b"success-a1", [])])
        s.commit_opened([Out(out, b"a1", b"error-a1", [])])
        s.commit([Out(out, b"a1", b"error-a1", [])], {(topic, 0): 2})
        # Rolled back before the finish thread asked: nothing commits early.
        a2 = Out(out, b"a2", b"result-a2", [])
        s.begin({(topic, 0): 3}, [a2])
        s.abort_open()
        s.commit_opened([a2])
        s.commit([Out(out, None, b"marker", [])], {(topic, 1): 1})
        assert cluster.read_committed(out, 4) == [b"result-a0", b"result-b0", b"error-a1", b"marker"]
        s.close()
        s2, _ = joined(cluster, topic, "b")
        assert [(r.partition, r.offset) for r in poll_until_one(s2)] == [(0, 2)]

    def test_an_early_transaction_rolled_back_or_not_covered_commits_nothing_of_it(self, cluster: Cluster) -> None:
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

    def test_seek_to_committed_rewinds_to_the_last_commit(self, cluster: Cluster) -> None:
        topic, out = cluster.topic(1), cluster.topic(1)
        cluster.produce(topic, 0, [b"r0", b"r1", b"r2", b"r3"])
        s, _ = joined(cluster, topic)
        poll_until(lambda got: len(got) >= 3, s)
        s.commit([Out(out, None, b"x", [])], {(topic, 0): 1})
        assert s.seek_to_committed([(topic, 0)]) == []
        again = poll_until_one(s)
        assert again[0].offset == 1

    def test_pause_stops_delivery_and_resume_restores_it(self, cluster: Cluster) -> None:
        topic = cluster.topic(1)
        s, rec = joined(cluster, topic)
        poll_until(lambda _: bool(rec.assigned), s)
        s.pause([(topic, 0)])
        cluster.produce(topic, 0, [b"r0", b"r1"])
        assert poll_for(s, cluster.quiet) == []
        s.resume([(topic, 0)])
        got = poll_until(lambda got: len(got) >= 2, s)
        assert [r.offset for r in got] == [0, 1]

    def test_waiting_tells_whether_more_is_there_than_poll_handed_over(self, cluster: Cluster) -> None:
        """The processor pauses intake only when something would otherwise come in (``Ledger.flow``)."""
        topic = cluster.topic(1)
        tp = (topic, 0)
        cluster.produce(topic, 0, [b"r0", b"r1"])
        s, _ = joined(cluster, topic)
        assert [r.offset for r in poll_until_one(s)] == [0]
        assert s.waiting([tp])
        assert [r.offset for r in poll_until_one(s)] == [1]
        assert not s.waiting([tp])
        cluster.produce(topic, 0, [b"r2"])
        deadline = time.monotonic() + 30
        while not s.waiting([tp]):  # learnt from the next fetch, without a poll() taking it
            assert time.monotonic() < deadline, "the new record was never seen waiting"
            time.sleep(0.01)
        assert [r.offset for r in poll_until_one(s)] == [2]
        assert not s.waiting([tp])

    def test_a_pause_survives_revoke_and_reassign_until_resume(self, cluster: Cluster) -> None:
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

    def test_a_fenced_member_gets_a_fatal_error(self, cluster: Cluster) -> None:
        """A restarted pod (same transactional id) fences its zombie: the zombie's commit is fatal."""
        topic, out = cluster.topic(1), cluster.topic(1)
        cluster.produce(topic, 0, [b"r0"])
        s, _ = joined(cluster, topic)
        poll_until_one(s)
        twin = cluster.session(f"{topic}-group", "a")
        twin.start(f"{topic}-other", Recorder())  # init_transactions with the same id
        with pytest.raises(FatalKafkaError):
            s.commit([Out(out, None, b"zombie", [])], {(topic, 0): 1})
