"""The bad-input corpus: malformed and hostile records, all sent to ONE real worker on the real stack.

Every record must end with exactly one outcome (an error result with the expected code, a dead
letter, or, for records that are odd only in their headers or key, a success), within a bound; the
worker must stay alive, ready and serving; and nothing may be written outside the output prefix
and the dead-letter claim-check prefix. The defect tests below name the defects of issue 11 that
this corpus first showed (each fails on 01ddf69): they read the same run.

Records are produced through librdkafka's C API (tests/support/raw_records.py), so header names
can be any bytes, as any producer on the network could write them.
"""

from __future__ import annotations

import copy
import hashlib
import io
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fastavro
import numpy as np
import pytest
import soundfile as sf
from confluent_kafka import Consumer, TopicPartition

from processor.wire import Codec, schema_json
from tests.support.audio import NOT_AUDIO, voice_clip
from tests.support.raw_records import RawRecord, produce_raw
from tests.support.workers import Topics, WorkerProcess, request, worker_env

BROKER_LIMIT = 1_048_588  # the broker's message.max.bytes (Kafka's default; the local stack keeps it)
OUTCOME_BOUND_SECONDS = 60.0
CODEC = Codec("TtsRequest")
FINGERPRINT = CODEC.encode(request("x", "v"))[:10]  # single-object magic + our schema's fingerprint


def _schema_variant(change: dict[str, Any]) -> Any:
    """Our schema with some field types swapped: same fingerprint (logical types and docs are not part
    of the canonical form), so what it writes is framed as ours but typed as the producer liked."""
    s = copy.deepcopy(schema_json("TtsRequest"))
    for f in s["fields"]:
        if f["name"] in change:
            f["type"] = change[f["name"]]
    return fastavro.parse_schema(s)


def _encode_with(schema: Any, record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema, record)
    return FINGERPRINT + out.getvalue()


def _clip(rate: int = 24000, channels: int = 1, seconds: float = 1.0) -> bytes:
    buf = io.BytesIO()
    t = np.arange(int(rate * seconds)) / rate
    tone = (np.sin(2 * np.pi * 220 * t) * 8000).astype(np.int16)
    sf.write(buf, np.repeat(tone[:, None], channels, axis=1), rate, format="WAV")
    return buf.getvalue()


@dataclass
class Case:
    name: str
    record: RawRecord
    expect: frozenset[str]  # "success", "dlq", "error:<code>"
    offset: int = -1


@dataclass
class Run:
    bucket: str
    other_bucket: str
    topics: Topics
    worker: WorkerProcess
    stack: Any
    cases: list[Case]
    outcomes: dict[int, list[tuple[str, dict[str, Any], float]]] = field(default_factory=dict)
    produced_at: float = 0.0
    before: dict[str, dict[str, str]] = field(default_factory=dict)
    after: dict[str, dict[str, str]] = field(default_factory=dict)

    def case(self, name: str) -> Case:
        return next(c for c in self.cases if c.name == name)

    def outcome(self, name: str) -> tuple[str, dict[str, Any], float]:
        found = self.outcomes.get(self.case(name).offset, [])
        assert len(found) == 1, f"{name}: {len(found)} outcomes"
        return found[0]


def build_cases(bucket: str, other: str) -> list[Case]:
    v = f"s3://{bucket}/refs/voice.wav"
    now = datetime.now(UTC)
    cases: list[Case] = []

    def add(name: str, expect: str | set[str], value: bytes | None = None, *, key: bytes | None = None,
            headers: tuple[tuple[bytes, bytes | None], ...] = (), **fields: Any) -> None:
        if value is None and "no_value" not in fields:
            rid = fields.pop("request_id", f"c-{name}")
            value = CODEC.encode(request(rid, fields.pop("voice", v), **fields))
        fields.pop("no_value", None)
        if key is None:
            key = name.encode()
        exp = frozenset({expect} if isinstance(expect, str) else expect)
        cases.append(Case(name, RawRecord(value, key, headers), exp))

    # --- bytes that are not a request at all
    add("empty-value", "dlq", b"")
    add("null-value", "dlq", no_value=True)
    add("garbage", "dlq", bytes(range(256)) * 4)
    add("magic-only", "dlq", b"\xc3\x01")
    add("unknown-fingerprint", "dlq", b"\xc3\x01" + b"\x13" * 8 + b"\x02ab")
    add("registry-framing-without-registry", "dlq", b"\x00\x00\x00\x00\x07" + b"\x02ab")
    add("json-not-avro", "dlq", b'{"request_id": "json", "text": "hi", "voice": "narrator"}')
    good = CODEC.encode(request("c-truncated", v))
    add("truncated-avro", "dlq", good[: len(good) // 2])
    add("trailing-bytes", "dlq", good + b"\x00\x01\x02")
    add("wrong-types", {"dlq", "error:invalid_request"},
        _encode_with(_schema_variant({"text": "long", "voice": "double"}),
                     {**request("c-wrong-types", v), "text": 12345, "voice": 1.5}))
    missing = {"type": "record", "name": "TtsRequest", "namespace": "tts.processor.v1",
               "fields": [{"name": "request_id", "type": "string"}]}
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(missing), {"request_id": "c-missing"})
    add("missing-fields", "dlq", FINGERPRINT + out.getvalue())
    # request_id "c-truncated" is 1 length byte + 11 bytes into the body; swap it for 2 bytes of bad UTF-8.
    add("invalid-utf8-string", "dlq", FINGERPRINT + b"\x04\xff\xfe" + good[10 + 12:])
    add("ten-times-broker-limit", "dlq", b"\x07" * (10 * BROKER_LIMIT))
    add("just-under-broker-limit", "dlq", b"\x07" * (BROKER_LIMIT - 2048))

    # --- headers and keys of any bytes
    add("non-utf8-header-name-garbage", "dlq", b"garbage", headers=((b"\xff\xfe\xfd", b"x"), (b"ok", b"1")))
    add("non-utf8-header-name-valid", "success", headers=((b"\xc3\x28", b"x"), (b"trace", b"1")))
    # More of them, after and between ordinary records: a hot call site behaves differently (headers.py).
    for i, name in enumerate((b"\x80", b"\xed\xa0\x80", b"ok\xff", b"\xf8\x88\x80\x80\x80", b"\xc0\xaf")):
        add(f"non-utf8-header-name-{i}", "error:invalid_request" if i % 2 else "dlq",
            None if i % 2 else b"\x00junk", headers=((name, None if i % 2 else b"v"),), text="" if i % 2 else "x")
    add("null-and-empty-headers", "success", headers=((b"nullvalue", None), (b"", b""), (b"a\x00b", b"nul")))
    add("many-headers", "success", headers=tuple((f"h{i}".encode(), b"y" * 100) for i in range(2000)))
    add("huge-header-value-garbage", "dlq", b"junk", headers=((b"big", b"z" * 500_000),))
    add("binary-key", "success", key=b"\xff\x00\xfe")
    add("empty-key-garbage", "dlq", b"junk", key=b"")
    add("huge-key-garbage", "dlq", b"junk", key=b"k" * 600_000)

    # --- request ids
    add("id-600kb", "error:invalid_request", request_id="i" * 600_000)
    add("id-just-under-broker-limit", "error:invalid_request", request_id="j" * (BROKER_LIMIT - 4096))
    add("id-129-chars", "error:invalid_request", request_id="a" * 129)
    add("id-with-space", "error:invalid_request", request_id="has space")
    add("id-unicode", "error:invalid_request", request_id="ид-1")
    add("id-empty", "error:invalid_request", request_id="")
    add("duplicate-id-1", "success", request_id="c-duplicate")
    add("duplicate-id-2", "success", request_id="c-duplicate")

    # --- texts
    add("text-empty", "error:invalid_request", text="")
    add("text-whitespace", "error:invalid_request", text=" \t\n  ")
    add("text-10001", "error:text_too_long", text="字" * 10_001)
    add("text-1mb", "error:text_too_long", text="x" * 1_000_000)
    add("text-control", "error:invalid_request", text="hello\x00\x1b[2J world")
    add("text-emoji-only", "error:invalid_request", text="🙂🙃🎉🔥")
    add("text-mixed-script", "success", text="Hello мир 你好 مرحبا שלום")

    # --- emotion controls
    for name, vec in (("vec-7", [0.1] * 7), ("vec-9", [0.1] * 9), ("vec-nan", [float("nan")] + [0.1] * 7),
                      ("vec-inf", [float("inf")] + [0.1] * 7), ("vec-neg-inf", [float("-inf")] + [0.1] * 7),
                      ("vec-negative", [-0.5] + [0.1] * 7), ("vec-zero", [0.0] * 8), ("vec-1.3", [1.3] + [0.0] * 7)):
        add(name, "error:invalid_request", emotion_vector=vec)
    add("vec-1.2-float32", "success", emotion_vector=[1.2] + [0.0] * 7)
    for name, alpha in (("alpha-nan", float("nan")), ("alpha-inf", float("inf")), ("alpha-negative", -0.1),
                        ("alpha-1.5", 1.5)):
        add(name, "error:invalid_request", emotion_alpha=alpha)
    add("modes-vector-and-text", "error:invalid_request", emotion_vector=[0.5] * 8, emotion_text="angry")
    add("modes-reference-and-vector", "error:invalid_request", emotion_reference=v, emotion_vector=[0.5] * 8)

    # --- generation settings
    for name, over in (("top-p-0", {"top_p": 0.0}), ("top-k-neg", {"top_k": -1}),
                       ("temperature-0", {"temperature": 0.0}), ("beams-11", {"num_beams": 11}),
                       ("penalty-0.5", {"repetition_penalty": 0.5}),
                       ("mel-10", {"max_mel_tokens": 10}), ("silence-neg", {"interval_silence_ms": -1}),
                       ("segment-1", {"max_text_tokens_per_segment": 1})):
        add(name, "error:invalid_request", **over)

    # --- voices, buckets, URIs
    add("unknown-preset", "error:unknown_voice", voice="no_such_voice")
    add("bad-preset-name", "error:invalid_request", voice="../narrator")
    add("disallowed-bucket", "error:bucket_not_allowed", voice="s3://not-allowed-bucket/x.wav")
    add("traversal-dotdot", "error:invalid_request", voice=f"s3://{bucket}/refs/../refs/voice.wav")
    add("traversal-double-slash", "error:invalid_request", voice=f"s3://{bucket}/refs//voice.wav")
    add("key-with-nul", "error:invalid_request", voice=f"s3://{bucket}/refs/voice\x00.wav")
    add("uri-http", "error:invalid_request", voice="http://example.com/a.wav")
    add("uri-file", "error:invalid_request", voice="file:///etc/passwd")
    add("uri-no-key", "error:invalid_request", voice=f"s3://{bucket}/")
    add("ref-missing", "error:reference_not_found", voice=f"s3://{bucket}/refs/nobody.wav")
    add("ref-not-audio", "error:invalid_reference_audio", voice=f"s3://{bucket}/refs/not-audio.wav")
    add("ref-empty", "error:invalid_reference_audio", voice=f"s3://{bucket}/refs/empty.wav")
    add("ref-truncated", "error:invalid_reference_audio", voice=f"s3://{bucket}/refs/truncated.wav")
    add("ref-oversized", "error:reference_too_large", voice=f"s3://{bucket}/refs/huge.wav")
    add("ref-384khz", "error:invalid_reference_audio", voice=f"s3://{bucket}/refs/384k.wav")
    add("ref-8-channels", "error:invalid_reference_audio", voice=f"s3://{bucket}/refs/8ch.wav")
    add("emotion-ref-not-audio", "error:invalid_reference_audio", emotion_reference=f"s3://{bucket}/refs/not-audio.wav")
    add("read-only-bucket-voice", "success", voice=f"s3://{other}/voice.wav")

    # --- where the output goes
    add("output-read-only-bucket", "error:bucket_not_allowed", output_bucket=other)
    add("output-over-preset", "error:output_not_allowed", request_id="reference", output_key_prefix="voices/narrator")
    add("output-voices-root", "error:output_not_allowed", output_key_prefix="voices")
    add("output-dead-letters", "error:output_not_allowed", output_key_prefix="dead-letters/x")
    add("output-elsewhere", "error:output_not_allowed", output_key_prefix="elsewhere")
    add("output-traversal", "error:invalid_request", output_key_prefix="tts/../voices")
    add("output-allowed-subprefix", "success", output_key_prefix="tts/team-a")

    # --- time
    add("deadline-past", "error:expired", deadline=now - timedelta(seconds=5))
    long_ts = _schema_variant({"deadline": ["null", "long"], "created_at": ["null", "long"]})
    add("deadline-long-max", "error:invalid_request",
        _encode_with(long_ts, {**request("c-deadline-max", v), "deadline": 2**63 - 1, "created_at": None}))
    add("deadline-long-min", "error:invalid_request",
        _encode_with(long_ts, {**request("c-deadline-min", v), "deadline": -(2**63), "created_at": None}))
    add("created-year-9999", "error:invalid_request",
        _encode_with(long_ts, {**request("c-created-9999", v), "deadline": None,
                               "created_at": int(datetime(9999, 6, 1, tzinfo=UTC).timestamp() * 1000)}))
    add("created-too-old", "error:expired", created_at=now - timedelta(hours=3))
    return cases


@pytest.fixture(scope="module")
def run(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("bad-input")
    prefix = f"bad-{uuid.uuid4().hex[:8]}"
    topics = Topics(*(f"{prefix}.{n}" for n in ("requests", "results", "progress", "health", "dlq")))
    # The request topic takes records up to 12 MiB (a producer's topic may); every topic the worker
    # writes keeps the broker's default limit.
    stack.create_topics({topics.requests: 1}, config={"max.message.bytes": str(12 * 1024 * 1024)})
    stack.create_topics({topics.results: 1, topics.progress: 1, topics.health: 1, topics.dlq: 1})
    bucket, other = prefix, f"{prefix}-ro"
    stack.create_bucket(bucket)
    stack.create_bucket(other)
    s3 = stack.s3_client()
    voice = voice_clip()
    for key, body in (("refs/voice.wav", voice), ("refs/not-audio.wav", NOT_AUDIO), ("refs/empty.wav", b""),
                      ("refs/truncated.wav", voice[:44]), ("refs/huge.wav", voice_clip(seconds=8.0)),
                      ("refs/384k.wav", _clip(rate=384_000, seconds=0.25)),
                      ("refs/8ch.wav", _clip(channels=8, seconds=0.5)),
                      ("voices/narrator/reference.wav", voice),
                      ("voices/narrator/voice.json", b'{"name": "narrator", "reference_key": '
                                                     b'"voices/narrator/reference.wav"}')):
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    s3.put_object(Bucket=other, Key="voice.wav", Body=voice)
    cases = build_cases(bucket, other)
    worker = WorkerProcess(worker_env(stack, topics, bucket, f"{prefix}-group", tmp,
                                      S3_MAX_REFERENCE_BYTES="200000", S3_ALLOWED_BUCKETS=other,
                                      WORKER_MAX_REQUEST_AGE_SECONDS="3600", WORKER_MAX_ATTEMPTS="3",
                                      WORKER_RETRY_BASE_SECONDS="0.2"),
                           tmp / "worker.log").start()
    r = Run(bucket, other, topics, worker, stack, cases)
    try:
        worker.wait_ready()
        r.before = {b: listing(s3, b) for b in (bucket, other)}
        produce_raw(stack.kafka_bootstrap, topics.requests, (c.record for c in cases))
        r.produced_at = time.monotonic()
        for i, c in enumerate(cases):
            c.offset = i  # one partition, one idempotent producer: offsets follow the order
        r.outcomes = collect(stack.kafka_bootstrap, topics, len(cases), timeout=OUTCOME_BOUND_SECONDS + 60)
        r.after = {b: listing(s3, b) for b in (bucket, other)}
        yield r
    finally:
        worker.stop()


def listing(s3: Any, bucket: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        out.update({o["Key"]: o["ETag"] for o in page.get("Contents", [])})
    return out


def collect(bootstrap: str, topics: Topics, n: int, *, timeout: float
            ) -> dict[int, list[tuple[str, dict[str, Any], float]]]:
    """Outcomes by request offset, read_committed, from the result and DLQ topics: (kind, record, when)."""
    codecs = {topics.results: Codec("TtsResult"), topics.dlq: Codec("DeadLetter")}
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex[:8]}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False, "isolation.level": "read_committed"})
    c.subscribe([topics.results, topics.dlq])
    found: dict[int, list[tuple[str, dict[str, Any], float]]] = {}
    deadline = time.monotonic() + timeout
    settle_until: float | None = None
    try:
        while time.monotonic() < deadline:
            msg = c.poll(0.2)
            if msg is not None and not msg.error():
                rec = codecs[msg.topic()].decode(msg.value())
                if msg.topic() == topics.dlq:
                    found.setdefault(rec["source_offset"], []).append(("dlq", rec, time.monotonic()))
                else:
                    kind = "success" if rec["status"] == "success" else f"error:{rec['error_code']}"
                    found.setdefault(rec["request_offset"], []).append((kind, rec, time.monotonic()))
            if sum(len(v) for v in found.values()) >= n:
                settle_until = settle_until or time.monotonic() + 3  # a little longer, to see duplicates
                if time.monotonic() > settle_until:
                    break
    finally:
        c.close()
    return found


# ---------------------------------------------------------------- the corpus


def test_corpus_is_large_and_all_of_it_reached_the_topic(run: Run) -> None:
    assert len(run.cases) >= 60
    c = Consumer({"bootstrap.servers": run.stack.kafka_bootstrap, "group.id": "wm"})
    try:
        low, high = c.get_watermark_offsets(TopicPartition(run.topics.requests, 0), timeout=10)
    finally:
        c.close()
    assert (low, high) == (0, len(run.cases))


def test_every_record_gets_exactly_one_expected_outcome_within_the_bound(run: Run) -> None:
    wrong: list[str] = []
    for c in run.cases:
        got = run.outcomes.get(c.offset, [])
        kinds = [k for k, _, _ in got]
        if len(got) != 1 or kinds[0] not in c.expect:
            detail = [(k, r.get("error_message") or r.get("reason")) for k, r, _ in got]
            wrong.append(f"{c.name}: expected one of {sorted(c.expect)}, got {detail}")
    stray = set(run.outcomes) - {c.offset for c in run.cases}
    assert not wrong and not stray, "\n".join(wrong) + f"\nstray offsets: {sorted(stray)}\n" + run.worker.logs()[-3000:]
    slowest = max(t for got in run.outcomes.values() for _, _, t in got) - run.produced_at
    assert slowest < OUTCOME_BOUND_SECONDS


def test_worker_is_alive_ready_and_serves_the_next_request_within_seconds(run: Run) -> None:
    assert run.worker.alive, run.worker.logs()[-3000:]
    assert run.worker.http("/livez")[0] == 200 and run.worker.http("/readyz")[0] == 200
    rid = f"after-{uuid.uuid4().hex[:6]}"
    produce_raw(run.stack.kafka_bootstrap, run.topics.requests,
                [RawRecord(CODEC.encode(request(rid, f"s3://{run.bucket}/refs/voice.wav")), rid.encode())])
    t0 = time.monotonic()
    outcomes = collect(run.stack.kafka_bootstrap, run.topics, len(run.cases) + 1, timeout=30)
    mine = [(k, r) for got in outcomes.values() for k, r, _ in got if r.get("request_id") == rid]
    assert [k for k, _ in mine] == ["success"]
    assert time.monotonic() - t0 < 30


def test_nothing_is_written_outside_the_output_and_claim_check_prefixes(run: Run) -> None:
    assert run.after[run.other_bucket] == run.before[run.other_bucket]
    changed = {k for k, etag in run.after[run.bucket].items() if run.before[run.bucket].get(k) != etag}
    outside = {k for k in changed if not k.startswith(("tts/", "dead-letters/"))}
    assert not outside
    assert set(run.before[run.bucket]) <= set(run.after[run.bucket])


# ---------------------------------------------------------------- issue 11's defects, by name


def test_issue11_defect1_outcomes_too_large_for_their_topic_do_not_jam_the_worker(run: Run) -> None:
    """A 600 KB id, a near-1 MB id, records 10x and just under the broker limit, a 600 KB key: each one
    outcome that fits (an error under a short stand-in id, or a claim-checked dead letter)."""
    s3 = run.stack.s3_client()
    for name in ("id-600kb", "id-just-under-broker-limit"):
        kind, rec, _ = run.outcome(name)
        assert kind == "error:invalid_request" and rec["request_id"].startswith("~") and len(rec["request_id"]) <= 128
    for name in ("ten-times-broker-limit", "just-under-broker-limit", "huge-key-garbage"):
        kind, rec, _ = run.outcome(name)
        original = run.case(name).record
        assert kind == "dlq" and rec["original_value"] is None
        assert rec["original_size_bytes"] == len(original.value or b"") + len(original.key or b"")
        bucket, _, key = rec["claim_check_uri"][5:].partition("/")
        assert key.startswith("dead-letters/")
        data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert hashlib.sha256(data).hexdigest() == rec["claim_check_sha256"]
        assert len(data) == rec["claim_check_size_bytes"]
        whole = Codec("DeadLetter").decode(data)
        assert (whole["original_value"], whole["original_key"]) == (original.value, original.key)


def test_issue11_defect2_header_names_that_are_not_utf8_do_not_crash_the_worker(run: Run) -> None:
    kind, rec, _ = run.outcome("non-utf8-header-name-garbage")
    assert kind == "dlq" and "header names are not valid UTF-8" in rec["error_message"]
    assert rec["original_value"] == b"garbage"
    assert run.outcome("non-utf8-header-name-valid")[0] == "success"
    assert run.worker.alive and "SystemError" not in run.worker.logs()


def test_issue11_defect3_no_write_outside_the_output_prefixes_nor_gpu_spent_first(run: Run) -> None:
    preset = "voices/narrator/reference.wav"
    assert run.after[run.bucket][preset] == run.before[run.bucket][preset]
    for name in ("output-over-preset", "output-voices-root", "output-dead-letters", "output-elsewhere",
                 "output-read-only-bucket"):
        kind, rec, _ = run.outcome(name)
        assert kind.startswith("error:") and rec["model"] is None, name  # refused before the engine ran
        assert rec["attempts"] == 1


def test_issue11_defect5_keys_storage_rejects_fail_at_once_not_after_retries(run: Run) -> None:
    for name in ("traversal-dotdot", "traversal-double-slash", "key-with-nul"):
        kind, rec, when = run.outcome(name)
        assert kind == "error:invalid_request" and rec["attempts"] == 1, name
        assert when - run.produced_at < OUTCOME_BOUND_SECONDS


def test_issue11_defect7_documented_bounds_and_timestamps(run: Run) -> None:
    assert run.outcome("vec-1.2-float32")[0] == "success"
    for name in ("deadline-long-max", "created-year-9999"):
        kind, rec, _ = run.outcome(name)
        assert kind == "error:invalid_request", (name, rec)


def test_issue11_defect1_a_result_its_topic_refuses_is_replaced_for_it_alone(stack: Any, tmp_path: Path) -> None:
    """A result topic that takes less than the worker's results (its max.message.bytes below
    KAFKA_MAX_MESSAGE_BYTES): the broker refuses one outcome inside the transaction. That request alone
    gets a small outcome_too_large error result; the others commit; nothing loops."""
    prefix = f"refuse-{uuid.uuid4().hex[:8]}"
    topics = Topics(*(f"{prefix}.{n}" for n in ("requests", "results", "progress", "health", "dlq")))
    stack.create_topics({topics.requests: 1, topics.progress: 1, topics.health: 1, topics.dlq: 1})
    stack.create_topics({topics.results: 1}, config={"max.message.bytes": "1400"})
    stack.create_bucket(prefix)
    stack.s3_client().put_object(Bucket=prefix, Key="refs/voice.wav", Body=voice_clip())
    worker = WorkerProcess(worker_env(stack, topics, prefix, f"{prefix}-group", tmp_path), tmp_path / "w.log").start()
    try:
        worker.wait_ready()
        voice = f"s3://{prefix}/refs/voice.wav"
        records = [request("big", voice, workflow_id="w" * 256, stage_name="s" * 256, emotion_text="x" * 1000),
                   request("small", voice, text="")]
        produce_raw(stack.kafka_bootstrap, topics.requests,
                    [RawRecord(CODEC.encode(r), r["request_id"].encode()) for r in records])
        outcomes = collect(stack.kafka_bootstrap, topics, 2, timeout=60)
        kinds = {r["request_id"]: k for got in outcomes.values() for k, r, _ in got}
        assert kinds == {"big": "error:outcome_too_large", "small": "error:invalid_request"}, worker.logs()[-2000:]
        assert sum(len(v) for v in outcomes.values()) == 2
        assert worker.alive and worker.http("/livez")[0] == 200
        time.sleep(3)  # a loop would keep refusing and aborting: the counts must have stopped growing
        logs = worker.logs()
        assert 1 <= logs.count("refused by the broker") <= 2, logs[-3000:]
        assert logs.count("transaction aborted") <= 3, logs[-3000:]
    finally:
        worker.kill()
