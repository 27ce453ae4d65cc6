"""The per-request work, as plain steps that return an ``Outcome``:

    intake (decode, validate, expiry) → prepare (voice, emotion clip) → synthesize → finish (render, upload)

Each step catches everything that can go wrong with ONE request and turns it into an error outcome
with a stable code (``internal_error`` for what nobody foresaw), so a bad request can never take a
thread, and with it the worker, down. A step returns ``None`` when the job goes on to the next step,
or when the job was abandoned (its partition revoked, the worker draining): then there is no outcome
at all, and the next owner redoes the request.

The steps know nothing about threads, queues or Kafka; ``processor.pipeline.Processor`` runs them.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

import numpy as np
import numpy.typing as npt

from processor import deadletter, events, metrics, tracing
from processor.audio import EncodedAudio, SegmentTiming, Span, timeline, unavailable
from processor.capabilities import check_capabilities
from processor.config import Settings
from processor.engine.base import (
    Emotion,
    Engine,
    GenerationSettings,
    LocalAudio,
    ProgressCallback,
    Segment,
    SynthesisSpec,
    Synthesized,
)
from processor.errors import ErrorCode, TtsError
from processor.ledger import Entry
from processor.output import JobStream, SegmentStreamer, SubtitleFile, render_job, subtitle_location
from processor.references import ReferenceCache
from processor.request import OutputPolicy, S3Location, TtsRequest, outcome_id, parse_s3_uri, validate_request
from processor.session import Record
from processor.storage import Storage, content_addressed
from processor.voices import VoiceCatalog
from processor.wire import Codec, DecodeError, RegistryUnavailable

log = logging.getLogger(__name__)

Status = Literal["success", "error", "dead_letter"]
T = TypeVar("T")


@dataclass(frozen=True)
class Outcome:
    """What one request ends with: a result or a dead letter, ready to produce."""

    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    status: Status
    error_code: str = ""

    @property
    def metric_labels(self) -> tuple[str, str]:
        """``tts_requests_total`` labels: a dead letter counts as an error with code ``undecodable``."""
        if self.status == "dead_letter":
            return "error", "undecodable"
        return self.status, self.error_code


@dataclass(eq=False)
class Job(Entry):
    """A request in flight: its ledger entry plus what the steps learn about it."""

    key: bytes | None = None
    received: float = 0.0
    request: TtsRequest | None = None
    # Where the request may write, decided at intake (before any download or GPU time).
    output: S3Location | None = None
    # A dead letter whose original needs a claim check: built by ``prepare``, off the poll thread.
    pending_dead_letter: tuple[deadletter.Original, str] | None = None
    dead_letter_original: deadletter.Original | None = None
    fallback_used: bool = False  # its outcome was refused once and replaced by a stand-in
    # Its success result, built before the upload (``Stages.finish``): final only once stored.
    provisional: Outcome | None = None
    # An early transaction was opened for it (``Processor._begin_early``): never a second one, whatever
    # became of the first (rolled back, expired, or already committed by ``Session.commit_opened``).
    early_opened: bool = False
    attempts: int = 1
    voice: LocalAudio | None = None
    emotion_audio: LocalAudio | None = None
    # Its streamed pieces (stream_segments): rendered, stored and announced off the GPU thread.
    stream: JobStream | None = None
    started: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    # perf_counter timestamps of the job's life, for benchmarks and debugging.
    marks: dict[str, float] = field(default_factory=dict)
    # The request's trace (W3C headers in, OpenTelemetry spans): None when there is nothing to trace.
    trace: tracing.JobTrace | None = None

    @property
    def origin(self) -> events.Origin:
        return events.Origin(self.tp[0], self.tp[1], self.offset)

    @property
    def request_id(self) -> str:
        return outcome_id(self.request.request_id if self.request else None, f"{self.tp[0]}-{self.tp[1]}-{self.offset}")


class Abandoned(Exception):
    """The job was dropped (partition revoked, transaction aborted, worker draining): stop, no outcome."""


class Stages:
    """The steps, with the collaborators they need. Every public method is safe to call on any thread."""

    def __init__(self, settings: Settings, engine: Engine, storage: Storage, references: ReferenceCache,
                 voices: VoiceCatalog, codecs: dict[str, Codec], events_producer: Any, *,
                 clock: Callable[[], float]) -> None:
        self.s = settings
        self.worker_id = settings.worker.id
        self.engine = engine
        self.storage = storage
        self.references = references
        self.voices = voices
        self.codecs = codecs
        self.events_producer = events_producer
        self.clock = clock
        self.storage_error: tuple[float, str] | None = None  # the last transient storage failure, for health
        s3 = settings.s3
        self.output_policy = OutputPolicy.of(s3.bucket, s3.writable(), s3.output_prefix_list(), s3.reserved_prefixes())
        self.streamer = SegmentStreamer()

    # ------------------------------------------------------------------ the steps

    def intake(self, job: Job, record: Record) -> Outcome | None:
        """Decode and validate; bad input ends here with a dead letter or an error result."""
        t0 = time.perf_counter()
        job.trace = tracing.start_job(record.headers, topic=record.topic, partition=record.partition,
                                      offset=record.offset)
        try:
            # Timestamps as millis: one no datetime can hold is then invalid_request, not undecodable.
            fields = self.codecs["TtsRequest"].decode(record.value, raw_timestamps=True)
        except RegistryUnavailable:
            raise  # says nothing about the record: the processor retries it, never dead-letters it
        except Exception as exc:  # DecodeError, or anything a hostile record makes the decoder raise  # noqa: BLE001
            reason = str(exc) if isinstance(exc, DecodeError) else f"{type(exc).__name__}: {exc}"
            return self.dead_letter(job, record, reason)
        request_id = job.request_id
        try:
            # The id an outcome carries: the request's own when valid, else a short stand-in.
            request_id = outcome_id(fields.get("request_id"), f"{job.tp[0]}-{job.tp[1]}-{job.offset}")
            tracing.annotate(job.trace, request_id=request_id)
            job.request = validate_request(fields)
            check_capabilities(job.request, self.engine.info)
            job.output = self.output_policy.location(job.request)
            self.check_expiry(job.request)
            return None
        except Exception as exc:  # noqa: BLE001 (one request's failure, whatever it is, becomes its error outcome)
            return self.error(job, exc, request_id=request_id)
        finally:
            job.marks["decoded"] = time.perf_counter()
            job.stage_seconds["decode"] = job.marks["decoded"] - t0
            metrics.STAGE_SECONDS.labels("decode").observe(job.stage_seconds["decode"])

    def prepare(self, job: Job) -> Outcome | None:
        """Fetch the voice (and emotion) reference clips to local disk."""
        if job.pending_dead_letter is not None:
            return self.claim_checked_dead_letter(job)
        req = job.request
        assert req is not None
        job.started = self.clock()
        t0 = time.perf_counter()
        try:
            self.check_expiry(req)
            if (why := unavailable(req.output_spec)) is not None:  # refused before it costs GPU time
                raise TtsError(ErrorCode.UNSUPPORTED_FORMAT, why)
            job.voice = self.retrying(job, "download", lambda: self.resolve_voice(req))
            if req.emotion_reference is not None:
                loc = parse_s3_uri(req.emotion_reference)
                job.emotion_audio = self.retrying(job, "download", lambda: self.references.fetch(loc))
        except Abandoned:
            return None
        except Exception as exc:  # noqa: BLE001 (one request's failure, whatever it is, becomes its error outcome)
            return self.error(job, exc)
        self._prepared(job, t0)
        return None

    def prepare_cached(self, job: Job) -> bool:
        """``prepare`` when it needs no storage call: every clip the request names was checked lately
        (``ReferenceCache.recent``; a preset from a fresh listing). True when the job is ready for the
        GPU; False (nothing done) leaves it to ``prepare``, which also turns any problem into the
        request's error outcome. Cheap enough for the poll thread: a few dict lookups and a stat."""
        req = job.request
        if job.pending_dead_letter is not None or req is None or unavailable(req.output_spec) is not None:
            return False
        try:
            self.check_expiry(req)
            voice = self._recent(req.voice_location, preset=req.voice)
            emotion = None
            if req.emotion_reference is not None:
                emotion = self._recent(parse_s3_uri(req.emotion_reference))
                if emotion is None:
                    return False
        except TtsError:
            return False
        if voice is None:
            return False
        t0 = time.perf_counter()
        job.started = self.clock()
        job.voice, job.emotion_audio = voice, emotion
        self._prepared(job, t0)
        return True

    def _recent(self, loc: S3Location | None, *, preset: str = "") -> LocalAudio | None:
        if loc is None:
            found = self.voices.cached(preset)
            return None if found is None else self.references.recent(found.reference)
        return self.references.recent(loc) if loc.bucket in self.s.s3.allowed() else None

    @staticmethod
    def _prepared(job: Job, t0: float) -> None:
        job.marks["prepared"] = time.perf_counter()
        job.stage_seconds["download"] = job.marks["prepared"] - t0
        metrics.STAGE_SECONDS.labels("download").observe(job.stage_seconds["download"])

    def synthesize(self, job: Job) -> Synthesized | Outcome | None:
        req = job.request
        assert req is not None and job.voice is not None
        t0 = job.marks["engine_start"] = time.perf_counter()
        try:
            self.check_expiry(req)
            job.stream = self.open_stream(job, t0) if req.stream_segments else None
            result = self.engine.synthesize(self.spec(job), self.progress_callback(job, t0))
        except Abandoned:
            return None
        except Exception as exc:  # an engine bug must not take the worker down or pass as success
            if not isinstance(exc, TtsError):
                log.exception("engine failed on %s", req.request_id)
                exc = TtsError(ErrorCode.ENGINE_ERROR, f"{type(exc).__name__}: {exc}")
            return self.error(job, exc, model=True)
        job.marks["engine_end"] = time.perf_counter()
        job.stage_seconds["synthesis"] = job.marks["engine_end"] - t0
        metrics.STAGE_SECONDS.labels("synthesis").observe(job.stage_seconds["synthesis"])
        return result

    def finish(self, job: Job, synth: Synthesized, built: Callable[[Outcome], None] | None = None
               ) -> Outcome | None:
        """Render the audio as asked (rate, loudness, format), store it and its subtitles; the success
        result names them, with every segment's timing in the stored audio.

        The result is built before the uploads (every key is content-addressed, so known once encoded)
        and handed to ``built``: the poll loop may produce it into a transaction while the audio
        uploads, to commit at once when it is stored. If the upload fails, the error outcome returned
        instead is another object, and that transaction is rolled back unseen (``Session.begin``)."""
        req = job.request
        assert req is not None
        t0 = job.marks["finish_start"] = time.perf_counter()
        try:
            if job.stream is not None:
                self.close_stream(job, job.stream)
            # Resampling, loudness and encoding happen here, on the finish thread: never on the GPU's.
            rendered = render_job(req, synth.pcm, synth.sample_rate, synth.spans)
            audio = rendered.audio
            job.stage_seconds["encode"] = time.perf_counter() - t0
            # Where it may go was decided at intake (OutputPolicy), before any download or GPU time.
            base = job.output or self.output_policy.location(req)
            loc = content_addressed(base, audio.sha256)
            subtitles = [(self.subtitle_file(base, f), f) for f in rendered.subtitles]
            synthesis = job.stage_seconds.get("synthesis", 0.0)
            record = events.success_result(
                req, job.origin, worker_id=self.worker_id, location=loc, audio=audio, segments=synth.segments,
                processing_seconds=self.clock() - job.started, synthesis_seconds=synthesis,
                model=self.engine.info, voice_sha256=job.voice.sha256 if job.voice else None,
                attempts=job.attempts, engine_rate=synth.sample_rate, timing=rendered.timing,
                subtitles=[stored for stored, _ in subtitles],
            )
            outcome = self.result(req.request_id, record, "success", trace=job.trace)
            if built is not None:
                built(outcome)
            t1 = time.perf_counter()
            self.retrying(job, "upload", lambda: self.upload(job, loc, audio.data, audio.sha256, audio.content_type))
            for stored, f in subtitles:
                self.retrying(job, "upload", functools.partial(self.upload, job, stored.location, f.data,
                                                               stored.sha256, f.content_type))
            job.marks["uploaded"] = time.perf_counter()
            job.stage_seconds["upload"] = job.marks["uploaded"] - t1
            for stage in ("encode", "upload"):
                metrics.STAGE_SECONDS.labels(stage).observe(job.stage_seconds[stage])
            metrics.SYNTHESIS_SECONDS.observe(synthesis)
            metrics.AUDIO_SECONDS.inc(audio.duration_seconds)
            if audio.duration_seconds > 0:
                metrics.REAL_TIME_FACTOR.observe(synthesis / audio.duration_seconds)
            return outcome
        except Abandoned:
            return None
        except Exception as exc:  # noqa: BLE001 (one request's failure, whatever it is, becomes its error outcome)
            return self.error(job, exc, model=True)

    # ------------------------------------------------------------------ outcomes

    def result(self, request_id: str, record: dict[str, Any], status: Literal["success", "error"],
               error_code: str = "", trace: tracing.JobTrace | None = None) -> Outcome:
        value = self.codecs["TtsResult"].encode(record)
        return Outcome(self.s.kafka.result_topic, request_id.encode(), value, tracing.with_trace([], trace), status,
                       error_code)

    def error(self, job: Job, exc: Exception, *, request_id: str | None = None, model: bool = False) -> Outcome:
        if not isinstance(exc, TtsError):
            log.exception("unexpected failure on %s", job.request_id, exc_info=exc)
            exc = TtsError(ErrorCode.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")
        rid = request_id or job.request_id
        record = events.error_result(
            rid, job.origin, exc, worker_id=self.worker_id, req=job.request,
            processing_seconds=(self.clock() - job.started) if job.started else 0.0,
            model=self.engine.info if model else None, attempts=job.attempts,
        )
        return self.result(rid, record, "error", exc.code.value, trace=job.trace)

    def dead_letter(self, job: Job, record: Record, reason: str) -> Outcome | None:
        """The dead letter of an undecodable record; None when its original needs a claim check first
        (then ``prepare`` builds it, so that the upload never holds the poll thread)."""
        original = deadletter.Original(job.origin, record.key, record.value, record.headers, record.headers_problem)
        if original.size + deadletter.FRAMING_BYTES > self.s.kafka.max_message_bytes:
            job.pending_dead_letter = (original, reason)
            return None
        return self._dead_letter(job, original, reason, max_bytes=self.s.kafka.max_message_bytes)

    def claim_checked_dead_letter(self, job: Job) -> Outcome | None:
        assert job.pending_dead_letter is not None
        original, reason = job.pending_dead_letter
        try:
            return self._dead_letter(job, original, reason, max_bytes=self.s.kafka.max_message_bytes)
        except Abandoned:
            return None
        except TtsError as exc:
            # The original cannot be stored: it is lost, but its place in the stream is kept and the
            # dead letter says why (an error result cannot stand in: the record is not a request).
            log.error("claim check for %s failed: %s", job.origin, exc)
            return self._dead_letter(job, deadletter.Original(job.origin, None, None, []),
                                     f"{reason}; its original ({original.size} bytes) could not be stored: {exc}",
                                     max_bytes=self.s.kafka.max_message_bytes)

    def _dead_letter(self, job: Job, original: deadletter.Original, reason: str, *, max_bytes: int) -> Outcome:
        s3 = self.s.s3

        def put(loc: S3Location, data: bytes) -> None:
            self.retrying(job, "claim_check", lambda: self.storage.put(
                loc.bucket, loc.key, data, content_type="application/vnd.apache.avro+binary",
                metadata={"sha256": hashlib.sha256(data).hexdigest(), "worker-id": self.worker_id}))

        dl = deadletter.build(original, "undecodable", reason, worker_id=self.worker_id,
                              codec=self.codecs["DeadLetter"], max_bytes=max_bytes, bucket=s3.bucket,
                              prefix=s3.dead_letter_prefix, put=put)
        job.dead_letter_original = original
        return Outcome(self.s.kafka.dlq_topic, dl.key, dl.value, tracing.with_trace(dl.headers, job.trace),
                       "dead_letter")

    def fallback(self, job: Job, refused: Outcome, why: str) -> Outcome:
        """What stands in for an outcome the broker refused for good (too large for its topic): a small
        error result, or a dead letter whose original goes by claim check. Runs on the poll thread; the
        claim check there is bounded by the storage call budget, and it is only needed when the DLQ
        topic takes less than KAFKA_MAX_MESSAGE_BYTES."""
        log.error("outcome for %s refused by the broker (%s); replacing it", job.origin, why)
        if refused.status == "dead_letter" and job.dead_letter_original is not None:
            try:
                return self._dead_letter(job, job.dead_letter_original, f"original dead letter refused: {why}",
                                         max_bytes=0)  # 0: always by claim check, the smallest form
            except (TtsError, Abandoned) as exc:
                log.error("claim check for %s failed: %s", job.origin, exc)
                return self._dead_letter(job, deadletter.Original(job.origin, None, None, []),
                                         f"dead letter refused ({why}) and its original could not be stored",
                                         max_bytes=0)
        rid = job.request_id
        record = events.error_result(rid, job.origin, TtsError(
            ErrorCode.OUTCOME_TOO_LARGE, f"the {refused.status} result ({len(refused.value)} bytes) was refused by "
            f"the result topic: {why}"), worker_id=self.worker_id, attempts=job.attempts)
        return self.result(rid, record, "error", ErrorCode.OUTCOME_TOO_LARGE.value, trace=job.trace)

    # ------------------------------------------------------------------ helpers

    def check_expiry(self, req: TtsRequest) -> None:
        now = datetime.now(UTC)
        if req.deadline is not None and now > req.deadline:
            raise TtsError(ErrorCode.EXPIRED, f"deadline {req.deadline.isoformat()} passed before synthesis")
        max_age = self.s.worker.max_request_age_seconds
        if max_age is not None and req.created_at is not None:
            age = (now - req.created_at).total_seconds()
            if age > max_age:
                raise TtsError(ErrorCode.EXPIRED, f"request is {age:.0f}s old; the limit is {max_age:.0f}s")

    def resolve_voice(self, req: TtsRequest) -> LocalAudio:
        loc = req.voice_location
        if loc is None:
            preset = self.voices.resolve(req.voice)
            return self.references.fetch(preset.reference, check_bucket=False)
        return self.references.fetch(loc)

    @staticmethod
    def subtitle_file(base: S3Location, f: SubtitleFile) -> events.StoredFile:
        """Where a subtitle file goes (content-addressed, like the audio)."""
        sha256 = hashlib.sha256(f.data).hexdigest()
        return events.StoredFile(f.format, subtitle_location(base, f.format, sha256), sha256, len(f.data))

    def upload(self, job: Job, loc: S3Location, data: bytes, sha256: str, content_type: str) -> None:
        if job.state == "dropped":
            raise Abandoned  # a revoked job need not store what its next owner stores anyway
        self.storage.put(loc.bucket, loc.key, data, content_type=content_type,
                         metadata={"sha256": sha256, "worker-id": self.worker_id})

    def spec(self, job: Job) -> SynthesisSpec:
        req = job.request
        assert req is not None and job.voice is not None
        mode = req.emotion_mode
        emotion = Emotion(
            mode=mode, alpha=req.emotion_alpha, audio=job.emotion_audio,
            vector=req.emotion_vector, text=req.emotion_text if mode == "text" else None,
        )
        gen = GenerationSettings(
            top_p=req.top_p, top_k=req.top_k, temperature=req.temperature, num_beams=req.num_beams,
            repetition_penalty=req.repetition_penalty, max_mel_tokens=req.max_mel_tokens,
        )
        return SynthesisSpec(
            request_id=req.request_id, text=req.text, voice=job.voice, emotion=emotion, use_random=req.use_random,
            max_text_tokens_per_segment=req.max_text_tokens_per_segment,
            interval_silence_ms=req.interval_silence_ms, generation=gen, seed=req.seed,
            speed=req.speed, language=req.language,
        )

    def progress_callback(self, job: Job, t0: float) -> ProgressCallback:
        req = job.request
        assert req is not None
        rate = self.engine.info.sample_rate
        out_rate = req.output_spec.rate_for(rate) if rate else 0

        def on_progress(span: Segment, chunk: npt.NDArray[np.int16]) -> None:
            elapsed = time.perf_counter() - t0
            if job.state == "dropped":
                raise Abandoned
            if elapsed > self.s.worker.job_timeout_seconds:
                raise TtsError(ErrorCode.TIMEOUT, f"synthesis exceeded {self.s.worker.job_timeout_seconds:.0f}s "
                               f"after segment {span.index} of {span.count}")
            if job.stream is not None:
                job.stream.add(span, chunk)  # only queued: the segment thread renders, stores and announces it
                return
            [timing] = timeline([span], rate, out_rate) if rate else [None]
            self.announce(job, span, elapsed, timing, None)

        return on_progress

    def announce(self, job: Job, span: Segment, elapsed: float, timing: SegmentTiming | None,
                 piece: events.SegmentPiece | None) -> None:
        """One progress event: the finished segment, its text and timing, and its stored piece if any."""
        req = job.request
        assert req is not None
        value = self.codecs["TtsProgress"].encode(
            events.progress_event(req.request_id, span.index, span.count, self.worker_id, elapsed, timing, piece))
        try:
            self.events_producer.produce(self.s.kafka.progress_topic, value, req.request_id.encode(),
                                         headers=tracing.with_trace([], job.trace))
            self.events_producer.poll(0)
        except BufferError:
            log.warning("progress event dropped: local queue full")

    def open_stream(self, job: Job, t0: float) -> JobStream | None:
        """Listen while it renders: each finished segment goes to storage and the progress topic."""
        req = job.request
        assert req is not None
        rate = self.engine.info.sample_rate
        if not rate:
            log.warning("%s asked for stream_segments but the engine does not say its sample rate", req.request_id)
            return None
        base = job.output or self.output_policy.location(req)

        def store(loc: S3Location, audio: EncodedAudio) -> None:
            self.retrying(job, "upload", lambda: self.upload(job, loc, audio.data, audio.sha256, audio.content_type))

        def announce(span: Span, timing: SegmentTiming, piece: events.SegmentPiece | None) -> None:
            assert isinstance(span, Segment)
            self.announce(job, span, time.perf_counter() - t0, timing, piece)

        return self.streamer.open(req, base, rate, store, announce)

    def close_stream(self, job: Job, stream: JobStream) -> None:
        """Every piece is stored and its event delivered before the result can commit."""
        if not stream.wait(self.s.worker.job_timeout_seconds):
            log.warning("%s: streamed segments still pending; the result goes out without waiting", job.request_id)
        if stream.failed is not None:
            log.warning("%s: streamed segments stopped: %s", job.request_id, stream.failed)
        left = self.events_producer.flush(10)
        if left:
            log.warning("%s: %d progress event(s) not yet delivered before the result", job.request_id, left)

    def retrying(self, job: Job, stage: str, op: Callable[[], T]) -> T:
        """Capped exponential backoff with equal jitter for transient errors; permanent ones pass through."""
        w = self.s.worker
        while True:
            try:
                return op()
            except TtsError as exc:
                if not exc.retriable or job.attempts >= w.max_attempts:
                    raise
                if exc.code == ErrorCode.STORAGE_ERROR:
                    self.storage_error = (self.clock(), exc.message)
                # "Equal jitter": spread retries out, but keep a floor so the total wait stays predictable.
                cap = min(w.retry_max_seconds, w.retry_base_seconds * 2 ** (job.attempts - 1))
                delay = cap / 2 + random.uniform(0, cap / 2)  # noqa: S311 (retry jitter, not a secret)
                job.attempts += 1
                metrics.RETRIES.labels(stage).inc()
                log.warning("%s of %s failed (%s); attempt %d in %.1fs", stage, job.request_id, exc,
                            job.attempts, delay)
                deadline = time.monotonic() + delay
                while time.monotonic() < deadline:
                    if job.state == "dropped":
                        raise Abandoned from None
                    time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
