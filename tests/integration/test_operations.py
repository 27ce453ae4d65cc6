"""Operations against the real stack: health events, probes, /metrics, and secrets that never leak.

One worker process (``tts-processor run``, tone engine with a slow "model load") serves the module;
the rebalance test adds a second one to the group for a while. The liveness tests run a real
Processor in this process, so the poll loop can be stopped honestly (an ``on_tick`` that blocks)
while the real HTTP probe server reports on it.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from processor.wire import Codec
from tests.support.audio import voice_clip
from tests.support.workers import Topics, WorkerProcess, free_port, produce, read_all, request, worker_env

LOAD_SECONDS = 3.0
SASL_SECRET = f"sasl-secret-{uuid.uuid4().hex}"


# ----------------------------------------------------------------------------------------- helpers


@dataclass
class Event:
    record: dict[str, Any]
    key: bytes | None
    value: bytes


class HealthWatcher:
    """Reads the health topic from the beginning and keeps every event (raw bytes too)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.codec = Codec("WorkerHealth")
        self.events: list[Event] = []
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"health-{uuid.uuid4().hex[:8]}",
                                  "enable.auto.commit": False, "isolation.level": "read_committed"})
        self.consumer.assign([TopicPartition(topic, 0, 0)])

    def drain(self, seconds: float = 0.2) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            msg = self.consumer.poll(0.1)
            if msg is not None and not msg.error():
                value = msg.value()
                self.events.append(Event(self.codec.decode(value), msg.key(), value))

    def of(self, worker_id: str) -> list[dict[str, Any]]:
        return [e.record for e in self.events if e.record["worker_id"] == worker_id]

    def wait(self, what: str, pred: Callable[[HealthWatcher], Any], timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.drain(0.3)
            got = pred(self)
            if got:
                return got
        raise AssertionError(f"no health event: {what}; last events: "
                             f"{[(e.record['worker_id'], e.record['status']) for e in self.events[-10:]]}")

    def close(self) -> None:
        self.consumer.close()


@dataclass
class Probe:
    at: float
    livez: int | None
    readyz: int | None
    ready_detail: str | None


@dataclass
class Ops:
    stack: Any
    topics: Topics
    bucket: str
    group: str
    tmp: Path
    worker: WorkerProcess
    health: HealthWatcher
    startup: list[Probe]
    secrets: list[str]
    workers: list[WorkerProcess] = field(default_factory=list)

    @property
    def voice(self) -> str:
        return f"s3://{self.bucket}/voices/alice.wav"

    def metrics(self, worker: WorkerProcess | None = None) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        code, text = (worker or self.worker).http("/metrics")
        assert code == 200
        out = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def env(self, **extra: str) -> dict[str, str]:
        return worker_env(self.stack, self.topics, self.bucket, self.group, self.tmp,
                          WORKER_HEALTH_INTERVAL_SECONDS="1", KAFKA_SASL_PASSWORD=SASL_SECRET, LOG_LEVEL="DEBUG",
                          **extra)


def watch_startup(worker: WorkerProcess, timeout: float = 120) -> list[Probe]:
    """Probe /livez and /readyz from process start until ready."""
    probes: list[Probe] = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        assert worker.alive, worker.logs()[-4000:]
        try:
            live = worker.http("/livez")[0]
            ready, body = worker.http("/readyz")
            detail = json.loads(body)["detail"]
        except OSError:
            live = ready = None
            detail = None
        probes.append(Probe(time.monotonic() - t0, live, ready, detail))
        if ready == 200:
            return probes
        time.sleep(0.1)
    raise AssertionError(f"worker not ready in {timeout}s:\n{worker.logs()[-4000:]}")


@pytest.fixture(scope="module")
def ops(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ops]:
    tmp = tmp_path_factory.mktemp("ops")
    prefix = f"ops-{datetime.now(UTC).strftime('%H%M%S%f')}"
    topics = Topics.create(stack, prefix, partitions=4)
    stack.create_bucket(prefix)
    stack.s3_client().put_object(Bucket=prefix, Key="voices/alice.wav", Body=voice_clip(seed=3))
    health = HealthWatcher(stack.kafka_bootstrap, topics.health)
    ops = Ops(stack, topics, prefix, f"{prefix}-group", tmp, None, health, [], [])  # type: ignore[arg-type]
    env = ops.env(TONE_ENGINE_LOAD_SECONDS=str(LOAD_SECONDS))
    ops.secrets = [v for v in (env.get("AWS_SECRET_ACCESS_KEY"), env.get("AWS_ACCESS_KEY_ID"), SASL_SECRET) if v]
    ops.worker = WorkerProcess(env, tmp / "worker-a.log").start()
    ops.workers.append(ops.worker)
    try:
        ops.startup = watch_startup(ops.worker)
        yield ops
    finally:
        for w in ops.workers:
            w.stop()
        health.close()


@dataclass
class Served:
    results: list[tuple[dict[str, Any], Any]]
    dead: list[tuple[dict[str, Any], Any]]


@pytest.fixture(scope="module")
def served(ops: Ops) -> Served:
    """Three good requests on three partitions, one invalid request, one undecodable record."""
    good = [request(f"ops-ok-{i}", ops.voice, text=f"operations check number {i}") for i in range(3)]
    produce(ops.stack.kafka_bootstrap, ops.topics.requests, good, partition_by_index=4)
    produce(ops.stack.kafka_bootstrap, ops.topics.requests,
            [request("ops-invalid", ops.voice, emotion_vector=[0.5] * 3)], partition_by_index=4)
    produce(ops.stack.kafka_bootstrap, ops.topics.requests, [b"\x00\x00\x00\x00\x07 not avro"], partition_by_index=4)
    results = read_all(ops.stack.kafka_bootstrap, ops.topics.results, "TtsResult", until=4, timeout=90)
    dead = read_all(ops.stack.kafka_bootstrap, ops.topics.dlq, "DeadLetter", until=1, timeout=60)
    assert sorted(r["request_id"] for r, _ in results) == ["ops-invalid", "ops-ok-0", "ops-ok-1", "ops-ok-2"]
    assert len(dead) == 1
    return Served(results, dead)


# ----------------------------------------------------------------------------------------- probes


def test_readiness_is_503_until_the_model_is_loaded(ops: Ops) -> None:
    answered = [p for p in ops.startup if p.readyz is not None]
    assert answered, "the HTTP probes never answered"
    assert answered[-1].readyz == 200
    not_ready = [p for p in answered if p.readyz == 503]
    # HTTP comes up before the engine loads: the probe saw the load, with the real reason.
    assert not_ready and not_ready[0].ready_detail == "model not loaded"
    assert {p.ready_detail for p in not_ready} <= {"model not loaded", "consumer has not joined the group"}
    loading = [p for p in not_ready if p.ready_detail == "model not loaded"]
    assert loading[-1].at - loading[0].at >= LOAD_SECONDS - 1.5
    # Not ready, but alive all along: Kubernetes must not restart a pod that is loading its model.
    assert all(p.livez == 200 for p in answered)
    assert [p.readyz for p in answered] == sorted(p.readyz for p in answered)[::-1]  # 503... then 200, no flapping
    code, body = ops.worker.http("/readyz")
    assert code == 200 and json.loads(body) == {"ok": True, "status": "ready", "detail": "ok"}
    assert ops.worker.http("/nope")[0] == 404


# ----------------------------------------------------------------------------------------- health events


def test_health_events_starting_then_ready_with_model_info(ops: Ops) -> None:
    wid = ops.worker.worker_id
    ops.health.wait("a ready event", lambda h: any(r["status"] == "ready" for r in h.of(wid)))
    mine = [e for e in ops.health.events if e.record["worker_id"] == wid]
    assert all(e.key == wid.encode() for e in mine), "health events are keyed by worker_id"
    first = mine[0].record
    assert first["status"] == "starting"
    assert first["model"] == {"loaded": False, "model_type": None, "model_version": None, "device": None,
                              "precision": None, "load_seconds": None, "engine": None, "backend": None,
                              "capabilities": None}
    assert first["assignments"] == [] and first["current_job"] is None
    assert first["counters"] == {"done": 0, "failed": 0, "dead_lettered": 0}
    statuses = [e.record["status"] for e in mine]
    first_ready = statuses.index("ready")
    assert set(statuses[:first_ready]) == {"starting"} and "starting" not in statuses[first_ready:]
    for e in mine[1:first_ready]:  # model loaded, poll loop running, group not joined yet
        assert e.record["model"]["loaded"] and e.record["reasons"] == ["consumer has not joined the group"]
    ready = mine[first_ready].record
    expected = {"loaded": True, "model_type": "ToneEngine", "model_version": "test-1", "device": "cpu",
                "precision": "fp32", "load_seconds": LOAD_SECONDS}
    assert {k: ready["model"][k] for k in expected} == expected
    assert ready["model"]["capabilities"]["emotion_modes"]  # the engine says what it can do (issue 12)
    assert ready["gpu"]["available"] is False and ready["reasons"] == []
    stamps = [e.record["emitted_at"] for e in mine]
    assert all(s is not None for s in stamps) and stamps == sorted(stamps)


def test_ready_health_events_come_from_a_member_of_the_group(ops: Ops) -> None:
    """A 'ready' event means what /readyz means: the model is warm AND the consumer has joined."""
    wid = ops.worker.worker_id
    ops.health.wait("a ready event", lambda h: any(r["status"] == "ready" for r in h.of(wid)))
    for r in ops.health.of(wid):
        if r["status"] == "ready":  # one worker and four partitions: a member of the group owns some
            assert r["assignments"], f"'ready' published before the consumer joined the group: {r}"


def test_health_counters_and_lag_after_requests(ops: Ops, served: Served) -> None:
    wid = ops.worker.worker_id
    want = {"done": 3, "failed": 1, "dead_lettered": 1}
    latest = ops.health.wait("counters 3/1/1 with zero lag", lambda h: next(
        (r for r in reversed(h.of(wid)) if r["counters"] == want
         and all(a["lag"] == 0 for a in r["assignments"])), None))
    assert latest["status"] == "ready" and latest["current_job"] is None
    assert {a["topic"] for a in latest["assignments"]} == {ops.topics.requests}
    # The results and the dead letter really are what the counters say.
    statuses = sorted((r["status"], r["error_code"] or "") for r, _ in served.results)
    assert statuses == [("error", "invalid_request"), ("success", ""), ("success", ""), ("success", "")]
    assert all(r["worker_id"] == wid for r, _ in served.results)
    assert served.dead[0][0]["worker_id"] == wid


def _broker_assignment(ops: Ops) -> dict[str, set[int]]:
    """client.id -> partitions of the request topic, as the group coordinator has them."""
    admin = ops.stack.admin()  # held until the future resolves: a collected client never resolves it
    (fut,) = admin.describe_consumer_groups([ops.group], request_timeout=10).values()
    group = fut.result(15)
    return {m.client_id: {tp.partition for tp in m.assignment.topic_partitions if tp.topic == ops.topics.requests}
            for m in group.members}


def _reported(ops: Ops, worker: WorkerProcess) -> set[int] | None:
    mine = ops.health.of(worker.worker_id)
    if not mine or mine[-1]["status"] not in ("ready", "degraded"):
        return None
    assert {a["topic"] for a in mine[-1]["assignments"]} <= {ops.topics.requests}
    return {a["partition"] for a in mine[-1]["assignments"]}


def test_health_assignment_matches_the_group_through_a_rebalance(ops: Ops, served: Served) -> None:
    a = ops.worker
    client = {a.worker_id: f"tts-processor-{a.worker_id}"}

    def agrees(workers: list[WorkerProcess], expected_sizes: list[int]) -> bool:
        broker = _broker_assignment(ops)
        reported = [_reported(ops, w) for w in workers]
        if any(r is None for r in reported) or sorted(len(r or ()) for r in reported) != expected_sizes:
            return False
        if set().union(*(r or set() for r in reported)) != {0, 1, 2, 3}:
            return False
        return all(broker.get(client[w.worker_id]) == r for w, r in zip(workers, reported, strict=True))

    ops.health.wait("worker A reports all four partitions, as the broker has it", lambda h: agrees([a], [4]))
    rebalances_before = ops.metrics()[("tts_rebalances_total", (("kind", "assign"),))]

    b = WorkerProcess(ops.env(), ops.tmp / "worker-b.log").start()
    ops.workers.append(b)
    client[b.worker_id] = f"tts-processor-{b.worker_id}"
    b.wait_ready()
    ops.health.wait("A and B split the partitions as the broker has them", lambda h: agrees([a, b], [2, 2]))
    ra, rb = _reported(ops, a), _reported(ops, b)
    assert ra is not None and rb is not None and not ra & rb

    assert b.stop() == 0
    stopped = ops.health.wait("B's stopped event", lambda h: [r for r in h.of(b.worker_id) if r["status"] == "stopped"])
    assert stopped[-1]["model"]["loaded"] is True
    ops.health.wait("A owns all four again", lambda h: agrees([a], [4]))
    after = ops.metrics()
    assert after[("tts_rebalances_total", (("kind", "assign"),))] > rebalances_before
    assert after[("tts_rebalances_total", (("kind", "revoke"),))] >= 1


def test_a_worker_whose_engine_fails_to_load_says_so_and_exits(ops: Ops) -> None:
    env = ops.env(INDEX_TTS_ENGINE="tests.support.tone_engine:no_such_factory")
    broken = WorkerProcess(env, ops.tmp / "worker-broken.log").start()
    ops.workers.append(broken)
    assert broken.wait(60) != 0
    events = ops.health.wait("the broken worker's stopped event", lambda h: (
        [r for r in h.of(broken.worker_id) if r["status"] == "stopped"] and h.of(broken.worker_id)))
    assert [r["status"] for r in events] == ["starting", "stopped"]
    (reason,) = events[-1]["reasons"]
    assert reason.startswith("engine: AttributeError") and "no_such_factory" in reason
    assert events[-1]["model"]["loaded"] is False and events[-1]["assignments"] == []


# ----------------------------------------------------------------------------------------- /metrics


def test_metrics_expose_the_series_after_requests(ops: Ops, served: Served) -> None:
    ops.health.wait("lag refreshed after the last commit", lambda h: any(
        r["counters"]["done"] == 3 and r["assignments"] and all(a["lag"] == 0 for a in r["assignments"])
        for r in h.of(ops.worker.worker_id)))
    m = ops.metrics()

    def value(name: str, **labels: str) -> float:
        return m[(name, tuple(sorted(labels.items())))]

    assert value("tts_requests_total", status="success", error_code="") == 3
    assert value("tts_requests_total", status="error", error_code="invalid_request") == 1
    assert value("tts_requests_total", status="error", error_code="undecodable") == 1
    assert value("tts_dead_letters_total") == 1
    assert value("tts_synthesis_seconds_count") == 3 and value("tts_synthesis_seconds_sum") > 0
    assert value("tts_synthesis_seconds_bucket", le="+Inf") == 3
    assert value("tts_real_time_factor_count") == 3
    assert value("tts_audio_seconds_total") > 0
    for stage in ("decode", "download", "synthesis", "encode", "upload"):
        assert value("tts_stage_seconds_count", stage=stage) >= 3, stage
    assert value("tts_stage_seconds_count", stage="decode") == 4  # the invalid request was decoded too
    assert value("tts_stage_seconds_count", stage="commit") >= 1
    for p in range(4):
        assert value("tts_queue_lag_messages", topic=ops.topics.requests, partition=str(p)) == 0
    assert value("tts_rebalances_total", kind="assign") >= 1
    assert value("tts_transactions_total", outcome="committed") >= 1
    assert value("tts_inflight_jobs") == 0 and value("tts_inflight_job_age_seconds") == 0
    assert value("tts_worker_ready") == 1


# ----------------------------------------------------------------------------------------- CLI


def test_submit_wait_prints_the_result_of_its_own_request(ops: Ops, served: Served) -> None:
    """The demo's path: produce, then read the result topic from the submit time (manual assignment)."""
    for n in range(2):
        rid = f"ops-submit-{n}-{uuid.uuid4().hex[:6]}"
        done = subprocess.run(
            [sys.executable, "-m", "processor.cli", "submit", "--request-id", rid, "--voice", ops.voice,
             "--text", f"submitted from the command line, take {n}", "--wait", "--timeout", "60"],
            env=ops.env(), capture_output=True, text=True, timeout=120, check=False,
        )
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert result["request_id"] == rid and result["status"] == "success"
        assert result["output_key"] == f"tts/{rid}/{result['sha256']}.wav"


# ----------------------------------------------------------------------------------------- secrets


def test_no_secret_in_logs_events_results_or_metrics(ops: Ops, served: Served) -> None:
    assert len(ops.secrets) == 3 and all(len(s) >= 8 for s in ops.secrets)
    ops.health.drain(1.0)
    blobs: dict[str, bytes] = {}
    for w in ops.workers:
        text = w.logs()
        assert "loading engine" in text  # the logs were captured, not empty
        blobs[f"log {w.worker_id}"] = text.encode()
    blobs["health events"] = b"".join(e.value + (e.key or b"") for e in ops.health.events)
    blobs["health records"] = repr([e.record for e in ops.health.events]).encode()
    for name, rows in (("results", served.results), ("dead letters", served.dead)):
        blobs[name] = b"".join(
            (msg.value() or b"") + (msg.key() or b"") + b"".join(v or b"" for _, v in msg.headers() or [])
            for _, msg in rows)
        blobs[f"{name} records"] = repr([r for r, _ in rows]).encode()
    for path in ("/metrics", "/livez", "/readyz"):
        blobs[path] = ops.worker.http(path)[1].encode()
    for secret in ops.secrets:
        for where, blob in blobs.items():
            assert secret.encode() not in blob, f"a configured secret leaked into {where}"


# ----------------------------------------------------------------------------------------- liveness


@dataclass
class InProcess:
    processor: Any
    state: Any
    port: int
    topics: Topics
    release: threading.Event
    block: threading.Event
    thread: threading.Thread

    def probe(self, path: str) -> tuple[int, dict[str, Any]]:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
                return int(r.status), json.loads(r.read())
        except urllib.error.HTTPError as e:
            return int(e.code), json.loads(e.read())

    def wait_probe(self, path: str, code: int, timeout: float = 30) -> tuple[float, dict[str, Any]]:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            got, body = self.probe(path)
            if got == code:
                return time.monotonic() - t0, body
            time.sleep(0.05)
        raise AssertionError(f"{path} never answered {code}: {self.probe(path)}")


@pytest.fixture
def in_process(stack: Any, tmp_path: Path) -> Iterator[InProcess]:
    """A real Processor (real Kafka, S3, HTTP probes) in a thread, with a tick callback that can block."""
    from processor.config import EngineSettings, HttpSettings, KafkaSettings, S3Settings, Settings, WorkerSettings
    from processor.health import HealthReporter, WorkerState, serve_http
    from processor.kafka_io import make_producer, plain_producer_config
    from processor.pipeline import Processor
    from processor.session import KafkaSession
    from processor.storage import Storage
    from processor.wire import make_codecs
    from processor.worker import load_engine

    prefix = f"live-{uuid.uuid4().hex[:8]}"
    topics = Topics.create(stack, prefix, partitions=1)
    stack.create_bucket(prefix)
    stack.s3_client().put_object(Bucket=prefix, Key="voices/alice.wav", Body=voice_clip(seed=4))
    settings = Settings(
        kafka=KafkaSettings(bootstrap_servers=stack.kafka_bootstrap, group_id=f"{prefix}-group",
                            request_topic=topics.requests, result_topic=topics.results,
                            progress_topic=topics.progress, health_topic=topics.health, dlq_topic=topics.dlq),
        s3=S3Settings(endpoint_url=stack.s3_endpoint, bucket=prefix, region=stack.s3_region,
                      access_key_id=stack.s3_access_key or None, secret_access_key=stack.s3_secret_key or None,
                      reference_cache_dir=str(tmp_path / "refs")),
        engine=EngineSettings(engine="tests.support.tone_engine:tone_engine"),
        worker=WorkerSettings(id=prefix, liveness_stall_seconds=1.0, job_timeout_seconds=1.0,
                              health_interval_seconds=1.0, max_attempts=1),
        http=HttpSettings(host="127.0.0.1", port=free_port()),
    )
    w = settings.worker
    state = WorkerState(w.liveness_stall_seconds, w.job_timeout_seconds)
    server = serve_http(state, settings.http.host, settings.http.port)
    engine = load_engine(settings.engine)
    engine.warm_up()
    state.model = engine.info
    events_producer = make_producer(plain_producer_config(settings.kafka, w.id))
    processor = Processor(settings, engine, Storage(settings.s3), KafkaSession.connect(settings.kafka, w.id),
                          events_producer, make_codecs(settings))
    state.processor = processor
    state.status = "ready"
    reporter = HealthReporter(state, processor, w.id, w.health_interval_seconds)
    block, release = threading.Event(), threading.Event()

    def on_tick() -> None:
        reporter.tick()
        if block.is_set():
            release.wait(60)  # the poll loop is stuck here, as a deadlocked callback would leave it

    thread = threading.Thread(target=processor.run, kwargs={"on_tick": on_tick}, name="in-process-poll",
                              daemon=True)
    thread.start()
    ip = InProcess(processor, state, settings.http.port, topics, release, block, thread)
    try:
        ip.wait_probe("/readyz", 200, timeout=60)
        yield ip
    finally:
        block.clear()
        release.set()
        processor.request_stop()
        thread.join(60)
        server.shutdown()
        server.server_close()
        # Producers have no close(): drop the last references so they stop before the stack does.
        processor.session = processor.events_producer = None
        del events_producer
        gc.collect()


def test_liveness_fails_when_the_poll_loop_is_stuck(in_process: InProcess) -> None:
    ip = in_process
    # Healthy and idle: the loop ticks at least every 0.25 s (a quarter of the 1 s stall limit), so
    # liveness holds.
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        code, body = ip.probe("/livez")
        assert code == 200 and body["detail"] == "ok", body
        time.sleep(0.1)
    ip.block.set()
    took, body = ip.wait_probe("/livez", 503, timeout=10)
    assert body["ok"] is False and body["detail"].startswith("poll loop stalled for"), body
    assert 0.9 <= took <= 5, took
    ip.block.clear()
    ip.release.set()
    took, body = ip.wait_probe("/livez", 200, timeout=10)
    assert body["detail"] == "ok" and took < 2
    assert ip.thread.is_alive()


def test_liveness_fails_when_a_gpu_job_runs_past_twice_its_limit(stack: Any, in_process: InProcess) -> None:
    ip = in_process
    ip.processor.engine.seconds = 3.5  # one segment; the 1 s time limit is checked only after it
    voice = f"s3://{ip.processor.s.s3.bucket}/voices/alice.wav"
    produce(stack.kafka_bootstrap, ip.topics.requests, [request("stuck-job", voice, text="short")])
    _, body = ip.wait_probe("/livez", 503, timeout=20)
    assert body["detail"] == "GPU job stuck past twice its time limit", body
    assert ip.processor.current is not None and ip.processor.current.request.request_id == "stuck-job"
    ip.wait_probe("/livez", 200, timeout=20)  # the job ended (timeout error result): alive again
    results = read_all(stack.kafka_bootstrap, ip.topics.results, "TtsResult", until=1, timeout=30)
    assert [(r["request_id"], r["error_code"]) for r, _ in results] == [("stuck-job", "timeout")]
