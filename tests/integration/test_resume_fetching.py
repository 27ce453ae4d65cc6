"""resume_fetching (resume + a wake-up seek to the consumer's own position) loses and repeats nothing."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from confluent_kafka import Consumer, Producer

from devstack.stack import LocalStack
from processor.config import KafkaSettings
from processor.kafka_io import consumer_config, resume_fetching


def test_pause_and_resume_fetching_continue_exactly_where_the_consumer_was(
        stack: LocalStack, make_topics: Callable[[Mapping[str, int]], dict[str, str]]) -> None:
    topic = make_topics({"requests": 3})["requests"]
    producer = Producer({"bootstrap.servers": stack.kafka_bootstrap})
    for i in range(30):
        producer.produce(topic, str(i).encode(), partition=i % 3)
    assert producer.flush(30) == 0
    consumer = Consumer({**consumer_config(KafkaSettings(bootstrap_servers=stack.kafka_bootstrap,
                                                         group_id=f"{topic}-g"), "t"),
                         "queued.min.messages": 1000})  # fetch far ahead, so pause() drops fetched messages
    consumer.subscribe([topic])
    seen: list[tuple[int, int]] = []
    try:
        for _ in range(600):
            msg = consumer.poll(0.1)
            if msg is None or msg.error():
                continue
            seen.append((msg.partition(), msg.offset()))
            if len(seen) == 30:
                break
            # After every message, as the processor's flow control does at full capacity.
            assigned = consumer.assignment()
            consumer.pause(assigned)
            assert consumer.poll(0.05) is None
            resume_fetching(consumer, assigned)
    finally:
        consumer.close()
    assert sorted(seen) == sorted((i % 3, i // 3) for i in range(30))  # each exactly once
    for p in range(3):
        offsets = [o for part, o in seen if part == p]
        assert offsets == sorted(offsets)
