"""KafkaSession when librdkafka does not keep its word: a transactional call that blocks past its
timeout (librdkafka #5456 / #5511, seen after a broker restart), and an abort that cannot finish
while the broker is away. Either way the producer is set aside for a new one with the same
transactional.id and the transaction is reported aborted; the worker does not exit or hang.

Fake producers stand in here (no Kafka); tests/chaos/test_broker_restart.py shows the real hang.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from processor.session import FatalKafkaError, KafkaSession, TransactionAborted

TIMED_OUT = KafkaError(KafkaError._TIMED_OUT, "timed out", retriable=True)
ABORTABLE = KafkaError(KafkaError._TIMED_OUT, "coordinator gone", retriable=True, txn_requires_abort=True)


@dataclass(frozen=True)
class Out:
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


class FakeConsumer:
    subscribed: list[str] | None = None

    def consumer_group_metadata(self) -> object:
        return object()

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        self.subscribed = topics


class FakeProducer:
    """Records calls; ``hang`` names calls that block until released, ``fail`` calls that raise."""

    def __init__(self, release: threading.Event, *, hang: tuple[str, ...] = (),
                 fail: dict[str, list[KafkaError]] | None = None) -> None:
        self.calls: list[str] = []
        self.release = release
        self.hang = hang
        self.fail = fail or {}

    def _do(self, name: str) -> None:
        self.calls.append(name)
        if name in self.hang:
            self.release.wait()
        if self.fail.get(name):
            raise KafkaException(self.fail[name].pop(0) if len(self.fail[name]) > 1 else self.fail[name][0])

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


@pytest.fixture
def release() -> Iterator[threading.Event]:
    ev = threading.Event()
    yield ev
    ev.set()  # let any thread still stuck in a fake call finish


RECORDS = [Out("results", b"k", b"v", [])]
OFFSETS = {("requests", 0): 1}


def session(first: FakeProducer, *more: FakeProducer, budget: float = 0.4) -> KafkaSession:
    spare = list(more)
    factory = (lambda: spare.pop(0)) if more else None
    return KafkaSession(FakeConsumer(), first, budget_seconds=budget, new_producer=factory)  # type: ignore[arg-type]


def timed(call: Any) -> float:
    t0 = time.monotonic()
    call()
    return time.monotonic() - t0


def test_a_call_that_ignores_its_timeout_sets_the_producer_aside(release: threading.Event) -> None:
    stuck = FakeProducer(release, hang=("send_offsets",))
    fresh = FakeProducer(release)
    s = session(stuck, fresh)
    t0 = time.monotonic()
    with pytest.raises(TransactionAborted, match="stuck"):
        s.commit(RECORDS, OFFSETS)
    assert time.monotonic() - t0 < 2 * s.budget  # bounded, although the call never returned
    assert s.replacements == 1 and s.producer is fresh
    s.commit(RECORDS, OFFSETS)  # the new producer is initialised first: it fences the stuck one
    assert fresh.calls == ["init", "begin", "produce", "send_offsets", "commit"]
    release.set()
    time.sleep(0.1)
    assert fresh.calls[-1] == "commit" and len(fresh.calls) == 5  # the stuck thread never touches it


def test_an_abort_that_cannot_finish_replaces_the_producer_instead_of_exiting(release: threading.Event) -> None:
    away = FakeProducer(release, fail={"send_offsets": [ABORTABLE], "abort": [TIMED_OUT]})
    fresh = FakeProducer(release, fail={"init": [TIMED_OUT]})  # the broker is still away
    s = session(away, fresh)
    with pytest.raises(TransactionAborted):
        s.commit(RECORDS, OFFSETS)
    assert s.replacements == 1 and s.producer is fresh and away.calls.count("abort") >= 2
    with pytest.raises(TransactionAborted, match="not ready"):
        s.commit(RECORDS, OFFSETS)  # init timed out: nothing was started, the caller rewinds
    fresh.fail.clear()
    s.commit(RECORDS, OFFSETS)
    assert fresh.calls == ["init", "init", "begin", "produce", "send_offsets", "commit"]


def test_without_a_way_to_build_a_new_producer_a_stuck_one_is_fatal(release: threading.Event) -> None:
    s = session(FakeProducer(release, hang=("commit",)))
    with pytest.raises(FatalKafkaError):
        s.commit(RECORDS, OFFSETS)


def test_a_fenced_producer_is_still_fatal(release: threading.Event) -> None:
    fenced = KafkaError(KafkaError._FENCED, "fenced", fatal=True)
    s = session(FakeProducer(release, fail={"send_offsets": [fenced]}), FakeProducer(release))
    with pytest.raises(FatalKafkaError):
        s.commit(RECORDS, OFFSETS)
    assert s.replacements == 0


class Quiet:
    def on_assign(self, tps: list[tuple[str, int]]) -> None: ...
    def on_revoke(self, tps: list[tuple[str, int]]) -> None: ...
    def on_lost(self, tps: list[tuple[str, int]]) -> None: ...


def test_a_worker_started_while_the_broker_is_away_waits_for_it(release: threading.Event) -> None:
    producer = FakeProducer(release, fail={"init": [TIMED_OUT, TIMED_OUT, TIMED_OUT]})
    s = session(producer)
    threading.Timer(0.3, lambda: producer.fail.clear()).start()  # the broker comes back
    calls = 0

    def init(timeout: float) -> None:
        nonlocal calls
        calls += 1
        time.sleep(0.05)
        producer._do("init")

    producer.init_transactions = init  # type: ignore[method-assign]
    s.start("requests", Quiet())
    assert calls >= 2 and s.consumer.subscribed == ["requests"]  # type: ignore[attr-defined]


def test_a_broker_that_stays_away_at_start_is_fatal_after_the_startup_budget(release: threading.Event) -> None:
    s = session(FakeProducer(release, fail={"init": [TIMED_OUT]}), budget=0.05)
    with pytest.raises(FatalKafkaError, match="init_transactions"):
        s.start("requests", Quiet())
