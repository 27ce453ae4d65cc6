"""KafkaSession when librdkafka does not keep its word: a transactional call that blocks past its
timeout (librdkafka #5456 / #5511, seen after a broker restart) must not freeze the poll loop. The
producer is replaced in place: the transaction counts as aborted at once, and nothing is sought (so
nothing is redone) until the new producer's init_transactions has fenced the stuck one. A worker
started while the broker is away waits for it instead of exiting.

Fake producers stand in here (no Kafka); tests/chaos/test_broker_restart.py shows the real hang.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from processor.session import FatalKafkaError, KafkaSession, TransactionAborted
from tests.support.session_contract import Out

TIMED_OUT = KafkaError(KafkaError._TIMED_OUT, "timed out", retriable=True)


class FakeConsumer:
    subscribed: list[str] | None = None

    def __init__(self) -> None:
        self.sought: list[tuple[str, int, int]] = []

    def consumer_group_metadata(self) -> object:
        return object()

    def committed(self, partitions: list[Any], timeout: float) -> list[Any]:
        for p in partitions:
            p.offset = 7
        return partitions

    def seek(self, p: Any) -> None:
        self.sought.append((p.topic, p.partition, p.offset))

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        self.subscribed = topics


class FakeProducer:
    """Records calls; ``hang`` names calls that block until released, ``fail`` calls that raise."""

    def __init__(self, release: threading.Event, *, hang: tuple[str, ...] = (),
                 fail: dict[str, KafkaError] | None = None) -> None:
        self.calls: list[str] = []
        self.release = release
        self.hang = hang
        self.fail = fail or {}

    def _do(self, name: str) -> None:
        self.calls.append(name)
        if name in self.hang:
            self.release.wait()
        if name in self.fail:
            raise KafkaException(self.fail[name])

    def init_transactions(self, timeout: float) -> None:
        self._do("init")

    def begin_transaction(self) -> None:
        self._do("begin")

    def produce(self, *args: Any, **kw: Any) -> None:
        self._do("produce")

    def send_offsets_to_transaction(self, *args: Any) -> None:
        self._do("send_offsets")

    def commit_transaction(self, timeout: float) -> None:
        self._do("commit")

    def abort_transaction(self, timeout: float) -> None:
        self._do("abort")

    def poll(self, timeout: float) -> int:
        return 0


@pytest.fixture
def release() -> Iterator[threading.Event]:
    ev = threading.Event()
    yield ev
    ev.set()  # let any thread still stuck in a fake call finish


RECORDS = [Out("results", b"k", b"v", [])]
OFFSETS = {("requests", 0): 1}


def session(producer: FakeProducer, budget: float = 0.2, *,
            replacements: list[FakeProducer] | None = None) -> KafkaSession:
    """``replacements``: the producers the session gets, in order, when it replaces one (None: it
    cannot replace, as in a session built without a factory)."""
    factory = None if replacements is None else (lambda: replacements.pop(0))
    return KafkaSession(FakeConsumer(), producer, budget_seconds=budget,  # type: ignore[arg-type]
                        new_producer=factory)  # type: ignore[arg-type]


def wait_until(cond: Any, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def test_a_call_that_ignores_its_timeout_is_replaced_and_nothing_is_sought_before_the_fencing(
        release: threading.Event) -> None:
    stuck = FakeProducer(release, hang=("send_offsets",))
    fencing = threading.Event()
    new = FakeProducer(fencing, hang=("init",))  # its init_transactions waits until we say the broker answered
    s = session(stuck, replacements=[new])
    t0 = time.monotonic()
    with pytest.raises(TransactionAborted, match="outlived"):
        s.commit(RECORDS, OFFSETS)
    assert time.monotonic() - t0 < 2 * s.budget  # bounded, although the call never returned
    wait_until(lambda: new.calls == ["init"])
    assert s.replacing
    # The old transaction may still commit until the new producer has fenced it: no seek yet, and the
    # processor takes nothing from a partition it could not seek.
    assert s.seek_to_committed([("requests", 0)]) == [("requests", 0)]
    assert s.consumer.sought == []  # type: ignore[attr-defined]
    with pytest.raises(TransactionAborted, match="being replaced"):
        s.commit(RECORDS, OFFSETS)
    assert new.calls == ["init"]
    fencing.set()  # init_transactions returns: the stuck producer is fenced
    wait_until(lambda: not s.replacing)
    assert s.seek_to_committed([("requests", 0)]) == []
    assert s.consumer.sought == [("requests", 0, 7)]  # type: ignore[attr-defined]
    s.commit(RECORDS, OFFSETS)
    assert new.calls == ["init", "begin", "produce", "send_offsets", "commit"]
    assert s.producer is new and s.set_aside == [stuck]
    # The stuck call returns at last: its step goes on with the producer it started with, never the new one.
    release.set()
    wait_until(lambda: "commit" in stuck.calls)
    assert new.calls == ["init", "begin", "produce", "send_offsets", "commit"]


def test_without_a_way_to_build_a_producer_a_stuck_call_is_fatal(release: threading.Event) -> None:
    s = session(FakeProducer(release, hang=("send_offsets",)))
    with pytest.raises(FatalKafkaError, match="outlived"):
        s.commit(RECORDS, OFFSETS)
    t0 = time.monotonic()
    with pytest.raises(FatalKafkaError, match="outlived"):
        s.commit(RECORDS, OFFSETS)  # the shutdown's last commit does not wait on it again
    assert time.monotonic() - t0 < 0.1


def test_a_fatal_error_that_is_not_a_fencing_replaces_the_producer(release: threading.Event) -> None:
    # Seen after a broker restart: abort_transaction -> fatal INVALID_TXN_STATE.
    invalid = KafkaError(KafkaError.INVALID_TXN_STATE, "invalid txn state", fatal=True)
    old = FakeProducer(release, fail={"send_offsets": TIMED_OUT, "abort": invalid})
    new = FakeProducer(release)
    s = session(old, replacements=[new])
    with pytest.raises(TransactionAborted, match="invalid txn state"):
        s.commit(RECORDS, OFFSETS)
    wait_until(lambda: not s.replacing)
    assert s.producer is new
    s.commit(RECORDS, OFFSETS)
    assert new.calls == ["init", "begin", "produce", "send_offsets", "commit"]


def test_an_abort_that_never_succeeds_replaces_the_producer(release: threading.Event) -> None:
    old = FakeProducer(release, fail={"commit": TIMED_OUT, "abort": TIMED_OUT})
    new = FakeProducer(release)
    s = session(old, replacements=[new])
    t0 = time.monotonic()
    with pytest.raises(TransactionAborted, match="could not abort"):
        s.commit(RECORDS, OFFSETS)
    assert time.monotonic() - t0 < 2 * s.budget
    wait_until(lambda: not s.replacing)
    assert s.producer is new


def test_replacements_in_a_row_end_in_a_fatal_error(release: threading.Event) -> None:
    producers = [FakeProducer(release, hang=("send_offsets",)) for _ in range(4)]
    s = session(producers[0], budget=0.1, replacements=producers[1:])
    for _ in range(3):
        with pytest.raises(TransactionAborted):
            s.commit(RECORDS, OFFSETS)
        wait_until(lambda: not s.replacing)
    with pytest.raises(FatalKafkaError, match="cannot be replaced again"):
        s.commit(RECORDS, OFFSETS)


def test_a_replacement_that_cannot_initialise_is_fatal(release: threading.Event) -> None:
    fatal = KafkaError(KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, "not authorised", fatal=True)
    s = session(FakeProducer(release, hang=("send_offsets",)),
                replacements=[FakeProducer(release, fail={"init": fatal})])
    with pytest.raises(TransactionAborted):
        s.commit(RECORDS, OFFSETS)
    wait_until(lambda: not s.replacing)
    with pytest.raises(FatalKafkaError, match="replacing the transactional producer failed"):
        s.poll(0)  # the poll loop learns it at once, not at its next commit


def test_a_commit_that_works_is_unchanged(release: threading.Event) -> None:
    producer = FakeProducer(release)
    session(producer).commit(RECORDS, OFFSETS)
    assert producer.calls == ["begin", "produce", "send_offsets", "commit"]


@pytest.mark.parametrize("code", [KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH])
def test_a_fenced_producer_is_still_fatal_never_replaced(release: threading.Event, code: int) -> None:
    # Fenced means a twin of this worker (same transactional.id) is alive: replacing would fence it back.
    fenced = KafkaError(code, "fenced", fatal=True)
    new = FakeProducer(release)
    with pytest.raises(FatalKafkaError, match="fenced"):
        session(FakeProducer(release, fail={"send_offsets": fenced}), replacements=[new]).commit(RECORDS, OFFSETS)
    assert new.calls == []


class Quiet:
    def on_assign(self, tps: list[tuple[str, int]]) -> None: ...
    def on_revoke(self, tps: list[tuple[str, int]]) -> None: ...
    def on_lost(self, tps: list[tuple[str, int]]) -> None: ...


def test_a_worker_started_while_the_broker_is_away_waits_for_it(release: threading.Event) -> None:
    producer = FakeProducer(release, fail={"init": TIMED_OUT})
    s = session(producer)
    threading.Timer(0.3, producer.fail.clear).start()  # the broker comes back
    s.start("requests", Quiet())
    assert producer.calls.count("init") >= 2 and s.consumer.subscribed == ["requests"]  # type: ignore[attr-defined]


def test_a_broker_that_stays_away_at_start_is_fatal_after_the_startup_budget(release: threading.Event) -> None:
    s = session(FakeProducer(release, fail={"init": TIMED_OUT}), budget=0.05)
    with pytest.raises(FatalKafkaError, match="init_transactions"):
        s.start("requests", Quiet())
