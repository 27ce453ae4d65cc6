"""The Session contract (tests/support/session_contract.py) on the real broker: KafkaSession on the
shared stack. tests/unit/test_session_contract.py runs the same checks on the in-memory session."""

from __future__ import annotations

import contextlib
import itertools
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer

from processor.config import KafkaSettings
from processor.session import TP, KafkaSession, Session
from tests.support.session_contract import Recorder, SessionContract, poll_until

pytestmark = pytest.mark.integration


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


class TestKafkaSession(SessionContract):
    @pytest.fixture
    def cluster(self, stack: Any) -> Iterator[KafkaCluster]:
        c = KafkaCluster(stack)
        yield c
        c.close()
