"""KafkaSession's pause without Kafka: a paused partition stays in librdkafka's fetch and what arrives of
it is held by the session (up to HOLD_MAX_RECORDS, then it is paused in librdkafka too). Whatever the
order of pauses, resumes and polls, each partition's records come out once, in offset order, and none
while its partition is paused. The fake consumer below delivers like librdkafka: from its position,
round-robin over the partitions it is not paused on, and a resume fetches again from the position.
tests/support/session_contract.py holds the Kafka session to the same behaviour on a real broker."""

from __future__ import annotations

from typing import Any

from confluent_kafka import TopicPartition
from hypothesis import given, settings
from hypothesis import strategies as st

from processor.session import HOLD_MAX_RECORDS, KafkaSession, Record

TOPIC = "req"


class Msg:
    def __init__(self, partition: int, offset: int) -> None:
        self._p, self._o = partition, offset

    def topic(self) -> str:
        return TOPIC

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return f"{self._p}:{self._o}".encode()

    def error(self) -> None:
        return None

    def headers(self) -> None:
        return None


class Consumer:
    """librdkafka as the session sees it: ``pos`` is the application's position (after the last record
    delivered); a pause stops delivery, a resume + seek continues from the position."""

    def __init__(self, lengths: dict[int, int]) -> None:
        self.length = dict(lengths)
        self.pos = dict.fromkeys(lengths, 0)
        self.paused: set[int] = set()
        self.calls: list[tuple[str, list[int]]] = []
        self._next = 0

    def poll(self, timeout: float) -> Msg | None:
        parts = sorted(self.length)
        for i in range(len(parts)):
            p = parts[(self._next + i) % len(parts)]
            if p not in self.paused and self.pos[p] < self.length[p]:
                self._next = (self._next + i + 1) % len(parts)
                self.pos[p] += 1
                return Msg(p, self.pos[p] - 1)
        return None

    def pause(self, parts: list[TopicPartition]) -> None:
        self.calls.append(("pause", [t.partition for t in parts]))
        self.paused.update(t.partition for t in parts)

    def resume(self, parts: list[TopicPartition]) -> None:
        self.calls.append(("resume", [t.partition for t in parts]))
        self.paused.difference_update(t.partition for t in parts)

    def position(self, parts: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(TOPIC, t.partition, self.pos[t.partition]) for t in parts]

    def seek(self, tp: TopicPartition) -> None:
        self.pos[tp.partition] = tp.offset

    def get_watermark_offsets(self, tp: TopicPartition, cached: bool = False) -> tuple[int, int]:
        return 0, self.length[tp.partition]


class Listener:
    def __init__(self) -> None:
        self.revoked: list[Any] = []

    def on_assign(self, tps: list[Any]) -> None:
        pass

    def on_revoke(self, tps: list[Any]) -> None:
        self.revoked += tps

    def on_lost(self, tps: list[Any]) -> None:
        pass


def session(lengths: dict[int, int]) -> tuple[KafkaSession, Consumer]:
    c = Consumer(lengths)
    s = KafkaSession(c, object())  # type: ignore[arg-type]
    s._listener = Listener()
    return s, c


def drain(s: KafkaSession) -> list[Record]:
    out = []
    while (r := s.poll(0)) is not None:
        out.append(r)
    return out


def test_a_paused_partition_is_held_not_delivered_and_resumes_where_it_was() -> None:
    s, c = session({0: 5, 1: 3})
    s.pause([(TOPIC, 0)])
    got = drain(s)
    assert [(r.partition, r.offset) for r in got] == [(1, 0), (1, 1), (1, 2)]  # nothing of partition 0
    assert s.waiting([(TOPIC, 0)]) and not s.waiting([(TOPIC, 1)])  # fetched, held: waiting
    assert c.calls == []  # a short hold needs no pause (nor resume and re-fetch) in librdkafka
    s.resume([(TOPIC, 0)])
    assert [(r.partition, r.offset) for r in drain(s)] == [(0, i) for i in range(5)]
    assert c.calls == [] and not s.waiting([(TOPIC, 0)])


def test_a_full_hold_pauses_librdkafka_and_half_empty_fetches_again_right_after_it() -> None:
    n = HOLD_MAX_RECORDS * 3
    s, c = session({0: n})
    s.pause([(TOPIC, 0)])
    assert drain(s) == []
    assert c.calls == [("pause", [0])] and c.pos[0] == HOLD_MAX_RECORDS  # bounded: no more fetched
    s.resume([(TOPIC, 0)])
    assert c.calls == [("pause", [0])]  # a full hold needs no fetch yet
    first = [s.poll(0) for _ in range(HOLD_MAX_RECORDS // 2 + 1)]
    assert c.calls == [("pause", [0]), ("resume", [0])]  # down to half: fetched again
    assert c.pos[0] == HOLD_MAX_RECORDS  # from right after what is held
    rest = drain(s)
    assert [r.offset for r in first + rest if r is not None] == list(range(n))


def test_a_revoke_drops_what_was_held_but_keeps_the_pause_until_resume() -> None:
    """As librdkafka's own pause does; the held records belong to the assignment that ended."""
    s, c = session({0: 4})
    s.pause([(TOPIC, 0)])
    assert drain(s) == []
    s._on_revoke(c, [TopicPartition(TOPIC, 0)])  # type: ignore[arg-type]
    assert not s._holding
    c.pos[0] = 2  # re-assigned: fetched again from the committed offset
    assert drain(s) == []
    s.resume([(TOPIC, 0)])
    assert [r.offset for r in drain(s)] == [2, 3]


def test_seek_to_committed_drops_what_was_held() -> None:
    s, c = session({0: 4})
    c.committed = lambda parts, timeout: [TopicPartition(TOPIC, 0, 1)]  # type: ignore[attr-defined]
    s.pause([(TOPIC, 0)])
    drain(s)
    assert s.seek_to_committed([(TOPIC, 0)]) == []
    s.resume([(TOPIC, 0)])
    assert [r.offset for r in drain(s)] == [1, 2, 3]


@settings(max_examples=300, deadline=None)
@given(lengths=st.lists(st.integers(0, 2 * HOLD_MAX_RECORDS + 5), min_size=1, max_size=3),
       ops=st.lists(st.tuples(st.sampled_from(["pause", "resume", "poll", "poll", "poll"]), st.integers(0, 2)),
                    max_size=400))
def test_every_record_comes_out_once_in_order_and_never_while_paused(lengths: list[int],
                                                                      ops: list[tuple[str, int]]) -> None:
    s, _ = session(dict(enumerate(lengths)))
    paused: set[int] = set()
    got: dict[int, list[int]] = {p: [] for p in range(len(lengths))}
    for op, p in ops:
        p %= len(lengths)
        if op == "pause":
            s.pause([(TOPIC, p)])
            paused.add(p)
        elif op == "resume":
            s.resume([(TOPIC, p)])
            paused.discard(p)
        else:
            r = s.poll(0)
            if r is not None:
                assert r.partition not in paused
                got[r.partition].append(r.offset)
        held = s._holding.get((TOPIC, p))
        assert held is None or len(held) <= HOLD_MAX_RECORDS
    s.resume([(TOPIC, p) for p in range(len(lengths))])
    for r in drain(s):
        got[r.partition].append(r.offset)
    assert got == {p: list(range(n)) for p, n in enumerate(lengths)}
