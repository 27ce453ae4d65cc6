"""Defect 3 on the real broker: a partition the processor paused (intake full) is revoked by a
rebalance and comes back. librdkafka keeps the pause on the partition across revoke and re-assign
(tests/integration/test_session_contract_kafka.py shows it on this broker), so unless the processor resumes at
every assignment change, that partition never delivers again. The stall guard is no cure (a seek
does not clear a pause); it is now a counted resume, and this test needs it never to fire.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any, cast

from processor import metrics
from processor.config import KafkaSettings, S3Settings, Settings, WorkerSettings
from processor.pipeline import Processor
from processor.references import ReferenceCache
from processor.session import TP, KafkaSession
from processor.storage import Storage
from processor.voices import VoiceCatalog
from tests.support.audio import voice_clip
from tests.support.memory_storage import MemoryStorage
from tests.support.rig import CODECS, EventSink
from tests.support.tone_engine import ToneEngine
from tests.support.workers import produce, read_all, request


class Members:
    def __init__(self) -> None:
        self.assigned: set[TP] = set()

    def on_assign(self, tps: list[TP]) -> None:
        self.assigned |= set(tps)

    def on_revoke(self, tps: list[TP]) -> None:
        self.assigned -= set(tps)

    def on_lost(self, tps: list[TP]) -> None:
        self.assigned -= set(tps)


def test_a_paused_partition_delivers_again_after_a_rebalance(stack: Any, tmp_path: Path) -> None:
    prefix = f"pause-{uuid.uuid4().hex[:8]}"
    req, res = f"{prefix}.requests", f"{prefix}.results"
    stack.create_topics({req: 2, res: 2, f"{prefix}.progress": 1, f"{prefix}.dlq": 1})
    k = KafkaSettings(bootstrap_servers=stack.kafka_bootstrap, group_id=f"{prefix}-group", request_topic=req,
                      result_topic=res, progress_topic=f"{prefix}.progress", health_topic=f"{prefix}.health",
                      dlq_topic=f"{prefix}.dlq", session_timeout_ms=6000)
    settings = Settings(kafka=k, s3=S3Settings(bucket="bucket", reference_cache_dir=str(tmp_path / "refs")),
                        worker=WorkerSettings(id="w-a", prefetch=1, shutdown_grace_seconds=5))
    storage = MemoryStorage()
    storage.objects[("bucket", "voice.wav")] = (voice_clip(), {})
    store = cast(Storage, storage)
    engine = ToneEngine()
    engine.seconds = 0.5  # 20 jobs: about 10 s of "GPU", paused most of the time
    processor = Processor(settings, engine, store, KafkaSession.connect(k, "w-a"), EventSink(), CODECS,
                          references=ReferenceCache(store, settings.s3), voices=VoiceCatalog(store, "bucket", "v"))
    ids = [f"{prefix}-{i}" for i in range(20)]
    produce(stack.kafka_bootstrap, req, [request(i, "s3://bucket/voice.wav") for i in ids], partition_by_index=2)
    resyncs = metrics.REBALANCES.labels("resync")._value.get()
    runner = threading.Thread(target=processor.run, name="poll", daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 60
        while len(processor.ledger.paused) < 2:  # intake full: both partitions paused by the processor
            assert time.monotonic() < deadline, "the processor never paused intake"
            time.sleep(0.05)
        # A second member joins (cooperative-sticky moves one partition to it, revoking it from the
        # processor while paused) and stays until the processor has finished the other partition's
        # work and sits idle; then it leaves and the partition comes back, still paused in librdkafka.
        other = KafkaSession.connect(k, "w-b")
        seen = Members()
        other.start(req, seen)
        deadline = time.monotonic() + 60
        while not seen.assigned:
            assert time.monotonic() < deadline, "the second member never got a partition"
            other.poll(0.1)
        other.pause(sorted(seen.assigned))
        idle_since = None
        deadline = time.monotonic() + 60
        while idle_since is None or time.monotonic() - idle_since < 1.0:
            assert time.monotonic() < deadline, "the processor never went idle"
            other.poll(0.1)
            busy = processor.ledger.in_flight() > 0
            idle_since = None if busy else (idle_since or time.monotonic())
        other.close()
        # Well inside the stall guard's 45 s: only a resume at the assignment can get it going.
        results = read_all(stack.kafka_bootstrap, res, "TtsResult", timeout=40,
                           stop=lambda got: {r["request_id"] for r in got} >= set(ids))
    finally:
        processor.request_stop()
        runner.join(30)
    answered = sorted(r["request_id"] for r, _ in results)
    assert answered == sorted(ids), f"missing after the rebalance: {sorted(set(ids) - set(answered))}"
    assert metrics.REBALANCES.labels("resync")._value.get() == resyncs, "only the stall guard got it going"
