"""Regression tests for the delivery defects of issue 10, one (or more) per defect, named after it.

They run the real Processor over the in-memory broker and storage (tests/support), or the real
KafkaSession over a scripted librdkafka client, so each takes well under a second.
"""

from __future__ import annotations

import errno
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from processor.config import S3Settings
from processor.health import HealthReporter, WorkerState
from processor.pipeline import SEEK_RETRY_SECONDS
from processor.references import ReferenceCache
from processor.session import FatalKafkaError, KafkaSession, TransactionAborted
from processor.voices import VoiceCatalog
from tests.support.audio import voice_clip
from tests.support.memory_storage import MemoryStorage
from tests.support.rig import BUCKET, ManualClock, Rig

P0 = ("req", 0)


class Gate:
    """A storage fault that holds every matching call until ``open()``: a hung S3."""

    def __init__(self, op: str) -> None:
        self.op = op
        self.opened = threading.Event()
        self.waiting = threading.Event()

    def __call__(self, op: str, key: str) -> None:
        if op == self.op and not self.opened.is_set():
            self.waiting.set()
            self.opened.wait(10)

    def open(self) -> None:
        self.opened.set()


def entry_states(rig: Rig, tp: tuple[str, int] = P0) -> list[str]:
    return [e.state for e in rig.processor.ledger.entries.get(tp, [])]


def drain(rig: Rig) -> None:
    """SIGTERM: run the loop until the drain is over (the caller then calls rig.stop())."""
    rig.processor.request_stop()
    deadline = time.monotonic() + 10
    while rig.processor.run_once():
        assert time.monotonic() < deadline, "drain did not finish"


def take_over(rig: Rig, tmp: Path) -> Rig:
    """A second worker on the same broker takes every partition and serves until all is committed."""
    rig2 = Rig(tmp / "second", broker=rig.broker).start()
    total = len(rig.broker.logs[P0])
    rig2.step_until(lambda: rig2.committed(0) == total)
    rig2.stop()
    return rig2


# ------------------------------------------------------------------ defect 1


def test_defect1_drain_never_commits_past_dropped(tmp_path: Path) -> None:
    """Offset 0 valid and still preparing, offset 1 invalid (error outcome at once), then SIGTERM:
    the drain drops offset 0, so offset 1's result must not be committed over it (the old code
    committed offset 2 and offset 0 never got a result)."""
    gate = Gate("head")
    rig = Rig(tmp_path, storage=MemoryStorage(fault=gate), prefetch=2)  # both taken while one prepares
    rig.submit(["valid"]) + rig.submit(["invalid"], text="")
    rig.start()
    rig.step_until(lambda: entry_states(rig) == ["preparing", "done"] and gate.waiting.is_set())
    drain(rig)
    gate.open()
    rig.stop()
    assert rig.committed(0) == 0 and rig.results() == []
    take_over(rig, tmp_path)
    assert rig.answered() == {"valid": 1, "invalid": 1}


# ------------------------------------------------------------------ defect 2


def test_defect2_a_drop_is_never_revived(tmp_path: Path) -> None:
    """A job dropped while it waits for (or is in) the prepare step never reaches the GPU or S3."""
    gate = Gate("head")
    rig = Rig(tmp_path, storage=MemoryStorage(fault=gate), prefetch=2)  # both taken while one prepares
    rig.submit(["first", "second"])
    rig.start()
    rig.step_until(lambda: gate.waiting.is_set() and len(entry_states(rig)) == 2)
    jobs = list(rig.processor.ledger.entries[P0])
    drain(rig)
    gate.open()
    time.sleep(0.3)  # the prepare step finishes its download now; the GPU must refuse the dropped job
    rig.stop()
    assert [j.state for j in jobs] == ["dropped", "dropped"]
    assert rig.engine.calls == 0 and rig.storage.puts == []
    take_over(rig, tmp_path)
    assert rig.answered() == {"first": 1, "second": 1}


# ------------------------------------------------------------------ defect 3


def test_defect3_a_pause_never_survives_a_rebalance(tmp_path: Path) -> None:
    """librdkafka (and the memory broker) keep an application pause across revoke and re-assign; the
    processor resumes at every assignment change, so the partition delivers again."""
    gate = Gate("head")
    rig = Rig(tmp_path, storage=MemoryStorage(fault=gate), prefetch=1)
    rig.submit([f"r{i}" for i in range(6)])
    rig.start()
    rig.step_until(lambda: P0 in rig.session.paused)
    rig.broker.revoke(rig.session, [P0])
    rig.processor.run_once()
    rig.broker.assign(rig.session, [P0])
    rig.processor.run_once()
    gate.open()
    rig.step_until(lambda: rig.committed(0) == 6)
    rig.stop()
    assert rig.answered() == {f"r{i}": 1 for i in range(6)}


# ------------------------------------------------------------------ defect 4


def test_defect4_an_unforeseen_failure_ends_the_request_not_the_thread(tmp_path: Path) -> None:
    def disk_full(op: str, key: str) -> None:
        if key == "voice.wav" and op == "get" and not hit:
            hit.append(1)
            raise OSError(errno.ENOSPC, "No space left on device")

    hit: list[int] = []
    rig = Rig(tmp_path, storage=MemoryStorage(fault=disk_full))
    # A preset whose manifest is valid JSON but not an object: skipped, so "unknown voice".
    rig.storage.objects[(BUCKET, "voices/odd/voice.json")] = (b"[1, 2]", {})
    rig.submit(["disk-full"]) + rig.submit(["odd-voice"], voice="odd") + rig.submit(["fine"])
    rig.start()
    rig.step_until(lambda: rig.committed(0) == 3)
    rig.stop()
    codes = {r["request_id"]: r["error_code"] for r in rig.results()}
    assert codes == {"disk-full": "internal_error", "odd-voice": "unknown_voice", "fine": None}
    assert rig.processor.snapshot.thread_failure is None


def test_defect4_a_dead_stage_thread_fails_liveness(tmp_path: Path) -> None:
    class Bug(BaseException):
        pass

    def broken(job: Any) -> None:
        raise Bug("a bug in the glue")

    rig = Rig(tmp_path)
    rig.processor.stages.prepare = broken  # type: ignore[method-assign]
    rig.submit(["x"])
    rig.start()
    state = WorkerState(stall_seconds=60, job_timeout_seconds=60)
    state.processor = rig.processor
    rig.step_until(lambda: rig.processor.snapshot.thread_failure is not None)
    ok, why = state.live()
    assert not ok and why.startswith("prepare thread died: Bug")
    rig.stop()


# ------------------------------------------------------------------ defect 5


class ScriptedConsumer:
    """Just enough of confluent_kafka.Consumer for KafkaSession, with errors on demand."""

    def __init__(self) -> None:
        self.seek_error: KafkaError | None = KafkaError(KafkaError._STATE, "Erroneous state")
        self.sought: list[tuple[str, int, int]] = []

    def committed(self, tps: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        return [TopicPartition(t.topic, t.partition, 7) for t in tps]

    def seek(self, tp: TopicPartition) -> None:
        if self.seek_error is not None:
            raise KafkaException(self.seek_error)
        self.sought.append((tp.topic, tp.partition, tp.offset))

    def consumer_group_metadata(self) -> object:
        return object()


def test_defect5_a_seek_error_mid_rebalance_is_caught(tmp_path: Path) -> None:
    consumer = ScriptedConsumer()
    session = KafkaSession(consumer, object())  # type: ignore[arg-type]
    assert session.seek_to_committed([P0]) == [P0]  # reported, not raised
    consumer.seek_error = None
    assert session.seek_to_committed([P0]) == [] and consumer.sought == [("req", 0, 7)]


def test_defect5_a_partition_whose_seek_failed_is_held_until_a_seek_succeeds(tmp_path: Path) -> None:
    """After an abort the rewind's seek fails: taking records from where the fetcher stood would let
    the next commit skip the aborted ones. The partition is held and the seek retried."""
    clock = ManualClock()
    rig = Rig(tmp_path, clock=clock)
    rig.submit(["a", "b"])
    rig.session.fail_next_commit("abort")
    rig.session.seek_failures = 1
    rig.start()
    rig.step_until(lambda: P0 in rig.processor.ledger.held)
    for _ in range(20):  # the retry is not due yet: still held, nothing taken, nothing committed
        rig.processor.run_once()
    assert P0 in rig.processor.ledger.held and entry_states(rig) == [] and rig.committed(0) == 0
    clock.advance(SEEK_RETRY_SECONDS)
    rig.step_until(lambda: rig.committed(0) == 2)
    rig.stop()
    assert rig.answered() == {"a": 1, "b": 1}


# ------------------------------------------------------------------ defect 6


class ScriptedProducer:
    def __init__(self, commit_error: KafkaError | None = None, abort_error: KafkaError | None = None) -> None:
        self.commit_error = commit_error
        self.abort_error = abort_error
        self.calls: list[str] = []

    def begin_transaction(self) -> None:
        self.calls.append("begin")

    def produce(self, *args: Any, **kwargs: Any) -> None:
        self.calls.append("produce")

    def send_offsets_to_transaction(self, *args: Any) -> None:
        self.calls.append("send_offsets")

    def commit_transaction(self, timeout: float) -> None:
        self.calls.append("commit")
        if self.commit_error is not None:
            time.sleep(0.01)
            raise KafkaException(self.commit_error)

    def abort_transaction(self, timeout: float) -> None:
        self.calls.append("abort")
        if self.abort_error is not None:
            time.sleep(0.01)
            raise KafkaException(self.abort_error)


def test_defect6_a_commit_that_keeps_timing_out_aborts_within_its_budget() -> None:
    timeout = KafkaError(KafkaError._TIMED_OUT, "timed out", retriable=True)
    producer = ScriptedProducer(commit_error=timeout)
    session = KafkaSession(ScriptedConsumer(), producer, budget_seconds=0.15)  # type: ignore[arg-type]
    t0 = time.monotonic()
    with pytest.raises(TransactionAborted):
        session.commit([], {P0: 1})
    assert time.monotonic() - t0 < 0.5
    assert producer.calls.count("commit") > 1 and producer.calls[-1] == "abort"


def test_defect6_an_abort_that_never_succeeds_is_fatal_within_its_budget() -> None:
    timeout = KafkaError(KafkaError._TIMED_OUT, "timed out", retriable=True)
    producer = ScriptedProducer(commit_error=timeout, abort_error=timeout)
    session = KafkaSession(ScriptedConsumer(), producer, budget_seconds=0.15)  # type: ignore[arg-type]
    t0 = time.monotonic()
    with pytest.raises(FatalKafkaError):
        session.commit([], {P0: 1})
    assert time.monotonic() - t0 < 0.75


def test_defect6_a_hanging_voice_listing_holds_no_other_reader(tmp_path: Path) -> None:
    gate = Gate("list")
    gate.opened.set()
    storage = MemoryStorage(fault=gate)
    catalog = VoiceCatalog(storage, BUCKET, "voices")  # type: ignore[arg-type]
    catalog.list()  # warm
    gate.opened.clear()
    hung = threading.Thread(target=catalog.list, kwargs={"refresh": True}, daemon=True)
    hung.start()
    assert gate.waiting.wait(2)
    got: list[object] = []
    reader = threading.Thread(target=lambda: got.append(catalog.list()), daemon=True)
    reader.start()
    reader.join(1.0)
    gate.open()
    assert got == [{}], "a cached read waited on another thread's S3 listing"


def test_defect6_the_poll_loop_never_waits_on_s3(tmp_path: Path) -> None:
    """With every S3 call hung, the poll loop keeps ticking and health keeps publishing."""
    gate = Gate("list")
    clock = ManualClock()
    rig = Rig(tmp_path, storage=MemoryStorage(fault=gate), clock=clock)
    state = WorkerState(stall_seconds=1, job_timeout_seconds=60)
    state.processor = rig.processor
    state.status = "ready"
    reporter = HealthReporter(state, rig.processor, "w-test", interval=0.1)
    rig.start()
    reporter.start()
    t0, deadline = clock(), time.monotonic() + 10
    # Until the health thread is stuck in S3, and then for longer than the stall limit (the loop's
    # clock moves 0.1 s a turn), every turn returns and liveness holds.
    while not gate.waiting.is_set() or clock() - t0 < 1.5:
        assert time.monotonic() < deadline, "the health thread never reached S3"
        rig.processor.run_once()
        assert state.live() == (True, "ok")
        if gate.waiting.is_set():
            clock.advance(0.1)
    gate.open()
    reporter.stop()
    rig.stop()


# ------------------------------------------------------------------ defect 7


def test_defect7_every_thread_stops_and_is_joined(tmp_path: Path) -> None:
    before = {t for t in threading.enumerate() if t.name.startswith("tts-")}
    rig = Rig(tmp_path)
    rig.submit(["a"])
    rig.start()
    rig.step_until(lambda: rig.committed(0) == 1)
    rig.stop()
    left = {t for t in threading.enumerate() if t.name.startswith("tts-")} - before
    assert left == set()


def test_defect7_a_failed_cache_write_leaves_no_tmp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = MemoryStorage()
    storage.objects[(BUCKET, "v.wav")] = (voice_clip(), {})
    cache = ReferenceCache(storage, S3Settings(bucket=BUCKET, reference_cache_dir=str(tmp_path)))  # type: ignore[arg-type]
    real_write = Path.write_bytes

    def full_disk(self: Path, data: bytes) -> int:
        real_write(self, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    from processor.request import S3Location

    with pytest.raises(OSError):
        cache.fetch(S3Location(BUCKET, "v.wav"))
    assert list(tmp_path.iterdir()) == []
