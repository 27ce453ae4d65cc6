"""After a hard broker restart, a worker's next transaction must finish or abort within its budget,
and the worker must keep serving without exiting.

librdkafka 2.16's ``send_offsets_to_transaction`` can block for good after the (single) broker comes
back, whatever timeout it is given (upstream #5456 / #5511): on the code before the first fix, every
worker of the chaos run froze in it, failed liveness and left the group (this test: "commit still
blocked"); on the code before the second, the worker exited (FatalKafkaError) so that its restart
fenced the stuck producer. ``KafkaSession`` now replaces the producer in place: a commit succeeds or
aborts in bounded time, no seek happens until the new producer has fenced the old one, and a later
commit succeeds in the same session.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest

from processor.config import KafkaSettings
from processor.session import KafkaSession, Record, TransactionAborted


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
        aborts = 0
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
                # Rewind, as the processor does: take nothing until the seek succeeds (while the
                # producer is replaced it does not; polled records meanwhile come back after it).
                aborts += 1
                held_until = time.monotonic() + 6 * budget
                while s.seek_to_committed(sorted(listener.assigned)):
                    assert time.monotonic() < held_until, "partitions still held after the replacement budget"
                    s.poll(0.5)
            else:
                raise outcome[0]  # FatalKafkaError included: the worker would have exited
        assert committed, "no commit succeeded within 180 s of the broker restart"
        assert longest <= 2 * budget
        print(f"aborts={aborts} producers replaced={len(s.set_aside)} longest commit={longest:.1f}s")
    finally:
        s.close()
