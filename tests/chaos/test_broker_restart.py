"""After a hard broker restart, a worker's next transaction must finish or abort within its budget.

librdkafka 2.16's ``send_offsets_to_transaction`` can block for good after the (single) broker comes
back, whatever timeout it is given (upstream #5456 / #5511): on the code before the fix, every
worker of the chaos run froze in it, failed liveness and left the group (this test: "commit still
blocked"). ``KafkaSession`` now runs the transaction with a deadline, so a commit succeeds, aborts, or
reports FatalKafkaError (the worker restarts, fencing the stuck producer) in bounded time, and the
restarted session commits.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest

from processor.config import KafkaSettings
from processor.session import FatalKafkaError, KafkaSession, Record, TransactionAborted


class Listener:
    def __init__(self) -> None:
        self.assigned: set[tuple[str, int]] = set()

    def on_assign(self, tps: list[tuple[str, int]]) -> None:
        self.assigned |= set(tps)

    def on_revoke(self, tps: list[tuple[str, int]]) -> None:
        self.assigned -= set(tps)

    def on_lost(self, tps: list[tuple[str, int]]) -> None:
        self.assigned -= set(tps)


class Out:
    def __init__(self, topic: str, value: bytes) -> None:
        self.topic, self.key, self.value = topic, None, value
        self.headers: list[tuple[str, bytes]] = []


def poll_one(s: KafkaSession, timeout: float) -> Record | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (r := s.poll(0.2)) is not None:
            return r
    return None


def test_a_commit_after_a_hard_broker_restart_is_bounded_and_a_later_one_succeeds(stack: Any) -> None:
    if not stack.kafka.managed:
        pytest.skip("restarts the broker: needs a stack this test may restart (not external servers)")
    name = f"restart-{uuid.uuid4().hex[:6]}"
    stack.create_topics({f"{name}.in": 1, f"{name}.out": 1})
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": stack.kafka_bootstrap})
    for i in range(20):
        p.produce(f"{name}.in", b"%d" % i)
    assert p.flush(30) == 0
    k = KafkaSettings(bootstrap_servers=stack.kafka_bootstrap, group_id=name, session_timeout_ms=6000,
                      transaction_timeout_ms=15000)
    budget = 10.0
    s = KafkaSession.connect(k, f"{name}-w", budget_seconds=budget)
    listener = Listener()
    s.start(f"{name}.in", listener)
    try:
        first = poll_one(s, 60)
        assert first is not None
        s.commit([Out(f"{name}.out", b"before")], {first.tp: first.offset + 1})  # caches the coordinators

        stack.kafka.restart(hard=True, down_for=3.0)

        # Keep polling (as the worker does) and commit what arrives; every commit must return in time.
        committed = False
        restarts = 0
        longest = 0.0
        deadline = time.monotonic() + 180
        while not committed and time.monotonic() < deadline:
            r = poll_one(s, 5)
            if r is None:
                continue
            outcome: list[Exception | None] = []

            def commit(r: Record = r, outcome: list[Exception | None] = outcome, s: KafkaSession = s) -> None:
                try:
                    s.commit([Out(f"{name}.out", b"after")], {r.tp: r.offset + 1})
                    outcome.append(None)
                except Exception as exc:  # noqa: BLE001 - handed to the main thread, which re-raises it
                    outcome.append(exc)

            t = threading.Thread(target=commit, daemon=True)
            t0 = time.monotonic()
            t.start()
            t.join(3 * budget)
            took = time.monotonic() - t0
            longest = max(longest, took)
            assert not t.is_alive(), f"commit still blocked after {took:.0f}s (budget {budget:.0f}s)"
            if outcome[0] is None:
                committed = True
            elif isinstance(outcome[0], TransactionAborted):
                s.seek_to_committed(sorted(listener.assigned))  # rewind, as the processor does
            elif isinstance(outcome[0], FatalKafkaError):
                # What the worker does: exit and come back with the same id, fencing the stuck producer.
                restarts += 1
                s.close()
                s = KafkaSession.connect(k, f"{name}-w", budget_seconds=budget)
                listener = Listener()
                s.start(f"{name}.in", listener)
            else:
                raise outcome[0]
        assert committed, "no commit succeeded within 180 s of the broker restart"
        assert longest <= 2 * budget
        assert restarts <= 1
    finally:
        s.close()
