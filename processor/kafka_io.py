"""Kafka clients for one group member, configured for exactly-once results.

- consumer: manual offsets only (auto commit and auto offset store refused), read_committed,
  cooperative-sticky (classic protocol) or the KIP-848 consumer protocol, optional static membership.
- transactional producer: results and dead letters, committed with the consumed offsets.
- plain producer: progress and health events (informational, at-least-once, never in a transaction,
  so a long job's progress is visible before its transaction exists).
- ``resume_fetching``: resume() that does not wait up to a second for the next fetch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

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
        # fetch.wait.max.ms stays at librdkafka's 500: an idle worker fetches twice a second, not ten
        # times. Pausing keeps paused partitions in the fetch (``KafkaSession.pause``), so a resume
        # rarely waits for a fetch the broker holds.
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
        # Outcomes are built to fit KAFKA_MAX_MESSAGE_BYTES; the client must let them through, and no
        # batch of small outcomes may outgrow what the topics take (setup sizes them to match).
        "message.max.bytes": k.max_message_bytes + FRAMING_BYTES,
        "batch.size": k.max_message_bytes,
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


def resume_fetching(consumer: Consumer, partitions: list[TopicPartition]) -> None:
    """``consumer.resume(partitions)``, and make the next fetch happen now rather than up to 1 s later.

    librdkafka's resume() only clears the partition's pause flag, on its main thread; the broker
    thread that fetches is not told. When every partition was paused that thread has no fetch in
    flight and sleeps until its fixed one-second idle timeout (``rd_kafka_max_block_ms`` in
    rdkafka_broker.c), so the next message arrives 0-1 s after resume() (measured p50 0.76 s,
    benchmarks/resume_delay.py). No configuration property shortens that wait:
    fetch.queue.backoff.ms, fetch.wait.max.ms, fetch.error.backoff.ms and queued.min.messages were
    measured and change nothing. A seek to the position the consumer is already at changes the
    partition's fetch state, and that state change wakes the broker thread: the next message then
    arrives in ~2 ms. The seek carries no leader epoch, so librdkafka skips the extra offset-validation
    round trip; the position is the one this consumer just reached, so there is nothing to validate.
    One seek wakes the thread for every partition that broker leads; a partition with no position
    yet (nothing consumed since assignment) is left to the regular wake-up.
    """
    if not partitions:
        return
    consumer.resume(partitions)
    try:
        positions = consumer.position(partitions)
        for p in positions:
            if p.offset >= 0:
                consumer.seek(TopicPartition(p.topic, p.partition, p.offset))
    except KafkaException as exc:  # mid-rebalance: the next owner starts from the committed offset anyway
        log.debug("wake-up seek after resume failed: %s", exc.args[0])


def make_consumer(conf: dict[str, Any]) -> Consumer:
    if conf.get("enable.auto.commit") or conf.get("enable.auto.offset.store"):
        raise ValueError("auto commit / auto offset store would commit work that is not done")
    return Consumer(conf)


def make_producer(conf: dict[str, Any]) -> Producer:
    return Producer(conf)
