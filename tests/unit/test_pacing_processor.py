"""The poll loop's timing, on the in-memory broker with an injected clock that never moves unless the
test moves it: a lone outcome commits without waiting for the batch window, outcomes that arrive
together share one transaction, intake takes one request ahead just in time, and a transaction is
opened while a job uploads."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from processor.audio import encoder_problems
from processor.engine.base import ProgressCallback, SynthesisSpec, Synthesized
from processor.errors import ErrorCode, TtsError
from processor.pacing import INTAKE_LEAD_SECONDS, SHORT_POLL_SECONDS
from processor.pipeline import EARLY_TRANSACTION_MAX_SECONDS, FLIGHT_STALE_SECONDS
from tests.support.rig import BUCKET, Rig
from tests.support.tone_engine import ToneEngine


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class GatedEngine(ToneEngine):
    """Holds the "GPU" on requests whose text says HOLD until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.holding = threading.Event()

    def synthesize(self, spec: SynthesisSpec, on_progress: ProgressCallback | None = None) -> Synthesized:
        if "HOLD" in spec.text:
            self.holding.set()
            assert self.release.wait(10)
        return super().synthesize(spec, on_progress)


def rig(tmp_path: Path, **kw: Any) -> tuple[Rig, GatedEngine, Clock]:
    encoder_problems()  # once per process, as the worker does at start-up: not inside a timed step
    engine, clock = GatedEngine(), Clock()
    return Rig(tmp_path, engine=engine, clock=clock, **kw), engine, clock


def test_a_lone_outcome_commits_without_waiting_for_the_batch_window(tmp_path: Path) -> None:
    r, engine, _ = rig(tmp_path)
    r.submit(["held"], partition=1, text="HOLD this one on the GPU")
    r.submit(["lone"], partition=0, voice="s3://not-allowed/voice.wav")  # an error outcome, no GPU
    r.start()
    try:
        # The clock never moves, so no batch window ever expires: the error result of "lone" commits
        # while "held" is still on the GPU because nothing else is about to be ready.
        r.step_until(lambda: engine.holding.is_set() and r.committed(0) == 1)
        assert r.committed(1) == 0 and r.broker.transactions == 1
    finally:
        engine.release.set()
    r.step_until(lambda: r.committed(1) == 1)
    r.stop()


def test_outcomes_ready_together_share_one_transaction(tmp_path: Path) -> None:
    r, _, _ = rig(tmp_path)
    for _ in range(3):
        r.submit(raw=b"\x00 not an avro record", partition=0)
    r.start()
    r.step_until(lambda: r.committed(0) == 3)
    r.stop()
    assert len(r.dead_letters()) == 3
    assert r.broker.transactions == 1


def test_one_request_waits_ahead_of_the_first_job_of_unknown_length(tmp_path: Path) -> None:
    r, engine, _ = rig(tmp_path)
    r.submit(["a", "b", "c"], partition=0, text="HOLD please")
    r.start()
    try:
        r.step_until(engine.holding.is_set)
        for _ in range(20):
            r.processor.run_once()
        assert r.processor.ledger.in_flight() == 2  # one on the GPU, one ahead: no start-up stall
    finally:
        engine.release.set()
    r.step_until(lambda: r.committed(0) == 3)
    r.stop()


def test_the_next_request_is_taken_only_when_the_job_on_the_gpu_is_about_to_end(tmp_path: Path) -> None:
    r, engine, clock = rig(tmp_path)
    r.submit(["a", "b"], partition=0, text="HOLD twelve chars")  # 17 characters
    r.processor.job_length.per_char = 0.1  # as if learned: 1.7 s per request of this length
    r.start()
    try:
        r.step_until(engine.holding.is_set)
        for _ in range(20):
            r.processor.run_once()
        assert r.processor.ledger.in_flight() == 1
        clock.now += 1.7 - INTAKE_LEAD_SECONDS + 0.01
        r.step_until(lambda: r.processor.ledger.in_flight() == 2)
    finally:
        engine.release.set()
    r.step_until(lambda: r.committed(0) == 2)
    r.stop()


def test_a_lone_request_leaves_intake_open_until_a_second_one_comes(tmp_path: Path) -> None:
    """With nothing else waiting there is nothing to hold back: intake is not paused (nor resumed and
    re-fetched later) for a lone job, and the loop does not wake at its intake boundary. The pause
    comes with the request that arrives meanwhile, so at most one waits ahead, as before."""
    r, engine, _ = rig(tmp_path)
    r.submit(["a"], partition=0, text="HOLD twelve chars")
    r.processor.job_length.per_char = 0.03  # as if learned: 0.51 s per request of this length
    r.start()
    try:
        r.step_until(engine.holding.is_set)
        for _ in range(20):
            r.processor.run_once()
        assert r.session.paused == set() and r.processor.ledger.paused == set()
        # Asleep to the job's end (0.51 s), not to its intake boundary (0.39 s).
        assert r.processor._poll_timeout() > 0.51 - INTAKE_LEAD_SECONDS + 0.05
        r.submit(["b", "c"], partition=1, text="HOLD twelve chars")
        r.step_until(lambda: r.processor.ledger.in_flight() == 2)
        for _ in range(20):
            r.processor.run_once()
        assert r.processor.ledger.in_flight() == 2  # "c" waits in the log
        assert r.session.paused == set(r.partitions)
    finally:
        engine.release.set()
    r.step_until(lambda: r.committed(0) == 1 and r.committed(1) == 2)
    r.stop()


def test_the_transaction_opens_while_the_upload_runs_and_a_revoke_rolls_it_back(tmp_path: Path) -> None:
    r, _, _ = rig(tmp_path)
    uploading, release = threading.Event(), threading.Event()

    def slow_put(op: str, key: str) -> None:
        if op == "put":
            uploading.set()
            assert release.wait(10)

    r.storage.fault = slow_put
    r.submit(["a"], partition=0)
    r.start()
    try:
        r.step_until(lambda: uploading.is_set() and r.session.opened is not None)
        assert r.session.opened == {("req", 0): 1} and r.committed(0) == 0
        r.broker.revoke(r.session, [("req", 0)])
        r.step_until(lambda: r.session.opened is None)
        assert r.session.aborted_open == 1
    finally:
        release.set()
    for _ in range(20):
        r.processor.run_once()
    r.stop()
    assert r.committed(0) == 0 and r.results() == []


def test_an_early_transaction_commits_with_the_result(tmp_path: Path) -> None:
    r, _, _ = rig(tmp_path)
    uploading, release = threading.Event(), threading.Event()
    r.storage.fault = lambda op, key: (uploading.set(), release.wait(10)) if op == "put" else None
    r.submit(["a"], partition=0)
    r.start()
    r.step_until(lambda: uploading.is_set() and r.session.opened is not None)
    # The result went into the transaction with the offset, before the upload ended.
    assert len(r.session.produced) == 1 and r.committed(0) == 0
    release.set()
    r.step_until(lambda: r.committed(0) == 1)
    r.stop()
    assert r.session.begins == 1 and r.session.aborted_open == 0 and r.session.early_produced == 1
    # Committed by the finish thread's ask once stored (commit_opened); the loop's commit of the same
    # result then had nothing to do: one transaction in all, one result.
    assert r.session.early_commits == 1 and r.broker.transactions == 1
    assert [x["request_id"] for x in r.results()] == ["a"]


def test_a_job_gets_one_early_transaction_however_the_first_one_ended(tmp_path: Path) -> None:
    """Another outcome commits while the early transaction waits for the upload: its commit does not
    cover that transaction, which is rolled back. The job then commits the ordinary way; a second early
    transaction for it could produce its result twice (after commit_opened) or hold the partition."""
    r, _, clock = rig(tmp_path)
    uploading, release = held_puts(r)
    r.submit(["a"], partition=0)
    r.start()
    r.step_until(lambda: uploading.is_set() and r.session.opened is not None)
    r.submit(["k"], partition=1, voice="s3://not-allowed/voice.wav")  # an error outcome at once, no upload
    r.step_until(lambda: r.processor.ledger.committable(2) != [])
    clock.now += 0.1  # past the batch window it waited in for the upload under way
    r.step_until(lambda: r.committed(1) == 1)
    assert r.session.opened is None and r.session.aborted_open == 1
    for _ in range(20):
        r.processor.run_once()
    assert r.session.begins == 1 and r.session.opened is None
    release.set()
    r.step_until(lambda: r.committed(0) == 1)
    r.stop()
    assert r.session.begins == 1 and r.session.early_produced == 0
    assert sorted((x["request_id"], x["status"]) for x in r.results()) == [("a", "success"), ("k", "error")]


def held_puts(r: Rig) -> tuple[threading.Event, threading.Event]:
    """Every put waits for ``release``; ``uploading`` says one has started."""
    uploading, release = threading.Event(), threading.Event()
    r.storage.fault = lambda op, key: (uploading.set(), release.wait(10)) if op == "put" else None
    return uploading, release


def test_an_upload_failing_after_its_result_went_early_commits_the_error_and_never_the_success(
        tmp_path: Path) -> None:
    r, _, _ = rig(tmp_path)
    uploading, release = threading.Event(), threading.Event()

    def refused_put(op: str, key: str) -> None:
        if op == "put":
            uploading.set()
            assert release.wait(10)
            raise TtsError(ErrorCode.STORAGE_REJECTED, "refused (403 AccessDenied)")

    r.storage.fault = refused_put
    r.submit(["a"], partition=0)
    r.start()
    r.step_until(lambda: uploading.is_set() and len(r.session.produced) == 1)
    release.set()
    r.step_until(lambda: r.committed(0) == 1)
    r.stop()
    assert r.session.aborted_open == 1 and r.session.early_produced == 0
    [result] = r.results()
    assert result["request_id"] == "a" and result["status"] == "error"
    assert result["error_code"] == "storage_rejected"


def test_an_early_transaction_outliving_a_slow_upload_is_rolled_back_and_the_job_commits_once(
        tmp_path: Path) -> None:
    """Its produced result holds the partition's last stable offset for read_committed readers: an
    upload in retries must not keep it open."""
    r, _, clock = rig(tmp_path)
    uploading, release = held_puts(r)
    r.submit(["a"], partition=0)
    r.start()
    r.step_until(lambda: uploading.is_set() and len(r.session.produced) == 1)
    clock.now += EARLY_TRANSACTION_MAX_SECONDS + 0.1
    r.step_until(lambda: r.session.opened is None)
    begins = r.session.begins
    for _ in range(20):
        r.processor.run_once()
    # Not opened again for the same job: it would hold the partition again, every 2 s of retries.
    assert r.session.opened is None and r.session.begins == begins and r.session.aborted_open == 1
    assert r.committed(0) == 0
    release.set()
    r.step_until(lambda: r.committed(0) == 1)
    r.stop()
    assert r.session.early_produced == 0 and [x["request_id"] for x in r.results()] == ["a"]


class TwoGates(ToneEngine):
    """Holds requests whose text names GATE1 or GATE2 until that gate opens."""

    def __init__(self) -> None:
        super().__init__()
        self.gates = {name: threading.Event() for name in ("GATE1", "GATE2")}
        self.holding: set[str] = set()

    def synthesize(self, spec: SynthesisSpec, on_progress: ProgressCallback | None = None) -> Synthesized:
        for name, gate in self.gates.items():
            if name in spec.text:
                self.holding.add(name)
                assert gate.wait(10)
        return super().synthesize(spec, on_progress)


def test_no_early_transaction_while_the_gpu_has_work(tmp_path: Path) -> None:
    """Busy, the result's commit costs the GPU nothing: one transactional call instead of two."""
    engine = TwoGates()
    r = Rig(tmp_path, engine=engine, clock=Clock())
    uploading, release = threading.Event(), threading.Event()
    r.storage.fault = lambda op, key: (uploading.set(), release.wait(10)) if op == "put" and "/a/" in key else None
    r.submit(["a"], partition=0, text="GATE1 first")
    r.submit(["b"], partition=0, text="GATE2 on the GPU while a uploads")
    r.start()
    try:
        r.step_until(lambda: "GATE1" in engine.holding and r.processor.ledger.in_flight() == 2)
        engine.gates["GATE1"].set()
        r.step_until(lambda: uploading.is_set() and "GATE2" in engine.holding)
        for _ in range(20):
            r.processor.run_once()
        assert r.session.opened is None and r.session.begins == 0
    finally:
        release.set()
        for gate in engine.gates.values():
            gate.set()
    r.step_until(lambda: r.committed(0) == 2)
    r.stop()
    assert r.session.begins <= 1  # "b", alone at the end, may open one early; "a" never did
    assert sorted(x["request_id"] for x in r.results()) == ["a", "b"]


def test_a_turn_that_changes_nothing_keeps_the_snapshot_until_time_passes(tmp_path: Path) -> None:
    r, engine, clock = rig(tmp_path)
    r.start()
    for _ in range(3):
        r.processor.run_once()
    snap = r.processor.snapshot
    r.processor.run_once()
    assert r.processor.snapshot is snap  # nothing changed and no time passed: no new snapshot
    clock.now += 0.2
    r.processor.run_once()
    assert r.processor.snapshot is not snap and r.processor.snapshot.last_tick == clock.now
    r.processor.thread_failure = "gpu thread died: test"  # another thread's change shows at once
    r.processor.run_once()
    assert r.processor.snapshot.thread_failure == "gpu thread died: test"
    r.processor.thread_failure = None
    # A record taken changes what health shows: published by the next turn (the take's own turn ends
    # early, for the prepare thread), however little time passed.
    r.submit(["a"], partition=0, text="HOLD it in flight")
    r.step_until(lambda: r.processor.ledger.in_flight() == 1)
    r.processor.run_once()
    assert r.processor.snapshot.in_flight == 1
    engine.release.set()
    r.step_until(lambda: r.committed(0) == 1)
    assert r.processor.snapshot.counters.done == 1
    r.stop()


def test_a_turns_count_of_what_is_in_flight_is_reused_only_while_fresh(tmp_path: Path) -> None:
    """Counted once per turn, but counted again after a blocking call (a commit or an early begin
    takes milliseconds): a stale count made the loop sleep that much past an upload's end."""
    r, _, _ = rig(tmp_path)
    first = r.processor._in_flight()
    assert r.processor._in_flight() is first
    time.sleep(FLIGHT_STALE_SECONDS * 2)
    assert r.processor._in_flight() is not first


def test_an_idle_loop_ticks_well_within_a_short_liveness_limit(tmp_path: Path) -> None:
    """The long waits are 1 s (each turn costs CPU), but liveness fails after
    WORKER_LIVENESS_STALL_SECONDS without a tick: set shorter, the waits shrink with it."""
    r, _, _ = rig(tmp_path)
    r.start()
    r.processor.run_once()
    assert r.processor._poll_timeout() == 1.0  # idle, the default 60 s limit
    r.stop()
    short, _, _ = rig(tmp_path / "short", liveness_stall_seconds=1.0)
    short.start()
    short.processor.run_once()
    assert short.processor._poll_timeout() == 0.25
    short.stop()


def prepared_by_the_prepare_thread(r: Rig) -> list[str]:
    """The request ids the prepare thread prepares, in order, from now on."""
    prepared: list[str] = []
    real = r.processor.stages.prepare

    def spy(job: Any) -> Any:
        prepared.append(job.request.request_id)
        return real(job)

    r.processor.stages.prepare = spy  # type: ignore[method-assign]
    return prepared


def test_a_request_whose_clips_are_cached_goes_to_the_gpu_from_the_poll_thread(tmp_path: Path) -> None:
    """Nothing to download: the poll thread puts the request on the GPU queue itself. To an idle GPU it
    counts as on the GPU at once, and to a busy one as prepared (no short poll to notice a prepare
    step either way). A request that needs a download goes through the prepare thread, and so does
    one taken behind it, which must not overtake it."""
    r, engine, _ = rig(tmp_path, prefetch=2)
    r.storage.objects[(BUCKET, "other.wav")] = r.storage.objects[(BUCKET, "voice.wav")]
    prepared = prepared_by_the_prepare_thread(r)
    r.submit(["first"], partition=0)
    r.start()
    r.step_until(lambda: r.committed(0) == 1)
    assert prepared == ["first"]  # its voice clip is downloaded on the prepare thread
    r.processor.job_length.per_char = 0.03  # as if learned: 0.51 s per request of this length
    r.submit(["second"], partition=0, text="HOLD twelve chars")
    try:
        r.step_until(lambda: r.processor.ledger.in_flight() == 1)
        # On the GPU as far as the loop's timing goes, whether or not the GPU thread has run yet:
        # it sleeps to the job's end instead of polling short for a prepare step.
        assert r.processor._poll_timeout() > 0.4
        assert engine.holding.wait(5)
        r.submit(["third"], partition=1, text="HOLD twelve chars")  # the GPU is busy: it waits, prepared
        r.step_until(lambda: r.processor.ledger.in_flight() == 2)
        assert r.processor._poll_timeout() > SHORT_POLL_SECONDS
        assert prepared == ["first"]
    finally:
        engine.release.set()
    r.step_until(lambda: r.committed(0) == 2 and r.committed(1) == 1)
    engine.release.clear()
    engine.holding.clear()
    r.processor.job_length.per_char = 1e-4  # the next job is due to end at once: intake stays open
    r.submit(["held"], partition=0, text="HOLD twelve chars")
    try:
        r.step_until(engine.holding.is_set)
        r.submit(["fresh"], partition=1, voice=f"s3://{BUCKET}/other.wav", text="HOLD twelve chars")
        r.submit(["behind"], partition=1, text="HOLD twelve chars")
        r.step_until(lambda: prepared[-2:] == ["fresh", "behind"])  # "behind" did not overtake "fresh"
    finally:
        engine.release.set()
    r.step_until(lambda: r.committed(0) == 3 and r.committed(1) == 3)
    r.stop()
    assert r.answered() == dict.fromkeys(["first", "second", "third", "held", "fresh", "behind"], 1)


def test_a_request_naming_a_clip_not_checked_lately_is_left_to_the_prepare_thread(tmp_path: Path) -> None:
    """The poll thread's short cut never makes a storage call: a request whose voice is cached but whose
    emotion clip was never checked goes to the prepare thread, whose check finds it missing and turns
    that into the request's error outcome, as before."""
    r, _, _ = rig(tmp_path)
    prepared = prepared_by_the_prepare_thread(r)
    r.submit(["warm"], partition=0)
    r.start()
    r.step_until(lambda: r.committed(0) == 1)
    r.submit(["angry"], partition=0, emotion_reference=f"s3://{BUCKET}/missing-angry.wav")
    r.step_until(lambda: r.committed(0) == 2)
    r.stop()
    assert prepared == ["warm", "angry"]
    angry = [x for x in r.results() if x["request_id"] == "angry"]
    assert [x["error_code"] for x in angry] == [ErrorCode.REFERENCE_NOT_FOUND.value]
