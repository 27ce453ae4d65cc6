"""processor/tracing.py: W3C context in and out, stage spans to an in-process exporter, nothing when off."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from processor import tracing
from tests.support.rig import CODECS, VOICE, Rig
from tests.support.workers import request

PARENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{PARENT_TRACE}-{PARENT_SPAN}-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.configure(span_exporter=exporter)
    yield exporter
    tracing.shutdown()


def test_off_without_context_there_is_nothing_to_carry() -> None:
    assert not tracing.recording()
    job = tracing.start_job([("other", b"x")])
    assert job is None
    with tracing.stage(job, "prepare") as span:
        assert span is None
    assert tracing.with_trace([("a", b"1")], job) == [("a", b"1")]
    tracing.end_job(job, "success")


def test_off_the_callers_context_passes_through_unchanged() -> None:
    job = tracing.start_job([("traceparent", TRACEPARENT.encode()), ("tracestate", b"vendor=abc")])
    assert job is not None and job.trace_id == PARENT_TRACE and not job.span.is_recording()
    with tracing.stage(job, "synthesize") as span:
        assert span is None
    assert dict(job.headers()) == {"traceparent": TRACEPARENT.encode(), "tracestate": b"vendor=abc"}


@pytest.mark.parametrize("bad", [b"", b"garbage", b"00-" + b"0" * 32 + b"-" + b"0" * 16 + b"-01",
                                 b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra\xff",
                                 b"x" * 10_000])
def test_invalid_traceparent_is_ignored(bad: bytes) -> None:
    assert tracing.extract([("traceparent", bad)]) is None
    assert tracing.start_job([("traceparent", bad)]) is None


def test_spans_for_each_stage_continue_the_callers_trace(spans: InMemorySpanExporter) -> None:
    job = tracing.start_job([("TraceParent", TRACEPARENT.encode())], request_id="r-1", topic="tts.requests",
                            partition=2, offset=41)
    assert job is not None and job.span.is_recording()
    for name in ("prepare", "synthesize", "store", "emit"):
        with tracing.stage(job, name, request_id="r-1"):
            pass
    out = dict(tracing.with_trace([("dlq.x", b"1"), ("traceparent", b"stale")], job))
    tracing.end_job(job, "success")

    finished = {s.name: s for s in spans.get_finished_spans()}
    assert set(finished) == {"tts.request", "tts.prepare", "tts.synthesize", "tts.store", "tts.emit"}
    root = finished["tts.request"]
    assert root.kind is SpanKind.CONSUMER
    assert root.parent is not None and format(root.parent.span_id, "016x") == PARENT_SPAN
    assert root.attributes is not None and root.attributes["tts.request_id"] == "r-1"
    assert root.attributes["messaging.kafka.offset"] == 41
    for s in finished.values():
        assert format(s.context.trace_id, "032x") == PARENT_TRACE
    for name in ("tts.prepare", "tts.synthesize", "tts.store", "tts.emit"):
        assert finished[name].parent is not None and finished[name].parent.span_id == root.context.span_id
    # Outgoing records name the job span as their parent, in the caller's trace.
    assert out["dlq.x"] == b"1"
    assert out["traceparent"] == f"00-{PARENT_TRACE}-{format(root.context.span_id, '016x')}-01".encode()
    assert tracing.trace_id(list(out.items())) == PARENT_TRACE


def test_a_request_without_context_starts_a_new_trace_when_on(spans: InMemorySpanExporter) -> None:
    job = tracing.start_job(None, request_id="r-2")
    assert job is not None
    tracing.end_job(job, "error", "engine_error")
    (root,) = spans.get_finished_spans()
    assert root.parent is None and root.status.status_code is StatusCode.ERROR
    assert tracing.trace_id(job.headers()) == format(root.context.trace_id, "032x")


def test_a_failing_stage_records_the_exception(spans: InMemorySpanExporter) -> None:
    job = tracing.start_job([("traceparent", TRACEPARENT.encode())])
    with pytest.raises(RuntimeError), tracing.stage(job, "synthesize"):
        raise RuntimeError("out of memory")
    (span,) = spans.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.events and span.events[0].name == "exception"


def test_new_traceparent_is_valid_and_random() -> None:
    a, b = tracing.new_traceparent(), tracing.new_traceparent()
    assert a != b and tracing.trace_id([("traceparent", a)]) == a.split("-")[1]


# ------------------------------------------------------------------ through the processor (memory broker)


class _Sink:
    """The events producer, keeping each progress event's headers."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, list[tuple[str, bytes]]]] = []

    def produce(self, topic: str, value: bytes, key: bytes | None = None, **kw: Any) -> None:
        self.sent.append((topic, value, list(kw.get("headers") or [])))

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        return 0


def _run_traced(tmp_path: Path) -> tuple[Rig, _Sink]:
    rig = Rig(tmp_path, partitions=1)
    sink = _Sink()
    rig.processor.stages.events_producer = sink
    header = [("traceparent", TRACEPARENT.encode()), ("tracestate", b"team=abc")]
    value = CODECS["TtsRequest"].encode(request("traced", VOICE, text="one. two. three and four",
                                                max_text_tokens_per_segment=20))
    rig.broker.produce("req", 0, value, b"traced", header)
    rig.broker.produce("req", 0, b"\xc3\x01 undecodable", b"raw", header)
    rig.start()
    rig.step_until(lambda: rig.committed(0) == 2, timeout=60)  # the first render imports the codecs
    rig.stop()
    return rig, sink


def _trace(headers: list[tuple[str, bytes]]) -> tuple[str, str] | None:
    ctx = tracing.span_context_of(headers)
    return (format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")) if ctx else None


def test_processor_spans_each_stage_and_puts_the_trace_on_every_record(tmp_path: Path,
                                                                       spans: InMemorySpanExporter) -> None:
    rig, sink = _run_traced(tmp_path)
    (result,) = rig.broker.read("res")
    (dead,) = rig.broker.read("dlq")
    progress = [h for topic, _, h in sink.sent if topic == "prog"]
    assert progress

    finished = spans.get_finished_spans()
    jobs = {s.attributes["messaging.kafka.offset"]: s for s in finished
            if s.name == "tts.request" and s.attributes is not None}
    traced, undecodable = jobs[0], jobs[1]
    assert traced.attributes is not None and traced.attributes["tts.request_id"] == "traced"
    assert traced.attributes["tts.status"] == "success"
    children = {s.name for s in finished if s.parent is not None and s.parent.span_id == traced.context.span_id}
    assert children == {"tts.prepare", "tts.synthesize", "tts.store", "tts.emit"}
    for s in (traced, undecodable):
        assert format(s.context.trace_id, "032x") == PARENT_TRACE
        assert s.parent is not None and format(s.parent.span_id, "016x") == PARENT_SPAN
    assert undecodable.status.status_code is StatusCode.ERROR

    job_span = format(traced.context.span_id, "016x")
    assert _trace(result.headers) == (PARENT_TRACE, job_span)
    assert dict(result.headers)["tracestate"] == b"team=abc"
    assert all(_trace(h) == (PARENT_TRACE, job_span) for h in progress)
    assert _trace(dead.headers) == (PARENT_TRACE, format(undecodable.context.span_id, "016x"))


def test_processor_with_tracing_off_passes_the_callers_context_on(tmp_path: Path) -> None:
    assert not tracing.recording()
    rig, sink = _run_traced(tmp_path)
    (result,) = rig.broker.read("res")
    (dead,) = rig.broker.read("dlq")
    for headers in [result.headers, dead.headers, *(h for t, _, h in sink.sent if t == "prog")]:
        assert dict(headers)["traceparent"] == TRACEPARENT.encode()
