"""processor.health without Kafka: probe logic, health-event derivation, lag arithmetic, the HTTP server.

The processor is a stand-in object with the attributes health reads; the real thing runs in
tests/integration/test_operations.py.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from processor import health
from processor.engine.base import ModelInfo
from processor.health import HealthReporter, WorkerState, health_record, serve_http
from processor.logs import ScrubbingFormatter
from processor.pipeline import Counters
from processor.wire import Codec

MODEL = ModelInfo("ToneEngine", "test-1", "cpu", "fp32", {}, 1.5)
OFFSET_INVALID = -1001


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []

    def produce(self, topic: str, value: bytes, key: bytes) -> None:
        self.sent.append((topic, value, key))

    def poll(self, timeout: float) -> int:
        return 0


class FakeVoices:
    def __init__(self) -> None:
        self.names = ["bob", "alice"]
        self.error: Exception | None = None

    def list(self) -> list[str]:
        if self.error is not None:
            raise self.error
        return self.names


def fake_processor(now: float = 1000.0) -> SimpleNamespace:
    """What health reads of a processor: its clock, its published snapshot, and where to publish."""
    clock = SimpleNamespace(t=now)
    snapshot = SimpleNamespace(last_tick=now, joined=True, lags=(), counters=Counters(), current_request=None,
                               current_started=None, storage_error=None, broker_error=None, thread_failure=None,
                               in_flight=0, progress_at=now)
    return SimpleNamespace(
        clock=lambda: clock.t, _clock=clock, snapshot=snapshot, voices=FakeVoices(),
        codecs={"WorkerHealth": Codec("WorkerHealth")}, events_producer=FakeProducer(),
        s=SimpleNamespace(kafka=SimpleNamespace(health_topic="tts.health")), assignment_changed=threading.Event(),
    )


def ready_state(p: SimpleNamespace) -> WorkerState:
    state = WorkerState(stall_seconds=5, job_timeout_seconds=10)
    state.model = MODEL
    state.processor = p  # type: ignore[assignment]
    state.status = "ready"
    return state


def sent(p: SimpleNamespace) -> list[dict[str, Any]]:
    return [p.codecs["WorkerHealth"].decode(value) for _, value, _ in p.events_producer.sent]


# ------------------------------------------------------------------------------------- probes


def test_liveness() -> None:
    state = WorkerState(stall_seconds=5, job_timeout_seconds=10)
    assert state.live() == (True, "starting")  # loading the model is not a reason to restart
    p = fake_processor(1000.0)
    state.processor = p  # type: ignore[assignment]
    assert state.live() == (True, "ok")
    p._clock.t = 1006.0
    ok, why = state.live()
    assert not ok and why == "poll loop stalled for 6s"
    p.snapshot.last_tick = 1006.0
    p.snapshot.current_started = 1006.0 - 15
    assert state.live() == (True, "ok")  # past its limit, but the job's own timeout will end it
    p.snapshot.current_started = 1006.0 - 21
    assert state.live() == (False, "GPU job stuck past twice its time limit")


def test_issue11_defect6_work_without_a_commit_fails_liveness() -> None:
    """Issue 11, defect 6: through an endless abort loop /livez stayed 200. A worker that has had work
    and committed nothing for WORKER_LIVENESS_COMMIT_SECONDS is not live."""
    state = WorkerState(stall_seconds=5, job_timeout_seconds=10, commit_stall_seconds=120)
    p = fake_processor(1000.0)
    state.processor = p  # type: ignore[assignment]
    p.snapshot.progress_at = 1000.0 - 119
    assert state.live() == (True, "ok")
    p.snapshot.progress_at = 1000.0 - 121
    assert state.live() == (False, "had work but committed nothing for 121s")
    assert WorkerState(5, 10).commit_stall_seconds == 2 * 10 + 600  # the default covers the longest job


def test_a_dead_stage_thread_fails_liveness() -> None:
    """Defect 4: a stage thread that died left /livez at 200 while its partitions stalled for good."""
    state = WorkerState(stall_seconds=5, job_timeout_seconds=10)
    p = fake_processor()
    state.processor = p  # type: ignore[assignment]
    p.snapshot.thread_failure = "prepare thread died: RuntimeError: boom"
    assert state.live() == (False, "prepare thread died: RuntimeError: boom")


def test_readiness() -> None:
    state = WorkerState(stall_seconds=5, job_timeout_seconds=10)
    assert state.ready() == (False, "model not loaded")
    state.model = MODEL
    assert state.ready() == (False, "consumer has not joined the group")
    p = fake_processor()
    p.snapshot.joined = False
    state.processor = p  # type: ignore[assignment]
    state.status = "ready"
    assert state.ready() == (False, "consumer has not joined the group")
    p.snapshot.joined = True
    assert state.ready() == (True, "ok")
    for status in ("draining", "stopped"):
        state.status = status
        assert state.ready() == (False, status)


# ------------------------------------------------------------------------------------- health events


def test_starting_record_encodes_and_says_nothing_is_loaded() -> None:
    state = WorkerState(5, 10)
    rec = health_record(state, "w-1", "starting", [], lags={}, gpu=health.gpu_record(), reasons=[])
    back = Codec("WorkerHealth").decode(Codec("WorkerHealth").encode(rec))
    assert back["status"] == "starting" and back["worker_id"] == "w-1"
    assert back["model"]["loaded"] is False and back["model"]["model_type"] is None
    assert back["counters"] == {"done": 0, "failed": 0, "dead_lettered": 0}
    assert back["assignments"] == [] and back["current_job"] is None and back["emitted_at"] is not None


def test_ready_record_carries_model_counters_job_and_assignment() -> None:
    p = fake_processor(1000.0)
    p.snapshot.counters = Counters(done=3, failed=1, dead_lettered=2)
    p.snapshot.current_request, p.snapshot.current_started = "r-1", 998.0
    p.snapshot.lags = ((("tts.requests", 0), 3), (("tts.requests", 1), 0), (("tts.requests", 2), None))
    HealthReporter(ready_state(p), p, "w-1", 15).publish()
    ((topic, _, key),) = p.events_producer.sent
    assert topic == "tts.health" and key == b"w-1"
    (rec,) = sent(p)
    assert rec["status"] == "ready" and rec["reasons"] == []
    assert rec["model"] == {"loaded": True, "model_type": "ToneEngine", "model_version": "test-1", "device": "cpu",
                            "precision": "fp32", "load_seconds": 1.5, "engine": "indextts2", "backend": "sdpa",
                            "capabilities": {"languages": ["zh", "en"], "detects_language": True,
                                             "emotion_modes": ["same_as_voice", "reference", "vector", "text"],
                                             "speed_min": 1.0, "speed_max": 1.0, "streaming": True}}
    assert rec["counters"] == {"done": 3, "failed": 1, "dead_lettered": 2}
    assert rec["current_job"] == {"request_id": "r-1", "running_seconds": 2.0}
    # Unknown lag is null, not zero.
    assert rec["assignments"] == [{"topic": "tts.requests", "partition": 0, "lag": 3},
                                  {"topic": "tts.requests", "partition": 1, "lag": 0},
                                  {"topic": "tts.requests", "partition": 2, "lag": None}]
    assert rec["voices"] == ["alice", "bob"]


def test_recent_storage_or_broker_errors_degrade_old_ones_do_not() -> None:
    p = fake_processor(now=1000.0)
    reporter = HealthReporter(ready_state(p), p, "w-1", 15)
    p.snapshot.storage_error = (990.0, "connection refused")
    p.snapshot.broker_error = (900.0, "all brokers down")  # 100 s ago: over
    reporter.publish()
    rec = sent(p)[-1]
    assert rec["status"] == "degraded" and rec["reasons"] == ["storage: connection refused"]
    p._clock.t = 2000.0
    reporter.publish()
    assert sent(p)[-1]["status"] == "ready" and sent(p)[-1]["reasons"] == []


def test_a_failing_voice_listing_degrades() -> None:
    """Every reason listed makes a 'ready' worker 'degraded', including the voice catalog's."""
    p = fake_processor()
    p.voices.error = OSError("bucket unreachable")
    HealthReporter(ready_state(p), p, "w-1", 15).publish()
    rec = sent(p)[-1]
    assert rec["reasons"] == ["voices: OSError"] and rec["status"] == "degraded"


def test_not_ready_until_the_consumer_joined() -> None:
    """The event status agrees with /readyz: model loaded but no group membership yet is not 'ready'."""
    p = fake_processor()
    p.snapshot.joined = False
    state = ready_state(p)
    reporter = HealthReporter(state, p, "w-1", 15)
    reporter.publish()
    rec = sent(p)[-1]
    assert state.ready() == (False, "consumer has not joined the group")
    assert rec["status"] == "starting" and rec["reasons"] == ["consumer has not joined the group"]
    p.snapshot.joined = True
    reporter.publish()
    assert sent(p)[-1]["status"] == "ready"


@pytest.mark.parametrize("status", ["draining", "stopped"])
def test_lifecycle_states_pass_through(status: str) -> None:
    p = fake_processor()
    state = ready_state(p)
    state.status = status
    p.snapshot.storage_error = (p.clock(), "boom")
    HealthReporter(state, p, "w-1", 15).publish()
    assert sent(p)[-1]["status"] == status
    HealthReporter(ready_state(p), p, "w-1", 15).publish("stopped")
    assert sent(p)[-1]["status"] == "stopped"


def test_tick_publishes_on_interval_and_on_assignment_change() -> None:
    p = fake_processor()
    reporter = HealthReporter(ready_state(p), p, "w-1", interval=3600)
    reporter.tick()
    assert len(p.events_producer.sent) == 1  # the first tick always publishes
    reporter.tick()
    assert len(p.events_producer.sent) == 1
    p.assignment_changed.set()
    reporter.tick()
    assert len(p.events_producer.sent) == 2 and not p.assignment_changed.is_set()


def test_gpu_record_never_imports_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    assert health.gpu_record()["available"] is False
    assert "torch" not in sys.modules


# ------------------------------------------------------------------------------------- HTTP


@pytest.fixture
def http() -> Iterator[tuple[WorkerState, SimpleNamespace, str]]:
    state = WorkerState(stall_seconds=5, job_timeout_seconds=10)
    server = serve_http(state, "127.0.0.1", 0, poll_interval=0.01)  # so the teardown's shutdown() is quick
    try:
        yield state, fake_processor(time.monotonic()), f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return int(r.status), r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as e:
        return int(e.code), e.headers["Content-Type"], e.read().decode()


def test_probe_endpoints(http: tuple[WorkerState, SimpleNamespace, str]) -> None:
    state, p, base = http
    code, ctype, body = get(base + "/readyz")
    assert (code, ctype) == (503, "application/json")
    assert json.loads(body) == {"ok": False, "status": "starting", "detail": "model not loaded"}
    assert get(base + "/livez")[0] == 200
    state.model, state.processor, state.status = MODEL, p, "ready"  # type: ignore[assignment]
    assert json.loads(get(base + "/readyz?verbose=1")[2]) == {"ok": True, "status": "ready", "detail": "ok"}
    p._clock.t += 30
    code, _, body = get(base + "/livez")
    assert code == 503 and json.loads(body)["detail"].startswith("poll loop stalled")
    assert get(base + "/other")[0] == 404


def test_metrics_endpoint_reports_readiness(http: tuple[WorkerState, SimpleNamespace, str]) -> None:
    state, p, base = http
    code, ctype, body = get(base + "/metrics")
    assert code == 200 and ctype.startswith("text/plain")
    assert "tts_worker_ready 0.0" in body and "# TYPE tts_requests_total counter" in body
    state.model, state.processor, state.status = MODEL, p, "ready"  # type: ignore[assignment]
    assert "tts_worker_ready 1.0" in get(base + "/metrics")[2]


# ------------------------------------------------------------------------------------- logs


def test_scrubber_hides_secrets_in_messages_arguments_and_tracebacks() -> None:
    fmt = ScrubbingFormatter("%(message)s", ["hunter22-secret", "abc"])
    rec = logging.LogRecord("x", logging.INFO, __file__, 1, "key=%s and %s", ("hunter22-secret", "abc"), None)
    assert fmt.format(rec) == "key=*** and abc"  # too short to be a real secret: left alone
    try:
        raise RuntimeError("connect failed with password hunter22-secret")
    except RuntimeError:
        import sys

        rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom", None, sys.exc_info())
    text = fmt.format(rec)
    assert "Traceback" in text and "hunter22-secret" not in text and "password ***" in text
