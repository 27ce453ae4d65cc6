"""Trace context across the topics with a real worker process on the real stack.

A request carrying a W3C ``traceparent`` yields result and progress records whose ``traceparent``
is in the same trace; its dead letter too. The worker exports its spans with the console exporter,
so the test also sees, from outside the process, one span per stage in that trace. (The in-process
check with an ``InMemorySpanExporter`` is in tests/unit/test_tracing.py.)
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from processor import tracing
from tests.support.audio import voice_clip
from tests.support.workers import Topics, WorkerProcess, produce, read_all, request, worker_env

STAGES = {"tts.request", "tts.prepare", "tts.synthesize", "tts.store", "tts.emit"}


class Traced:
    def __init__(self, stack: Any, topics: Topics, bucket: str, worker: WorkerProcess) -> None:
        self.stack, self.topics, self.bucket, self.worker = stack, topics, bucket, worker

    @property
    def voice(self) -> str:
        return f"s3://{self.bucket}/voice.wav"

    def records(self, topic: str, codec: str, request_id: str, count: int = 1) -> list[tuple[dict[str, Any], Any]]:
        def mine(rs: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [r for r in rs if r.get("request_id") == request_id]

        found = read_all(self.stack.kafka_bootstrap, topic, codec, timeout=60,
                         stop=lambda rs: len(mine(rs)) >= count)
        return [(r, m) for r, m in found if r.get("request_id") == request_id]

    def spans(self, trace_id: str, names: set[str], timeout: float = 30) -> list[dict[str, Any]]:
        """Spans of ``trace_id`` the worker printed (console exporter, JSON per span) on its log."""
        deadline = time.monotonic() + timeout
        found: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            found = [s for s in _console_spans(self.worker.logs()) if s["context"]["trace_id"] == f"0x{trace_id}"]
            if names <= {s["name"] for s in found}:
                break
            time.sleep(0.3)
        return found


def _console_spans(text: str) -> list[dict[str, Any]]:
    """The ConsoleSpanExporter writes each span as an indented JSON object starting at column 0."""
    out = []
    for block in re.findall(r"^\{\n.*?^\}$", text, flags=re.S | re.M):
        try:
            span = json.loads(block)
        except ValueError:
            continue
        if isinstance(span, dict) and "context" in span and "name" in span:
            out.append(span)
    return out


@pytest.fixture(scope="module")
def traced(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traced]:
    tmp = tmp_path_factory.mktemp("tracing")
    prefix = f"trace-{datetime.now(UTC).strftime('%H%M%S%f')}"
    topics = Topics.create(stack, prefix, partitions=1)
    stack.create_bucket(prefix)
    stack.s3_client().put_object(Bucket=prefix, Key="voice.wav", Body=voice_clip(seed=3))
    worker = WorkerProcess(worker_env(stack, topics, prefix, f"{prefix}-group", tmp,
                                      OTEL_TRACES_EXPORTER="console", OTEL_BSP_SCHEDULE_DELAY="200"),
                           tmp / "worker.log").start()
    try:
        worker.wait_ready()
        yield Traced(stack, topics, prefix, worker)
    finally:
        worker.stop()


def test_a_traced_request_yields_result_and_progress_in_its_trace(traced: Traced) -> None:
    trace_hex, parent_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    traceparent = f"00-{trace_hex}-{parent_span}-01"
    rid = f"traced-{uuid.uuid4().hex[:6]}"
    produce(traced.stack.kafka_bootstrap, traced.topics.requests,
            [request(rid, traced.voice, text="one segment. and another one. and a third",
                     max_text_tokens_per_segment=20)],
            headers=[("traceparent", traceparent.encode()), ("tracestate", b"team=abc")])
    (result, result_msg), = traced.records(traced.topics.results, "TtsResult", rid)
    assert result["status"] == "success", result
    progress = traced.records(traced.topics.progress, "TtsProgress", rid, count=result["segments"])
    assert progress and len(progress) >= result["segments"]

    result_ctx = tracing.span_context_of(result_msg.headers())
    assert result_ctx is not None and format(result_ctx.trace_id, "032x") == trace_hex
    assert dict(result_msg.headers())["tracestate"] == b"team=abc"
    for _, msg in progress:
        ctx = tracing.span_context_of(msg.headers())
        assert ctx is not None and ctx.trace_id == result_ctx.trace_id and ctx.span_id == result_ctx.span_id

    # The worker's own spans, exported from its process: the job span is the caller's child and the
    # records' parent; each stage is the job span's child.
    spans = {s["name"]: s for s in traced.spans(trace_hex, STAGES)}
    assert set(spans) >= STAGES, sorted(spans)
    job = spans["tts.request"]
    assert job["parent_id"] == f"0x{parent_span}"
    assert job["context"]["span_id"] == f"0x{format(result_ctx.span_id, '016x')}"
    assert job["attributes"]["tts.request_id"] == rid and job["attributes"]["tts.status"] == "success"
    for name in STAGES - {"tts.request"}:
        assert spans[name]["parent_id"] == job["context"]["span_id"], name


def test_a_traced_undecodable_record_is_dead_lettered_in_its_trace(traced: Traced) -> None:
    trace_hex = uuid.uuid4().hex
    produce(traced.stack.kafka_bootstrap, traced.topics.requests, [b"\xc3\x01 not a request " + trace_hex.encode()],
            headers=[("traceparent", f"00-{trace_hex}-{uuid.uuid4().hex[:16]}-01".encode())])
    def ours(r: dict[str, Any]) -> bool:
        return trace_hex.encode() in (r.get("original_value") or b"")

    found = read_all(traced.stack.kafka_bootstrap, traced.topics.dlq, "DeadLetter", timeout=60,
                     stop=lambda rs: any(ours(r) for r in rs))
    dead = [(r, m) for r, m in found if ours(r)]
    assert len(dead) == 1
    ctx = tracing.span_context_of(dead[0][1].headers())
    assert ctx is not None and format(ctx.trace_id, "032x") == trace_hex
    spans = traced.spans(trace_hex, {"tts.request", "tts.emit"})
    job = next(s for s in spans if s["name"] == "tts.request")
    assert job["attributes"]["tts.status"] == "dead_letter" and job["status"]["status_code"] == "ERROR"

