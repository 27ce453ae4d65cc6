"""Kafka clients for one group member, configured for exactly-once results.

- consumer: manual offsets only (auto commit and auto offset store refused), read_committed,
  cooperative-sticky (classic protocol) or the KIP-848 consumer protocol, optional static membership.
- transactional producer: results and dead letters, committed with the consumed offsets.
- plain producer: progress and health events (informational, at-least-once, never in a transaction,
  so a long job's progress is visible before its transaction exists).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer

from processor.config import KafkaSettings
from processor.deadletter import FRAMING_BYTES

log = logging.getLogger(__name__)


def consumer_config(k: KafkaSettings, worker_id: str, error_cb: Callable[[KafkaError], None] | None = None
                    ) -> dict[str, Any]:
    conf = {
        **k.librdkafka_common(),
        "group.id": k.group_id,
        "client.id": f"tts-processor-{worker_id}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "max.poll.interval.ms": k.max_poll_interval_ms,
        # Requests are small and each takes seconds of GPU: don't prefetch thousands we may give away.
        "queued.max.messages.kbytes": 1024,
        "fetch.wait.max.ms": 100,
    }
    if k.group_protocol == "consumer":
        # KIP-848: assignment is computed by the broker; the classic-only knobs are rejected.
        conf["group.protocol"] = "consumer"
    else:
        conf["partition.assignment.strategy"] = "cooperative-sticky"
        conf["session.timeout.ms"] = k.session_timeout_ms
    if k.static_membership:
        conf["group.instance.id"] = worker_id
    if error_cb is not None:
        conf["error_cb"] = error_cb
    return conf


def transactional_producer_config(k: KafkaSettings, worker_id: str,
                                  error_cb: Callable[[KafkaError], None] | None = None) -> dict[str, Any]:
    conf = {
        **k.librdkafka_common(),
        "client.id": f"tts-processor-{worker_id}-txn",
        # Stable per pod (StatefulSet name): a restarted pod fences its own zombie.
        "transactional.id": f"{k.group_id}-{worker_id}",
        "enable.idempotence": True,
        "transaction.timeout.ms": k.transaction_timeout_ms,
        "linger.ms": 1,
        # Outcomes are built to fit KAFKA_MAX_MESSAGE_BYTES; the client must let them through.
        "message.max.bytes": k.max_message_bytes + FRAMING_BYTES,
    }
    if error_cb is not None:
        conf["error_cb"] = error_cb
    return conf


def plain_producer_config(k: KafkaSettings, worker_id: str) -> dict[str, Any]:
    return {
        **k.librdkafka_common(),
        "client.id": f"tts-processor-{worker_id}-events",
        "linger.ms": 5,
        "acks": 1,
        "message.timeout.ms": 30000,
    }


def make_consumer(conf: dict[str, Any]) -> Consumer:
    if conf.get("enable.auto.commit") or conf.get("enable.auto.offset.store"):
        raise ValueError("auto commit / auto offset store would commit work that is not done")
    return Consumer(conf)


def make_producer(conf: dict[str, Any]) -> Producer:
    return Producer(conf)
