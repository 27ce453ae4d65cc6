"""KafkaSession when librdkafka does not keep its word: a transactional call that blocks past its
timeout (librdkafka #5456 / #5511, seen after a broker restart) must not freeze the poll loop; it is
fatal at once (the restart fences the stuck producer). A worker started while the broker is away
waits for it instead of exiting.

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

from processor.session import FatalKafkaError, KafkaSession

TIMED_OUT = KafkaError(KafkaError._TIMED_OUT, "timed out", retriable=True)


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


def session(producer: FakeProducer, budget: float = 0.4) -> KafkaSession:
    return KafkaSession(FakeConsumer(), producer, budget_seconds=budget)  # type: ignore[arg-type]


def test_a_call_that_ignores_its_timeout_is_fatal_within_the_budget(release: threading.Event) -> None:
    s = session(FakeProducer(release, hang=("send_offsets",)))
    t0 = time.monotonic()
    with pytest.raises(FatalKafkaError, match="outlived"):
        s.commit(RECORDS, OFFSETS)
    assert time.monotonic() - t0 < 2 * s.budget  # bounded, although the call never returned
    t0 = time.monotonic()
    with pytest.raises(FatalKafkaError, match="stuck"):
        s.commit(RECORDS, OFFSETS)  # the shutdown's last commit does not wait on it again
    assert time.monotonic() - t0 < 0.1


def test_a_commit_that_works_is_unchanged(release: threading.Event) -> None:
    producer = FakeProducer(release)
    session(producer).commit(RECORDS, OFFSETS)
    assert producer.calls == ["begin", "produce", "send_offsets", "commit"]


def test_a_fenced_producer_is_still_fatal(release: threading.Event) -> None:
    fenced = KafkaError(KafkaError._FENCED, "fenced", fatal=True)
    with pytest.raises(FatalKafkaError, match="fenced"):
        session(FakeProducer(release, fail={"send_offsets": fenced})).commit(RECORDS, OFFSETS)


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
