"""The Session contract (tests/support/session_contract.py) on the in-memory session: the checks the
fast tests rely on, in milliseconds. tests/integration/test_session_contract_kafka.py runs the same
checks against KafkaSession on the real broker, so this fake cannot drift from Kafka.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from processor.session import TP, Session
from tests.support.memory_broker import MemoryBroker, MemorySession
from tests.support.session_contract import Recorder, SessionContract


class MemoryCluster:
    quiet = 0.05

    def __init__(self) -> None:
        self.broker = MemoryBroker()
        self._n = itertools.count()

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


class TestMemorySession(SessionContract):
    @pytest.fixture
    def cluster(self) -> Iterator[MemoryCluster]:
        c = MemoryCluster()
        yield c
        c.close()
