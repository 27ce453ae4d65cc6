"""W3C trace context across the topics, and OpenTelemetry spans for each stage of a job.

A request may carry ``traceparent`` / ``tracestate`` Kafka headers (W3C Trace Context). The worker
continues that trace: one ``tts.request`` span per job (a child of the caller's span) with children
``tts.prepare``, ``tts.synthesize``, ``tts.store`` and ``tts.emit``. The job span's context goes out
as ``traceparent`` / ``tracestate`` headers on the job's result, progress and dead-letter records, so
whoever consumes them continues the same trace.

Export is off by default (``OTEL_TRACES_EXPORTER=none``). Off, no span is created at all: a job
whose request carried a ``traceparent`` passes that context on unchanged (the caller's span stays the
parent of whatever reads our records), and a job without one carries none. The cost is parsing one
header. On (``console`` or ``otlp``, the OTLP/HTTP exporter configured by the standard
``OTEL_EXPORTER_OTLP_*`` variables), spans are recorded and exported in batches off the job's
threads. The tracer provider is this module's own, never the process-global one, so tests can
install an in-memory exporter and remove it again.

Stages run on different threads, so the context travels with the job (``JobTrace``), never through
thread-locals.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger("processor.tracing")

TRACE_HEADERS = ("traceparent", "tracestate")
Exporter = Literal["none", "console", "otlp"]
# Kafka headers as librdkafka hands them over (a list of pairs; a dict where a client built one).
Headers = Sequence[tuple[str, bytes | str | None]] | Mapping[str, bytes | str | None] | None

_PROPAGATOR = TraceContextTextMapPropagator()
_lock = threading.Lock()
_provider: TracerProvider | None = None
_tracer: trace.Tracer | None = None


# ----------------------------------------------------------------------------------- configuration


def configure(exporter: Exporter = "none", *, service_name: str = "tts-processor", worker_id: str | None = None,
              span_exporter: SpanExporter | None = None) -> None:
    """Install the exporter (``span_exporter`` wins: tests pass an ``InMemorySpanExporter``, exported
    synchronously). ``none`` without ``span_exporter`` turns recording off. Replaces an earlier setup."""
    global _provider, _tracer
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    shutdown()
    if span_exporter is None and exporter == "none":
        return
    attrs: dict[str, str] = {"service.name": service_name}
    if worker_id:
        attrs["service.instance.id"] = worker_id
    provider = TracerProvider(resource=Resource.create(attrs))
    if span_exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    elif exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif exporter == "otlp":
        # Endpoint, headers (which may hold a token) and timeouts come from OTEL_EXPORTER_OTLP_*, read
        # by the exporter itself; nothing of them passes through our settings or logs.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        raise ValueError(f"unknown trace exporter {exporter!r}")
    with _lock:
        _provider, _tracer = provider, provider.get_tracer("processor")
    log.info("tracing on: exporter=%s service=%s", "in-process" if span_exporter else exporter, service_name)


def shutdown() -> None:
    """Flush and stop the exporter (worker exit); recording is off afterwards."""
    global _provider, _tracer
    with _lock:
        provider, _provider, _tracer = _provider, None, None
    if provider is not None:
        provider.shutdown()


def recording() -> bool:
    return _tracer is not None


# ------------------------------------------------------------------------------------ propagation


def _carrier(headers: Headers) -> dict[str, str]:
    out: dict[str, str] = {}
    pairs = headers.items() if isinstance(headers, Mapping) else headers or ()
    for key, value in pairs:
        k = key.lower()
        if k in TRACE_HEADERS and value is not None and k not in out:
            # Untrusted bytes: the propagator rejects anything that is not a valid header value.
            out[k] = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    return out


def extract(headers: Headers) -> Context | None:
    """The caller's context from ``traceparent``/``tracestate`` headers, or None (absent or invalid)."""
    carrier = _carrier(headers)
    if "traceparent" not in carrier:
        return None
    ctx = _PROPAGATOR.extract(carrier)
    return ctx if trace.get_current_span(ctx).get_span_context().is_valid else None


def trace_id(headers: Headers) -> str | None:
    """The 32-hex trace id named by the ``traceparent`` header, if valid."""
    ctx = extract(headers)
    return format(trace.get_current_span(ctx).get_span_context().trace_id, "032x") if ctx else None


def new_traceparent(sampled: bool = True) -> str:
    """A fresh root ``traceparent`` (random trace and span ids) for a client starting a trace."""
    trace_hex, span_hex = os.urandom(16).hex(), os.urandom(8).hex()
    return f"00-{trace_hex}-{span_hex}-{'01' if sampled else '00'}"


# ---------------------------------------------------------------------------------------- job spans


@dataclass
class JobTrace:
    """One job's place in its trace: the ``tts.request`` span (non-recording when export is off)."""

    span: Span
    context: Context
    _headers: list[tuple[str, bytes]] | None = field(default=None, repr=False)

    @property
    def trace_id(self) -> str:
        return format(self.span.get_span_context().trace_id, "032x")

    def headers(self) -> list[tuple[str, bytes]]:
        """``traceparent``/``tracestate`` for the job's outgoing records (formatted once per job: every
        progress event carries them)."""
        if self._headers is None:
            carrier: dict[str, str] = {}
            _PROPAGATOR.inject(carrier, context=self.context)
            self._headers = [(k, carrier[k].encode()) for k in TRACE_HEADERS if carrier.get(k)]
        return list(self._headers)


def start_job(headers: Headers, *, request_id: str | None = None, topic: str | None = None,
              partition: int | None = None, offset: int | None = None) -> JobTrace | None:
    """Begin a job's trace from its request's headers. None when there is nothing to trace: export
    off and no incoming context (every helper below accepts None and does nothing)."""
    parent = extract(headers)
    tracer = _tracer
    if tracer is None:
        if parent is None:
            return None
        return JobTrace(trace.get_current_span(parent), parent)
    attrs: dict[str, Any] = {"messaging.system": "kafka", "messaging.operation.type": "process"}
    for key, value in (("tts.request_id", request_id), ("messaging.destination.name", topic),
                       ("messaging.destination.partition.id", None if partition is None else str(partition)),
                       ("messaging.kafka.offset", offset)):
        if value is not None:
            attrs[key] = value
    span = tracer.start_span("tts.request", context=parent, kind=SpanKind.CONSUMER, attributes=attrs)
    return JobTrace(span, trace.set_span_in_context(span, parent or Context()))


_OFF: contextlib.nullcontext[None] = contextlib.nullcontext()


def stage(job: JobTrace | None, name: str, **attributes: Any) -> contextlib.AbstractContextManager[Span | None]:
    """A child span ``tts.<name>`` of the job for the duration of the block (records an exception).
    Off (or nothing to trace): one shared no-op context, no generator, no allocation."""
    tracer = _tracer
    if job is None or tracer is None or not job.span.is_recording():
        return _OFF
    attrs = {f"tts.{k}": v for k, v in attributes.items() if v is not None}
    return tracer.start_as_current_span(f"tts.{name}", context=job.context, attributes=attrs,
                                        record_exception=True, set_status_on_exception=True)


def outcome(span: Span | None, result: Any) -> None:
    """Mark a stage span failed when the stage ended its job with an error or dead letter (stages turn
    failures into outcomes instead of raising, so the span would not see an exception)."""
    status = getattr(result, "status", None)
    if span is not None and status is not None and status != "success":
        code = getattr(result, "error_code", "") or status
        span.set_attribute("tts.error_code", code)
        span.set_status(Status(StatusCode.ERROR, code))


def annotate(job: JobTrace | None, **attributes: Any) -> None:
    """Attributes on the job span (e.g. request_id once decoded, segment count)."""
    if job is not None and job.span.is_recording():
        job.span.set_attributes({f"tts.{k}": v for k, v in attributes.items() if v is not None})


def end_job(job: JobTrace | None, status: str, error_code: str | None = None) -> None:
    """Close the job span with the outcome (``success`` / ``error`` / ``dead_letter``)."""
    if job is None or not job.span.is_recording():
        return
    job.span.set_attribute("tts.status", status)
    if error_code:
        job.span.set_attribute("tts.error_code", error_code)
    if status != "success":
        job.span.set_status(Status(StatusCode.ERROR, error_code or status))
    job.span.end()


def with_trace(headers: list[tuple[str, bytes]] | None, job: JobTrace | None) -> list[tuple[str, bytes]]:
    """``headers`` plus the job's trace headers (replacing any trace headers already there)."""
    base = [(k, v) for k, v in headers or [] if k.lower() not in TRACE_HEADERS]
    return base + (job.headers() if job is not None else [])


def span_context_of(headers: Headers) -> SpanContext | None:
    """The span context a record's trace headers name (tests, console)."""
    ctx = extract(headers)
    return trace.get_current_span(ctx).get_span_context() if ctx else None
