"""How long after ``Consumer.resume()`` does the next message arrive? (the cause of the deep intake)

    uv run python -m benchmarks.resume_delay [--cycles 25] [--out artifacts/bench/resume_delay.json]

Uses the servers named by ``KAFKA_BOOTSTRAP_SERVERS`` (or starts the local stack). Per variant: a fresh
topic (``--partitions``, default 4) pre-filled with messages, one consumer in its own group built from
the product's ``consumer_config`` plus the variant's overrides. Each cycle does what the processor's
flow control does around one job:

    take a message → pause every assigned partition → hold (a "job", 50–250 ms, polling 20 ms at a
    time) → resume → [the variant's wake-up] → time until poll() returns the next message.

The variants separate the librdkafka settings that could matter (``fetch.queue.backoff.ms``,
``fetch.wait.max.ms``, ``fetch.error.backoff.ms``, ``queued.min.messages``,
``queued.max.messages.kbytes``) from what the source says is the cause: ``resume()`` only clears a
flag on the main thread; the broker thread that fetches is not woken, and with every partition paused
it has no fetch in flight, so it sleeps until its fixed 1 s idle timeout (``rd_kafka_max_block_ms`` in
``rdkafka_broker.c``, not configurable). The ``wake_*`` variants wake that thread after resuming;
``resume_fetching`` is the product's ``processor.kafka_io.resume_fetching`` (resume + a seek to the
consumer's own position).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_OUT = Path("artifacts/bench/resume_delay.json")

VARIANTS: dict[str, tuple[dict[str, Any], str]] = {
    "product": ({}, ""),
    "fetch_queue_backoff_10": ({"fetch.queue.backoff.ms": 10}, ""),
    "fetch_wait_10_error_backoff_10": ({"fetch.wait.max.ms": 10, "fetch.error.backoff.ms": 10}, ""),
    "queued_min_1_kbytes_1": ({"queued.min.messages": 1, "queued.max.messages.kbytes": 1,
                               "fetch.queue.backoff.ms": 10}, ""),
    "wake_seek": ({}, "seek"),
    "wake_watermarks": ({}, "watermarks"),
    "resume_fetching": ({}, "helper"),  # what the processor uses: processor.kafka_io.resume_fetching
    # A fetch still in flight for a partition without data holds the broker thread's one Fetch slot for
    # up to fetch.wait.max.ms; a shorter wait bounds that case.
    "resume_fetching_wait_50": ({"fetch.wait.max.ms": 50}, "helper"),
}


def _pct(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0}
    a = np.asarray(values) * 1000
    p50, p95 = np.percentile(a, [50, 95])
    return {"n": len(values), "p50_ms": round(float(p50), 2), "p95_ms": round(float(p95), 2),
            "max_ms": round(float(a.max()), 2), "mean_ms": round(float(a.mean()), 2)}


def run_variant(bootstrap: str, name: str, extra: dict[str, Any], wake: str, args: argparse.Namespace,
                create_topic: Any) -> dict[str, Any]:
    from confluent_kafka import Consumer, Producer, TopicPartition

    from processor.config import KafkaSettings
    from processor.kafka_io import consumer_config, resume_fetching

    topic = f"bench-resume-{name.replace('_', '-')}-{uuid.uuid4().hex[:6]}"
    create_topic(topic, args.partitions)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i in range(args.cycles * 2 + 20):
        producer.produce(topic, b"x" * 300, str(i).encode(), partition=i % args.partitions)
    producer.flush(30)

    k = KafkaSettings(bootstrap_servers=bootstrap, group_id=f"{topic}-g")
    consumer = Consumer({**consumer_config(k, f"resume-{name}"), **extra})
    consumer.subscribe([topic])
    rng = random.Random(1)
    delays: list[float] = []
    position: dict[int, int] = {}
    try:
        deadline = time.monotonic() + 30
        msg = None
        while msg is None and time.monotonic() < deadline:  # joining the group
            msg = consumer.poll(0.1)
        for _ in range(args.cycles):
            if msg is None or msg.error():
                raise RuntimeError(f"{name}: no message ({msg.error() if msg else 'timeout'})")
            position[msg.partition()] = msg.offset() + 1
            assigned = consumer.assignment()
            consumer.pause(assigned)
            hold_until = time.monotonic() + rng.uniform(0.05, 0.25)
            while time.monotonic() < hold_until:
                stray = consumer.poll(0.02)
                if stray is not None and not stray.error():
                    raise RuntimeError(f"{name}: a message arrived while paused")
            t0 = time.perf_counter()
            if wake == "helper":
                resume_fetching(consumer, assigned)
            else:
                consumer.resume(assigned)
            if wake == "seek":
                # Re-seek each partition to where it is: a seek moves the partition's fetch state to
                # active, and that state change wakes the broker thread.
                for tp in assigned:
                    if tp.partition in position:
                        consumer.seek(TopicPartition(tp.topic, tp.partition, position[tp.partition]))
            elif wake == "watermarks":
                # Any request to the partition leader wakes its broker thread (one round trip, blocking).
                consumer.get_watermark_offsets(assigned[0], timeout=5, cached=False)
            msg = None
            while msg is None and time.perf_counter() - t0 < 5:
                msg = consumer.poll(0.005)
            delays.append(time.perf_counter() - t0)
    finally:
        consumer.close()
    return {"extra": extra, "wake": wake or None, "resume_to_message": _pct(delays),
            "delays_ms": [round(d * 1000, 2) for d in delays]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.resume_delay", description=__doc__.split("\n\n")[0])
    p.add_argument("--cycles", type=int, default=25)
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    from devstack.stack import LocalStack

    out: dict[str, Any] = {"benchmark": "resume_delay", "date": datetime.now(UTC).isoformat(timespec="seconds"),
                           "loadavg_before": os.getloadavg(), "variants": {}}
    with LocalStack() as stack:
        import confluent_kafka

        out["librdkafka"] = confluent_kafka.libversion()[0]
        for name in args.variants.split(","):
            extra, wake = VARIANTS[name]
            res = run_variant(stack.kafka_bootstrap, name, extra, wake, args,
                              lambda t, n: stack.create_topics({t: n}))
            out["variants"][name] = res
            r = res["resume_to_message"]
            print(f"{name:34} p50 {r['p50_ms']:8.1f} ms  p95 {r['p95_ms']:8.1f} ms  max {r['max_ms']:8.1f} ms",
                  flush=True)
    out["loadavg_after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
