"""The request → WAV → result pipeline end to end: real worker process, real Kafka broker, real S3 server.

The engine here is the tone engine (tests/support), with output unique to each attempt
(``TONE_ENGINE_VARY``) like a GPU that is not bitwise reproducible: these tests are about the pipeline's
contract; the engine tests run the real IndexTTS2 code.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import time
import uuid
import wave
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fastavro
import pytest

from processor.wire import schema_fingerprint
from tests.support.audio import NOT_AUDIO, voice_clip
from tests.support.workers import REPO, Topics, WorkerProcess, produce, read_all, request, worker_env


class Env:
    def __init__(self, stack: Any, topics: Topics, bucket: str, worker: WorkerProcess,
                 registry_url: str | None = None) -> None:
        self.stack, self.topics, self.bucket, self.worker = stack, topics, bucket, worker
        self.registry_url = registry_url  # set: Confluent framing through the real registry, both ways
        self.s3 = stack.s3_client()

    def produce(self, records: Any, **kw: Any) -> int:
        return produce(self.stack.kafka_bootstrap, self.topics.requests, records, registry_url=self.registry_url,
                       **kw)

    @property
    def voice(self) -> str:
        return f"s3://{self.bucket}/voices/alice.wav"

    def results(self, n: int, timeout: float = 90) -> list[dict[str, Any]]:
        return [r for r, _ in read_all(self.stack.kafka_bootstrap, self.topics.results, "TtsResult",
                                       until=n, timeout=timeout, registry_url=self.registry_url)]

    def results_for(self, request_id: str, count: int = 1, timeout: float = 90, settle: float = 2.0,
                    ) -> list[dict[str, Any]]:
        """The results of one request: read until ``count`` arrived, then ``settle`` s more for extras."""
        def mine(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [r for r in records if r["request_id"] == request_id]

        found = read_all(self.stack.kafka_bootstrap, self.topics.results, "TtsResult", timeout=timeout,
                         stop=lambda records: len(mine(records)) >= count, registry_url=self.registry_url)
        extra = read_all(self.stack.kafka_bootstrap, self.topics.results, "TtsResult", until=len(found),
                         timeout=settle + 5, settle=settle, registry_url=self.registry_url)
        return mine([r for r, _ in extra])


@pytest.fixture(scope="module", params=[("classic", "single-object"), ("consumer", "single-object"),
                                        ("classic", "registry")], ids=lambda p: "-".join(p))
def env(request: pytest.FixtureRequest, stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """One worker per group protocol and wire format: the whole module runs under classic and KIP-848
    with registry-free single-object encoding (the default), and once more with every record (requests,
    results, dead letters) in Confluent framing through the real schema registry."""
    protocol, wire = request.param
    registry_url = request.getfixturevalue("registry") if wire == "registry" else None
    tmp = tmp_path_factory.mktemp("e2e")
    prefix = f"e2e-{datetime.now(UTC).strftime('%H%M%S%f')}"
    topics = Topics.create(stack, prefix, partitions=4)
    bucket = prefix
    stack.create_bucket(bucket)
    stack.create_bucket(f"{prefix}-other")
    s3 = stack.s3_client()
    s3.put_object(Bucket=bucket, Key="voices/alice.wav", Body=voice_clip(seed=1))
    s3.put_object(Bucket=bucket, Key="voices/not-audio.wav", Body=NOT_AUDIO)
    s3.put_object(Bucket=bucket, Key="voices/huge.wav", Body=voice_clip(seconds=8.0))
    s3.put_object(Bucket=f"{prefix}-other", Key="bob.wav", Body=voice_clip(seed=2))
    worker = WorkerProcess(worker_env(stack, topics, bucket, f"{prefix}-group", tmp,
                                      S3_MAX_REFERENCE_BYTES="200000", KAFKA_GROUP_PROTOCOL=protocol,
                                      TONE_ENGINE_VARY="1",
                                      **({"SCHEMA_REGISTRY_URL": registry_url} if registry_url else {})),
                           tmp / "worker.log").start()
    try:
        worker.wait_ready()
        yield Env(stack, topics, bucket, worker, registry_url)
    finally:
        worker.stop()


def wav_info(data: bytes) -> tuple[int, float]:
    with wave.open(io.BytesIO(data)) as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2
        return w.getframerate(), w.getnframes() / w.getframerate()


def test_requests_across_partitions_each_get_one_verified_wav(env: Env) -> None:
    ids = [f"multi-{i:02d}" for i in range(24)]
    env.produce([request(i, env.voice, text=f"request number {n} " * (1 + n % 3)) for n, i in enumerate(ids)],
                partition_by_index=4)
    results = [r for r in env.results(len(ids)) if r["request_id"].startswith("multi-")]
    counts = Counter(r["request_id"] for r in results)
    assert set(counts) == set(ids) and set(counts.values()) == {1}
    assert {r["request_partition"] for r in results} == {0, 1, 2, 3}
    for r in results:
        assert r["status"] == "success", r
        obj = env.s3.get_object(Bucket=r["output_bucket"], Key=r["output_key"])["Body"].read()
        assert hashlib.sha256(obj).hexdigest() == r["sha256"]
        assert len(obj) == r["size_bytes"]
        rate, seconds = wav_info(obj)
        assert rate == r["sample_rate"]
        assert seconds == pytest.approx(r["duration_seconds"], abs=1e-3)
        assert r["output_uri"] == f"s3://{env.bucket}/tts/{r['request_id']}/{r['sha256']}.wav"
        assert r["model"]["model_type"] == "ToneEngine" and r["worker_id"] == env.worker.worker_id
        assert r["parameters"]["voice_sha256"] and r["processing_seconds"] > 0


def test_undecodable_bytes_go_to_the_dlq_and_the_worker_keeps_serving(env: Env) -> None:
    # Registry framing with an id no registry has handed out: a dead letter either way, with the reason.
    garbage = b"\x00\x7f\xff\xff\xf0not avro at all"
    env.produce([garbage, b"{\"json\": true}"], partition_by_index=1)
    env.produce([request("after-dlq", env.voice)], partition_by_index=1)
    dead = read_all(env.stack.kafka_bootstrap, env.topics.dlq, "DeadLetter", until=2, timeout=60,
                    registry_url=env.registry_url)
    assert len(dead) == 2
    record, msg = dead[0]
    headers = dict(msg.headers())
    assert record["original_value"] == garbage and record["reason"] == "undecodable"
    assert headers["dlq.source.topic"] == env.topics.requests.encode()
    assert headers["dlq.source.partition"] == b"0" and int(headers["dlq.source.offset"]) >= 0
    if env.registry_url:
        assert headers["dlq.error"] == b"schema id 2147483632 is unknown to the registry"
        assert msg.value()[:1] == b"\x00"  # the dead letter itself is registry-framed
    else:
        assert b"no SCHEMA_REGISTRY_URL" in headers["dlq.error"]
    after = env.results_for("after-dlq")
    assert len(after) == 1 and after[0]["status"] == "success"
    assert env.worker.alive


@pytest.mark.parametrize("rid,fields,code", [
    ("bad-vector", {"emotion_vector": [0.5] * 3}, "invalid_request"),
    ("bad-scheme", {"voice": "http://example.com/a.wav"}, "invalid_request"),
    ("too-long", {"text": "x" * 10_001}, "text_too_long"),
    ("missing-ref", {"voice": "s3://{bucket}/voices/nobody.wav"}, "reference_not_found"),
    ("not-audio", {"voice": "s3://{bucket}/voices/not-audio.wav"}, "invalid_reference_audio"),
    ("too-large", {"voice": "s3://{bucket}/voices/huge.wav"}, "reference_too_large"),
    ("not-allowed", {"voice": "s3://{bucket}-other/bob.wav"}, "bucket_not_allowed"),
    ("no-preset", {"voice": "no_such_voice"}, "unknown_voice"),
    ("expired", {"deadline": datetime.now(UTC) - timedelta(seconds=1)}, "expired"),
    ("engine-fail", {"text": "please ENGINE_FAIL now"}, "engine_error"),
])
def test_bad_requests_get_error_results_with_codes(env: Env, rid: str, fields: dict[str, Any], code: str) -> None:
    fields = {k: v.format(bucket=env.bucket) if isinstance(v, str) else v for k, v in fields.items()}
    env.produce([request(rid, fields.pop("voice", env.voice), **fields)])
    mine = env.results_for(rid)
    assert len(mine) == 1
    assert mine[0]["status"] == "error" and mine[0]["error_code"] == code, mine[0]
    assert mine[0]["error_message"] and mine[0]["output_uri"] is None
    assert env.worker.alive


def test_a_redo_never_changes_the_object_an_earlier_result_names(env: Env) -> None:
    """The engine renders other bytes on the redo (as a GPU may): each attempt's WAV gets its own
    content-addressed key, so the first result's object is still exactly what its sha256 says."""
    req = request("again", env.voice, text="say it twice", output_key_prefix="tts/redo")  # under S3_OUTPUT_PREFIXES
    env.produce([req])
    env.produce([req])
    mine = env.results_for("again", count=2)
    assert len(mine) == 2
    assert mine[0]["sha256"] != mine[1]["sha256"]  # the redo rendered other bytes
    for r in mine:
        assert r["output_key"] == f"tts/redo/again/{r['sha256']}.wav"
        body = env.s3.get_object(Bucket=r["output_bucket"], Key=r["output_key"])["Body"].read()
        assert hashlib.sha256(body).hexdigest() == r["sha256"]
    keys = [o["Key"] for o in env.s3.list_objects_v2(Bucket=env.bucket, Prefix="tts/redo/").get("Contents", [])]
    assert sorted(keys) == sorted(r["output_key"] for r in mine)


def test_worker_log_holds_no_secret(env: Env) -> None:
    secret = env.worker.env.get("AWS_SECRET_ACCESS_KEY")
    assert secret and secret not in Path(env.worker.log_path).read_text()


def test_a_request_written_by_another_producer_with_an_older_schema_is_served(env: Env) -> None:
    """Another team's producer, on the previous TtsRequest version (schemas/history) and another Avro
    library: with the registry, confluent-kafka's own AvroSerializer registers that older version
    and frames the record; without it, fastavro writes single-object encoding with its fingerprint."""
    older = sorted((REPO / "schemas" / "history").glob("TtsRequest.*.avsc"))
    assert older, "schemas/history holds no older TtsRequest"
    schema = json.loads(older[-1].read_text())
    rid = f"older-producer-{uuid.uuid4().hex[:6]}"
    fields = {f["name"] for f in schema["fields"]}
    record = {k: v for k, v in request(rid, env.voice, text="written with an older schema").items() if k in fields}
    if env.registry_url:
        from confluent_kafka.schema_registry import SchemaRegistryClient
        from confluent_kafka.schema_registry.avro import AvroSerializer
        from confluent_kafka.serialization import MessageField, SerializationContext

        serializer = AvroSerializer(SchemaRegistryClient({"url": env.registry_url}), json.dumps(schema),
                                    conf={"auto.register.schemas": True})
        value = serializer(record, SerializationContext(env.topics.requests, MessageField.VALUE))
        assert value is not None and value[:1] == b"\x00"
    else:
        out = io.BytesIO()
        fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record)
        value = b"\xc3\x01" + schema_fingerprint(schema) + out.getvalue()
    env.produce([value])
    mine = env.results_for(rid)
    assert len(mine) == 1 and mine[0]["status"] == "success", mine
    assert mine[0]["size_bytes"] > 0


def test_cli_submit_waits_for_its_own_result_on_this_wire_format(env: Env) -> None:
    rid = f"cli-{uuid.uuid4().hex[:6]}"
    done = subprocess.run(
        [sys.executable, "-m", "processor.cli", "submit", "--request-id", rid, "--voice", env.voice,
         "--text", "submitted from the command line", "--wait", "--timeout", "60"],
        env=env.worker.env, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["request_id"] == rid and result["status"] == "success"
    raw = [m for _, m in read_raw(env.stack.kafka_bootstrap, env.topics.requests) if m.key() == rid.encode()]
    assert len(raw) == 1 and raw[0].value()[:1] == (b"\x00" if env.registry_url else b"\xc3")


def read_raw(bootstrap: str, topic: str, timeout: float = 20) -> list[tuple[None, Any]]:
    from confluent_kafka import Consumer

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"raw-{uuid.uuid4().hex[:8]}", "log_level": 2,
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    out: list[tuple[None, Any]] = []
    deadline, idle = time.monotonic() + timeout, time.monotonic()
    try:
        while time.monotonic() < deadline and time.monotonic() - idle < 3:
            msg = c.poll(0.2)
            if msg is not None and not msg.error():
                out.append((None, msg))
                idle = time.monotonic()
    finally:
        c.close()
    return out


def test_console_backend_submits_and_follows_on_this_wire_format(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """The console's backend with the worker's settings: it submits (with a new trace), reads the
    progress and result back on this wire format, and shows the trace id the records carry."""
    from processor.config import load_settings
    from processor.console.backend import Backend

    for k, v in env.worker.env.items():
        monkeypatch.setenv(k, v)
    if not env.registry_url:
        monkeypatch.delenv("SCHEMA_REGISTRY_URL", raising=False)
    backend = Backend(load_settings())
    backend.start()
    try:
        deadline = time.monotonic() + 30
        while not all(t.ready.is_set() for t in backend.tailers) and time.monotonic() < deadline:
            time.sleep(0.1)
        req, _ = backend.submit({"text": "from the console. two segments here", "voice": env.voice,
                                 "max_text_tokens_per_segment": 20})
        view = backend.job_view(req.request_id)
        assert view is not None and view["trace_id"]
        sent_trace = view["trace_id"]
        deadline = time.monotonic() + 60
        while (view is None or view["state"] not in ("done", "error")) and time.monotonic() < deadline:
            time.sleep(0.2)
            view = backend.job_view(req.request_id)
        assert view is not None and view["state"] == "done", view
        assert view["result"]["trace_id"] == sent_trace  # read off the result record's traceparent
        assert view["progress_events"] >= 1 and view["trace_id"] == sent_trace
        assert all(t.undecodable == 0 for t in backend.tailers)
    finally:
        backend.stop()
