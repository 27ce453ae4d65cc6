"""A whole ``Processor`` on the in-memory broker and storage, stepped by the test (``run_once``).

The stage threads are real (the processor's own), the engine is the tone stand-in with no sleep,
and nothing touches the network: a test runs in milliseconds.
"""

from __future__ import annotations

import functools
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from processor.audio import encoder_problems
from processor.config import KafkaSettings, S3Settings, Settings, WorkerSettings
from processor.pipeline import Processor
from processor.references import ReferenceCache
from processor.storage import Storage
from processor.voices import VoiceCatalog
from processor.wire import SCHEMA_TOPICS, Codec
from tests.support.audio import voice_clip
from tests.support.memory_broker import MemoryBroker, MemorySession
from tests.support.memory_storage import MemoryStorage
from tests.support.tone_engine import ToneEngine
from tests.support.workers import request

BUCKET = "bucket"
VOICE = f"s3://{BUCKET}/voice.wav"
TOPICS = {"request_topic": "req", "result_topic": "res", "progress_topic": "prog", "health_topic": "health",
          "dlq_topic": "dlq"}
CODECS = {name: Codec(name) for name in SCHEMA_TOPICS}


class ManualClock:
    """A processor clock that moves only when the test moves it: timeouts, retry intervals and
    liveness windows then pass in microseconds, and exactly when the test says."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class EventSink:
    """The plain (non-transactional) producer: progress and health events, kept in a list."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes | None]] = []

    def produce(self, topic: str, value: bytes, key: bytes | None = None, **_: Any) -> None:
        self.sent.append((topic, value, key))

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        return 0


@functools.cache
def _base_settings() -> Settings:
    # Reading the environment for every settings group costs ~20 ms; rigs differ only in the cache
    # directory and the worker settings, so the rest is read once.
    return Settings(kafka=KafkaSettings(group_id="g", **TOPICS), s3=S3Settings(bucket=BUCKET))


def settings(tmp: Path, **worker: Any) -> Settings:
    w = {"id": "w-test", "retry_base_seconds": 0.01, "retry_max_seconds": 0.02, "max_attempts": 3,
         "shutdown_grace_seconds": 5.0, **worker}
    base = _base_settings()
    return base.model_copy(update={"s3": base.s3.model_copy(update={"reference_cache_dir": str(tmp / "refs")}),
                                   "worker": WorkerSettings(**w)})


class Rig:
    def __init__(self, tmp: Path, partitions: int = 2, broker: MemoryBroker | None = None,
                 storage: MemoryStorage | None = None, engine: Any = None,
                 clock: Callable[[], float] | None = None, session: MemorySession | None = None,
                 **worker: Any) -> None:
        self.tmp = tmp
        self.broker = broker or MemoryBroker()
        self.broker.create_topic("req", partitions)
        self.broker.create_topic("res", partitions)
        self.broker.create_topic("dlq", 1)
        self.storage = storage or MemoryStorage()
        self.storage.objects[(BUCKET, "voice.wav")] = (voice_clip(), {})
        self.settings = settings(tmp, **worker)
        self.engine = engine or ToneEngine()
        encoder_problems()  # once per process, as the worker does at start-up, not in a timed step
        self.events = EventSink()
        self.session: MemorySession = session or self.broker.session()
        store = cast(Storage, self.storage)
        self.processor = Processor(
            self.settings, self.engine, store, self.session, self.events, CODECS,
            references=ReferenceCache(store, self.settings.s3),
            voices=VoiceCatalog(store, BUCKET, "voices"),
            **({"clock": clock} if clock is not None else {}),
        )
        # Tests stop hundreds of processors: a stage thread waiting for room in the next queue looks
        # for the stop signal every 5 ms instead of 100 ms, so no stop() waits on it.
        self.processor.stage_wake_seconds = 0.005
        self.n = 0

    @property
    def partitions(self) -> list[tuple[str, int]]:
        return self.broker.partitions("req")

    def submit(self, ids: list[str] | None = None, *, partition: int = 0, raw: bytes | None = None,
               **fields: Any) -> list[str]:
        """Requests with these ids (or raw bytes) on one partition; returns the ids."""
        if raw is not None:
            self.broker.produce("req", partition, raw, b"raw")
            return []
        out = []
        voice = fields.pop("voice", VOICE)
        for rid in ids or [f"r{self.n}"]:
            self.n += 1
            self.broker.produce("req", partition, CODECS["TtsRequest"].encode(request(rid, voice, **fields)),
                                rid.encode())
            out.append(rid)
        return out

    def start(self, assign: bool = True) -> Rig:
        self.processor.start()
        if assign:
            self.broker.assign(self.session, self.partitions)
        return self

    def step_until(self, cond: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise AssertionError("condition not reached in time")
            self.processor.run_once()

    def results(self) -> list[dict[str, Any]]:
        return [CODECS["TtsResult"].decode(r.value) for r in self.broker.read("res")]

    def dead_letters(self) -> list[dict[str, Any]]:
        return [CODECS["DeadLetter"].decode(r.value) for r in self.broker.read("dlq")]

    def answered(self) -> Counter[str]:
        """request_id → how many committed results it has."""
        return Counter(r["request_id"] for r in self.results())

    def committed(self, partition: int = 0) -> int:
        return self.broker.committed.get(("req", partition), 0)

    def stop(self) -> None:
        self.processor.stop()
