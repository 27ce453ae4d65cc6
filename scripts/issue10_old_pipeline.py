"""Issue 10's defect scenarios against the OLD pipeline (commit 01ddf69), which has no session seam:
its Processor is driven through a small shim of confluent-kafka's Consumer/Producer that behaves like
librdkafka where it matters (rebalance callbacks inside poll, an application pause that survives
revoke and re-assign). Each scenario prints whether the guarantee held there. The regression tests
for the new code are tests/unit/test_defects.py; this is the evidence that they describe real
defects of the old one. Not part of the test suite (it imports the old code).

    git worktree add --detach /tmp/old-pipeline 01ddf69
    cp tests/support/memory_storage.py /tmp/old-pipeline/tests/support/
    cd /tmp/old-pipeline && PYTHONPATH=. <repo>/.venv/bin/python <repo>/scripts/issue10_old_pipeline.py

Result on 01ddf69 (2026-11-29): every scenario below shows its defect.
"""

from __future__ import annotations

import contextlib
import errno
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from processor.config import KafkaSettings, S3Settings, Settings, WorkerSettings
from processor.health import WorkerState
from processor.pipeline import Processor
from processor.wire import Codec
from tests.support.audio import voice_clip
from tests.support.memory_storage import MemoryStorage
from tests.support.tone_engine import ToneEngine
from tests.support.workers import request

T = "req"
CODECS = {n: Codec(n) for n in ("TtsRequest", "TtsResult", "TtsProgress", "WorkerHealth", "DeadLetter")}


class Msg:
    def __init__(self, tp, offset, key, value):
        self._tp, self._offset, self._key, self._value = tp, offset, key, value

    def error(self): return None
    def topic(self): return self._tp[0]
    def partition(self): return self._tp[1]
    def offset(self): return self._offset
    def key(self): return self._key
    def value(self): return self._value
    def headers(self): return None


class Broker:
    def __init__(self, partitions=1):
        self.logs = {(T, p): [] for p in range(partitions)}
        self.committed = {}
        self.results = []


class ShimConsumer:
    """librdkafka-like: callbacks inside poll; an app pause survives revoke and re-assign."""

    def __init__(self, b):
        self.b, self.assigned, self.pos, self.paused, self.events = b, [], {}, set(), deque()
        self.seek_error = None

    def subscribe(self, topics, on_assign, on_revoke, on_lost):
        self.cbs = {"assign": on_assign, "revoke": on_revoke, "lost": on_lost}
        self.events.append(("assign", list(self.b.logs)))

    def poll(self, timeout):
        while self.events:
            kind, tps = self.events.popleft()
            if kind == "assign":
                self.assigned += tps
                for tp in tps:
                    self.pos[tp] = self.b.committed.get(tp, 0)
            self.cbs[kind](self, [TopicPartition(*tp) for tp in tps])
            if kind != "assign":
                for tp in tps:
                    self.assigned.remove(tp)
        for tp in self.assigned:
            if tp not in self.paused and self.pos[tp] < len(self.b.logs[tp]):
                off = self.pos[tp]
                self.pos[tp] += 1
                k, v = self.b.logs[tp][off]
                return Msg(tp, off, k, v)
        time.sleep(min(timeout, 0.01))
        return None

    def pause(self, tps): self.paused |= {(t.topic, t.partition) for t in tps}
    def resume(self, tps): self.paused -= {(t.topic, t.partition) for t in tps}

    def seek(self, tp):
        if self.seek_error is not None:
            raise KafkaException(self.seek_error)
        self.pos[(tp.topic, tp.partition)] = max(0, tp.offset)

    def committed(self, tps, timeout=None):
        return [TopicPartition(t.topic, t.partition, self.b.committed.get((t.topic, t.partition), -1001)) for t in tps]

    def consumer_group_metadata(self): return object()

    def close(self):
        self.cbs["revoke"](self, [TopicPartition(*tp) for tp in self.assigned])

    def get_watermark_offsets(self, tp, timeout=None, cached=False):
        return 0, len(self.b.logs[(tp.topic, tp.partition)])


class ShimProducer:
    def __init__(self, b):
        self.b, self.pending, self.offsets = b, [], []
        self.commit_errors: deque = deque()
        self.timeouts_asked = 0.0

    def init_transactions(self, t): pass
    def begin_transaction(self): self.pending, self.offsets = [], []
    def produce(self, topic, value, key=None, headers=None): self.pending.append((topic, value))
    def send_offsets_to_transaction(self, tps, meta, timeout): self.offsets = tps

    def commit_transaction(self, timeout=None):
        self.timeouts_asked += timeout or 0
        if self.commit_errors:
            last_retriable = len(self.commit_errors) == 1 and self.commit_errors[0].retriable()
            err = self.commit_errors[0] if last_retriable else self.commit_errors.popleft()
            raise KafkaException(err)
        self.b.results += self.pending
        for tp in self.offsets:
            self.b.committed[(tp.topic, tp.partition)] = tp.offset

    def abort_transaction(self, timeout=None): self.pending = []
    def flush(self, t=None): return 0
    def poll(self, t=None): return 0


class Sink:
    def produce(self, *a, **k): pass
    def poll(self, t=0): return 0
    def flush(self, t=0): return 0


class Gate:
    def __init__(self, op):
        self.op, self.opened, self.waiting = op, threading.Event(), threading.Event()

    def __call__(self, op, key):
        if op == self.op and not self.opened.is_set():
            self.waiting.set()
            self.opened.wait(20)


def make(tmp, storage, partitions=1, **worker):
    b = Broker(partitions)
    storage.objects[("bucket", "voice.wav")] = (voice_clip(), {})
    s = Settings(kafka=KafkaSettings(group_id="g", request_topic=T, result_topic="res", progress_topic="prog",
                                     health_topic="health", dlq_topic="dlq"),
                 s3=S3Settings(bucket="bucket", reference_cache_dir=str(Path(tmp) / "refs")),
                 worker=WorkerSettings(id="old", retry_base_seconds=0.01, retry_max_seconds=0.02, max_attempts=3,
                                       shutdown_grace_seconds=5, **worker))
    c, prod = ShimConsumer(b), ShimProducer(b)
    p = Processor(s, ToneEngine(), storage, c, prod, Sink(), CODECS)
    return b, c, prod, p


def submit(b, ids, p=0, **fields):
    for rid in ids:
        value = CODECS["TtsRequest"].encode(request(rid, "s3://bucket/voice.wav", **fields))
        b.logs[(T, p)].append((rid.encode(), value))


def run_in_thread(p, tick=None):
    box = {}

    def target():
        try:
            p.run(on_tick=tick)
        except BaseException as exc:  # noqa: BLE001 - what the old run() raised is the finding
            box["exc"] = exc

    th = threading.Thread(target=target, daemon=True)
    th.start()
    return th, box


def verdict(name, held, detail):
    print(f"{name}: {'guarantee HELD' if held else 'DEFECT SHOWN'} ({detail})")


def defect1(tmp):
    gate = Gate("head")
    b, _c, _prod, p = make(tmp, MemoryStorage(fault=gate))
    submit(b, ["valid"])
    submit(b, ["invalid"], text="")
    stopped = []

    def tick():
        states = [j.state for j in p.pending.get((T, 0), [])]
        if not stopped and states == ["preparing", "done"]:
            stopped.append(1)
            p.request_stop()

    th, _box = run_in_thread(p, tick)
    th.join(15)
    gate.opened.set()
    verdict("defect 1 (drain commits past a dropped request)", b.committed.get((T, 0), 0) == 0,
            f"committed offset {b.committed.get((T, 0), 0)} with {len(b.results)} result(s) after SIGTERM")


def defect2(tmp):
    """Interleave exactly where the race bites: job A is on the GPU, job B's prepare has passed its
    _current() check, and the drain (SIGTERM) lands before B's state = "preparing" (a trace hook runs
    the poll thread's drain at that line). A dropped job must never reach the GPU or S3."""
    import inspect

    b, _c, _prod, p = make(tmp, MemoryStorage())
    p.engine.seconds = 0.6
    submit(b, ["a-on-gpu", "b-dropped"])
    src, first = inspect.getsourcelines(Processor._prepare_loop)
    line = first + next(i for i, text in enumerate(src) if 'job.state = "preparing"' in text)
    fired = []

    def local(frame, event, arg):
        if event == "line" and frame.f_lineno == line and not fired and frame.f_locals["job"].origin.offset == 1:
            fired.append(1)
            a = p.pending[(T, 0)][0]
            deadline = time.monotonic() + 3
            while a.state != "synthesizing" and time.monotonic() < deadline:
                time.sleep(0.005)  # A reaches the GPU first
            p.request_stop()
            p._start_drain()  # what the poll thread does on SIGTERM, at this very moment
            fired.append(frame.f_locals["job"].state)
        return local

    def tracer(frame, event, arg):
        return local if frame.f_code is Processor._prepare_loop.__code__ else None

    threading.settrace(tracer)
    try:
        th, _box = run_in_thread(p)
        th.join(15)
    finally:
        threading.settrace(None)
    time.sleep(1.0)
    puts = [k for _, k in p.storage.puts]
    verdict("defect 2 (a drop revived by the prepare thread)", p.engine.calls <= 1 and len(puts) <= 1,
            f"B was {fired[1:]} at the drain; engine ran {p.engine.calls} job(s), uploads {puts}; "
            f"committed offset {b.committed.get((T, 0), 0)}")


def storage_puts(p):
    return p.storage.puts


def defect3(tmp):
    gate = Gate("head")
    b, c, _prod, p = make(tmp, MemoryStorage(fault=gate), prefetch=1)
    submit(b, [f"r{i}" for i in range(6)])
    th, _box = run_in_thread(p)
    deadline = time.monotonic() + 10
    while (T, 0) not in c.paused and time.monotonic() < deadline:
        time.sleep(0.01)
    c.events.append(("revoke", [(T, 0)]))
    time.sleep(0.2)
    c.events.append(("assign", [(T, 0)]))
    time.sleep(0.2)
    gate.opened.set()
    deadline = time.monotonic() + 8
    while b.committed.get((T, 0), 0) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    p.request_stop()
    th.join(10)
    verdict("defect 3 (an app pause survives a rebalance)", b.committed.get((T, 0), 0) == 6,
            f"{b.committed.get((T, 0), 0)}/6 committed 8 s after the re-assign")


def defect4(tmp):
    hit = []

    def disk_full(op, key):
        if op == "get" and key == "voice.wav" and not hit:
            hit.append(1)
            raise OSError(errno.ENOSPC, "No space left on device")

    b, _c, _prod, p = make(tmp, MemoryStorage(fault=disk_full))
    submit(b, ["disk-full", "next-1", "next-2"])
    state = WorkerState(60, 60)
    state.processor = p
    th, _box = run_in_thread(p)
    time.sleep(4)
    live = state.live()
    p.request_stop()
    th.join(10)
    verdict("defect 4 (a stage thread dies silently)", b.committed.get((T, 0), 0) == 3 or not live[0],
            f"{b.committed.get((T, 0), 0)}/3 committed after 4 s; /livez says {live}")


def defect5(tmp):
    b, c, prod, p = make(tmp, MemoryStorage())
    submit(b, ["a", "b"])
    prod.commit_errors.append(KafkaError(KafkaError._TRANSPORT, "broker gone", txn_requires_abort=True))
    c.seek_error = KafkaError(KafkaError._STATE, "Erroneous state")
    th, box = run_in_thread(p)
    th.join(8)
    crashed = "exc" in box
    if not crashed:
        p.request_stop()
        th.join(10)
    verdict("defect 5 (seek error mid-rebalance crashes the worker)", not crashed,
            f"run() raised {type(box.get('exc')).__name__}: {box.get('exc')}" if crashed else "run() kept going")


def defect6_commit_budget(tmp):
    _b, _c, prod, p = make(tmp, MemoryStorage())
    prod.commit_errors.append(KafkaError(KafkaError._TIMED_OUT, "timed out", retriable=True))
    t0 = time.monotonic()
    with contextlib.suppress(KafkaException):
        p._commit_transaction()
    slept = time.monotonic() - t0
    worst = prod.timeouts_asked + slept
    verdict("defect 6 (commit retry loop outlasts liveness, 60 s)", worst <= 60,
            f"commit_transaction given {prod.timeouts_asked:.0f} s of timeouts + {slept:.1f} s of sleeps "
            f"= up to {worst:.0f} s on the poll thread")


def defect6_voice_lock(tmp):
    from processor.voices import VoiceCatalog

    gate = Gate("list")
    gate.opened.set()
    catalog = VoiceCatalog(MemoryStorage(fault=gate), "bucket", "voices")
    catalog.list()
    gate.opened.clear()
    threading.Thread(target=catalog.list, kwargs={"refresh": True}, daemon=True).start()
    gate.waiting.wait(2)
    got = []
    r = threading.Thread(target=lambda: got.append(catalog.list()), daemon=True)
    r.start()
    r.join(1.0)
    gate.opened.set()
    verdict("defect 6 (VoiceCatalog holds its lock through an S3 load)", bool(got),
            "a cached read returned" if got else "a cached read waited on another thread's hanging S3 list")


def defect7_threads(tmp):
    before = {t for t in threading.enumerate() if t.name.startswith("tts-")}
    b, _c, _prod, p = make(tmp, MemoryStorage())
    submit(b, ["a"])
    th, _box = run_in_thread(p)
    deadline = time.monotonic() + 10
    while b.committed.get((T, 0), 0) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    p.request_stop()
    th.join(10)
    time.sleep(0.5)
    left = sorted(t.name for t in threading.enumerate()
                  if t.name.startswith("tts-") and t not in before and t.is_alive())
    verdict("defect 7 (stage threads never stop)", not left, f"alive after run() returned: {left}")


def defect7_tmp(tmp):
    from processor.references import ReferenceCache
    from processor.request import S3Location

    storage = MemoryStorage()
    storage.objects[("bucket", "v.wav")] = (voice_clip(), {})
    d = Path(tmp) / "cache"
    cache = ReferenceCache(storage, S3Settings(bucket="bucket", reference_cache_dir=str(d)))
    real = Path.write_bytes

    def full_disk(self, data):
        real(self, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    Path.write_bytes = full_disk
    try:
        cache.fetch(S3Location("bucket", "v.wav"))
    except OSError:
        pass
    finally:
        Path.write_bytes = real
    left = [p.name for p in d.iterdir()]
    verdict("defect 7 (failed cache write leaves *.tmp)", not left, f"left in the cache dir: {left}")


if __name__ == "__main__":
    for fn in (defect1, defect2, defect3, defect4, defect5, defect6_commit_budget, defect6_voice_lock, defect7_threads,
               defect7_tmp):
        with tempfile.TemporaryDirectory() as tmp:
            try:
                fn(tmp)
            except Exception as exc:  # noqa: BLE001 - report and go on to the next scenario
                print(f"{fn.__name__}: scenario error {type(exc).__name__}: {exc}")
        sys.stdout.flush()
