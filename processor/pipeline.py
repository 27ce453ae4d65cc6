"""The processor: one Kafka group member driving one GPU.

    request ─▶ decode/validate ─▶ prepare (download refs) ─▶ synthesize ─▶ finish (WAV, upload) ─▶ emit

Threads and who owns what:
- the poll thread (``run``) owns every Kafka call that matters for correctness: poll, rebalance
  callbacks, pause/resume, and the transaction that emits results and commits offsets. Because it
  never waits on the GPU, ``max.poll.interval.ms`` cannot expire however long a job takes.
- three stage threads (prepare, GPU, finish) overlap storage I/O with synthesis, so the GPU does not
  wait on S3 or Kafka while work is queued. They hand finished jobs back through ``_done``.

The checkpoint order (see ``_commit``): the WAV is uploaded first (deterministic key), then ONE
transaction produces the result/dead-letter events and sends the consumed offsets. Outcomes are
committed per partition in offset order, so a fast error result never commits past a request that
is still on the GPU.

The partition is the GPU lock: each job remembers the assignment epoch of its partition; revocation
bumps the epoch, and a stale job is dropped before upload and never committed. The broker fences a
zombie's ``send_offsets_to_transaction`` with the group generation as a second line of defence.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from processor import events, metrics
from processor.audio import SegmentTiming, render, unavailable
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
from processor.references import ReferenceCache
from processor.request import TtsRequest, validate_request
from processor.storage import Storage, content_addressed
from processor.voices import VoiceCatalog
from processor.wire import Codec, DecodeError

log = logging.getLogger(__name__)

TP = tuple[str, int]
# pause() drops what librdkafka already fetched and a resumed partition is re-fetched only on the
# broker thread's next idle tick (up to ~1 s, measured in benchmarks/pipeline_overhead.py): keep at
# least this much GPU work taken so short jobs never starve across a pause/resume.
RESUME_LATENCY_SECONDS = 1.2
State = Literal["queued", "preparing", "synthesizing", "finishing", "done", "dropped"]


class FatalKafkaError(RuntimeError):
    """The producer was fenced or hit a fatal error: exit so the orchestrator restarts us."""


class _Abandoned(Exception):
    """The job's partition was revoked (or the worker is draining): stop without an outcome."""


@dataclass(frozen=True)
class Outcome:
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    status: Literal["success", "error", "dead_letter"]
    error_code: str = ""


@dataclass(eq=False)
class Job:
    origin: events.Origin
    key: bytes | None
    epoch: int
    received: float
    request: TtsRequest | None = None
    state: State = "queued"
    outcome: Outcome | None = None
    attempts: int = 1
    voice: LocalAudio | None = None
    emotion_audio: LocalAudio | None = None
    started: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    # perf_counter timestamps of the job's life, for benchmarks and debugging.
    marks: dict[str, float] = field(default_factory=dict)

    @property
    def tp(self) -> TP:
        return (self.origin.topic, self.origin.partition)


@dataclass
class Counters:
    done: int = 0
    failed: int = 0
    dead_lettered: int = 0


class Processor:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        storage: Storage,
        consumer: Consumer,
        txn_producer: Producer,
        events_producer: Producer,
        codecs: dict[str, Codec],
        *,
        clock: Callable[[], float] = time.monotonic,
        on_commit: Callable[[list[Job]], None] | None = None,
    ) -> None:
        self.s = settings
        self.worker_id = settings.worker.id
        self.engine = engine
        self.storage = storage
        self.references = ReferenceCache(storage, settings.s3)
        self.voices = VoiceCatalog(storage, settings.s3.bucket, settings.s3.voices_prefix)
        self.consumer = consumer
        self.txn = txn_producer
        self.events_producer = events_producer
        self.codecs = codecs
        self.clock = clock
        self.on_commit = on_commit

        # Owned by the poll thread.
        self.epochs: dict[TP, int] = {}
        self._epoch_seq = itertools.count(1)  # global, so a re-assigned partition never reuses an epoch
        self.pending: dict[TP, deque[Job]] = {}
        self.next_offset: dict[TP, int] = {}
        self.committed: dict[TP, int] = {}
        self.paused: set[TP] = set()
        self.last_message: dict[TP, float] = {}
        self.counters = Counters()
        self.assignment_changed = threading.Event()
        self.last_tick = clock()
        self.joined = False
        self.storage_error: tuple[float, str] | None = None
        self.broker_error: tuple[float, str] | None = None

        self._prepare_q: queue.Queue[Job | None] = queue.Queue()
        self._gpu_q: queue.Queue[Job | None] = queue.Queue(maxsize=1)
        self._finish_q: queue.Queue[tuple[Job, Synthesized] | None] = queue.Queue(maxsize=1)
        self._done: queue.Queue[Job] = queue.Queue()
        self._stop = threading.Event()
        self._draining = False
        self._threads: list[threading.Thread] = []
        self.current: Job | None = None  # the job on the GPU, for health and watchdog
        self.engine_seconds_ewma: float | None = None  # written by the GPU thread, read by the poll thread

    # ------------------------------------------------------------------ lifecycle

    def request_stop(self) -> None:
        self._stop.set()

    def run(self, *, on_tick: Callable[[], None] | None = None) -> None:
        """Serve until ``request_stop``; then drain within the grace period and leave the group."""
        self.txn.init_transactions(30)
        for name, target in (("prepare", self._prepare_loop), ("gpu", self._gpu_loop),
                             ("finish", self._finish_loop)):
            t = threading.Thread(target=target, name=f"tts-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        self.consumer.subscribe(
            [self.s.kafka.request_topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        grace_deadline: float | None = None
        while True:
            if self._stop.is_set() and grace_deadline is None:
                grace_deadline = self.clock() + self.s.worker.shutdown_grace_seconds
                self._start_drain()
            if grace_deadline is not None and (not self._busy() or self.clock() >= grace_deadline):
                break
            busy = self._busy()
            msg = self.consumer.poll(0.02 if busy else 0.2)
            self.last_tick = self.clock()
            if msg is not None:
                self._on_message(msg)
            self._collect_done()
            self._commit_ready(force=not self._busy() or grace_deadline is not None)
            self._flow_control()
            if on_tick is not None:
                on_tick()
        self._shutdown()

    def _start_drain(self) -> None:
        log.info("draining: taking no new work, finishing the current job")
        self._draining = True
        for tp, jobs in self.pending.items():
            for job in list(jobs):
                if job.state in ("queued", "preparing"):  # not on the GPU yet: the next owner takes it
                    job.state = "dropped"
            self.pending[tp] = deque(j for j in jobs if j.state != "dropped")

    def _shutdown(self) -> None:
        self._collect_done()
        self._commit_ready(force=True)
        for tp in list(self.epochs):  # anything still running is abandoned, never committed
            self.epochs[tp] = next(self._epoch_seq)
        for q in (self._prepare_q,):
            q.put(None)
        self.consumer.close()  # leaves the group; on_revoke commits nothing new (all committed)
        self.events_producer.flush(5)
        log.info("stopped: done=%d failed=%d dead_lettered=%d", self.counters.done, self.counters.failed,
                 self.counters.dead_lettered)

    # ------------------------------------------------------------------ intake (poll thread)

    def _on_message(self, msg: Message) -> None:
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error: %s", err)
            return
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        assert topic is not None and partition is not None and offset is not None
        tp = (topic, partition)
        if tp not in self.epochs or self._draining:
            return  # not ours any more, or draining: left uncommitted for the next owner
        if offset < self.next_offset.get(tp, -1):
            return  # already taken; a re-delivery after pause/resume
        self.next_offset[tp] = offset + 1
        self.last_message[tp] = self.clock()
        origin = events.Origin(topic, partition, offset)
        job = Job(origin=origin, key=msg.key(), epoch=self.epochs[tp], received=self.clock())
        job.marks["polled"] = time.perf_counter()
        self.pending.setdefault(tp, deque()).append(job)

        t0 = time.perf_counter()
        try:
            record = self.codecs["TtsRequest"].decode(msg.value())
        except DecodeError as exc:
            self._finish_dead_letter(job, msg, str(exc))
            return
        request_id = str(record.get("request_id") or f"unidentified-{topic}-{partition}-{offset}")
        try:
            job.request = validate_request(record)
            self._check_expiry(job.request)
        except TtsError as exc:
            self._finish_error(job, request_id, exc)
            return
        finally:
            job.marks["decoded"] = time.perf_counter()
            job.stage_seconds["decode"] = job.marks["decoded"] - t0
            metrics.STAGE_SECONDS.labels("decode").observe(job.stage_seconds["decode"])
        self._prepare_q.put(job)

    def _check_expiry(self, req: TtsRequest) -> None:
        now = datetime.now(UTC)
        if req.deadline is not None and now > req.deadline:
            raise TtsError(ErrorCode.EXPIRED, f"deadline {req.deadline.isoformat()} passed before synthesis")
        max_age = self.s.worker.max_request_age_seconds
        if max_age is not None and req.created_at is not None:
            age = (now - req.created_at).total_seconds()
            if age > max_age:
                raise TtsError(ErrorCode.EXPIRED, f"request is {age:.0f}s old; the limit is {max_age:.0f}s")

    # ------------------------------------------------------------------ stage threads

    def _prepare_loop(self) -> None:
        while (job := self._prepare_q.get()) is not None:
            if not self._current(job):
                continue
            job.state = "preparing"
            job.started = self.clock()
            req = job.request
            assert req is not None
            t0 = time.perf_counter()
            try:
                self._check_expiry(req)
                job.voice = self._retrying(job, "download", partial(self._resolve_voice, req))
                if req.emotion_reference is not None:
                    loc = self._emotion_location(req)
                    job.emotion_audio = self._retrying(job, "download", partial(self.references.fetch, loc))
            except TtsError as exc:
                self._finish_error(job, req.request_id, exc)
                continue
            except _Abandoned:
                continue
            job.marks["prepared"] = time.perf_counter()
            job.stage_seconds["download"] = job.marks["prepared"] - t0
            metrics.STAGE_SECONDS.labels("download").observe(job.stage_seconds["download"])
            self._gpu_q.put(job)

    def _gpu_loop(self) -> None:
        while (job := self._gpu_q.get()) is not None:
            if not self._current(job):
                continue
            req = job.request
            assert req is not None and job.voice is not None
            job.state = "synthesizing"
            self.current = job
            t0 = job.marks["engine_start"] = time.perf_counter()
            try:
                self._check_expiry(req)
                result = self.engine.synthesize(self._spec(job), self._progress_callback(job, t0))
            except _Abandoned:
                continue
            except TtsError as exc:
                self._finish_error(job, req.request_id, exc)
                continue
            except Exception as exc:  # an engine bug must not take the worker down or pass as success
                log.exception("engine failed on %s", req.request_id)
                failure = TtsError(ErrorCode.ENGINE_ERROR, f"{type(exc).__name__}: {exc}")
                self._finish_error(job, req.request_id, failure)
                continue
            finally:
                self.current = None
            job.marks["engine_end"] = time.perf_counter()
            took = job.stage_seconds["synthesis"] = job.marks["engine_end"] - t0
            avg = self.engine_seconds_ewma
            self.engine_seconds_ewma = took if avg is None else 0.8 * avg + 0.2 * took
            metrics.STAGE_SECONDS.labels("synthesis").observe(job.stage_seconds["synthesis"])
            self._finish_q.put((job, result))

    def _finish_loop(self) -> None:
        while (item := self._finish_q.get()) is not None:
            job, synth = item
            req = job.request
            assert req is not None
            job.state = "finishing"
            t0 = job.marks["finish_start"] = time.perf_counter()
            try:
                if (why := unavailable(req.output_spec)) is not None:
                    raise TtsError(ErrorCode.UNSUPPORTED_FORMAT, why)
                audio = render(synth.pcm, synth.sample_rate, req.output_spec)
                job.stage_seconds["encode"] = time.perf_counter() - t0
                loc = req.output_location(self.s.s3.bucket)
                if loc.bucket not in self.s.s3.allowed():
                    raise TtsError(ErrorCode.BUCKET_NOT_ALLOWED, f"output bucket '{loc.bucket}' is not allowed")
                loc = content_addressed(loc, audio.sha256)
                t1 = time.perf_counter()
                upload = partial(self._upload, job, loc.bucket, loc.key, audio.data, audio.sha256,
                                 audio.content_type)
                self._retrying(job, "upload", upload)
                job.marks["uploaded"] = time.perf_counter()
                job.stage_seconds["upload"] = job.marks["uploaded"] - t1
            except _Abandoned:
                continue
            except TtsError as exc:
                self._finish_error(job, req.request_id, exc)
                continue
            for stage in ("encode", "upload"):
                metrics.STAGE_SECONDS.labels(stage).observe(job.stage_seconds[stage])
            synthesis = job.stage_seconds.get("synthesis", 0.0)
            metrics.SYNTHESIS_SECONDS.observe(synthesis)
            metrics.AUDIO_SECONDS.inc(audio.duration_seconds)
            if audio.duration_seconds > 0:
                metrics.REAL_TIME_FACTOR.observe(synthesis / audio.duration_seconds)
            record = events.success_result(
                req, job.origin, worker_id=self.worker_id, location=loc, audio=audio, segments=synth.segments,
                processing_seconds=self.clock() - job.started, synthesis_seconds=synthesis,
                model=self.engine.info, voice_sha256=job.voice.sha256 if job.voice else None,
                attempts=job.attempts, engine_rate=synth.sample_rate,
            )
            self._complete(job, self._result_outcome(req.request_id, record, "success"))

    def _upload(self, job: Job, bucket: str, key: str, data: bytes, sha256: str, content_type: str) -> None:
        if not self._current(job):
            raise _Abandoned  # a revoked job must not overwrite what the new owner writes
        self.storage.put(bucket, key, data, content_type=content_type,
                         metadata={"sha256": sha256, "worker-id": self.worker_id})

    def _resolve_voice(self, req: TtsRequest) -> LocalAudio:
        loc = req.voice_location
        if loc is None:
            preset = self.voices.resolve(req.voice)
            return self.references.fetch(preset.reference, check_bucket=False)
        return self.references.fetch(loc)

    @staticmethod
    def _emotion_location(req: TtsRequest) -> Any:
        from processor.request import parse_s3_uri

        assert req.emotion_reference is not None
        return parse_s3_uri(req.emotion_reference)

    def _spec(self, job: Job) -> SynthesisSpec:
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
        )

    def _progress_callback(self, job: Job, t0: float) -> ProgressCallback:
        req = job.request
        assert req is not None
        rate = self.engine.info.sample_rate

        def on_progress(span: Segment, _chunk: npt.NDArray[np.int16]) -> None:
            segment, segments = span.index, span.count
            elapsed = time.perf_counter() - t0
            if not self._current(job):
                raise _Abandoned
            if elapsed > self.s.worker.job_timeout_seconds:
                raise TtsError(ErrorCode.TIMEOUT, f"synthesis exceeded {self.s.worker.job_timeout_seconds:.0f}s "
                               f"after segment {segment} of {segments}")
            timing = SegmentTiming(span.index, span.text[:2000], span.start_sample / rate, span.end_sample / rate) \
                if rate else None
            value = self.codecs["TtsProgress"].encode(
                events.progress_event(req.request_id, segment, segments, self.worker_id, elapsed, timing))
            try:
                self.events_producer.produce(self.s.kafka.progress_topic, value, req.request_id.encode())
                self.events_producer.poll(0)
            except BufferError:
                log.warning("progress event dropped: local queue full")

        return on_progress

    def _retrying(self, job: Job, stage: str, op: Callable[[], Any]) -> Any:
        """Capped exponential backoff with full jitter for transient errors; permanent ones pass through."""
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
                delay = cap / 2 + random.uniform(0, cap / 2)
                job.attempts += 1
                metrics.RETRIES.labels(stage).inc()
                log.warning("%s of %s failed (%s); attempt %d in %.1fs", stage,
                            job.request.request_id if job.request else "?", exc, job.attempts, delay)
                deadline = time.monotonic() + delay
                while time.monotonic() < deadline:
                    if not self._current(job):
                        raise _Abandoned from None
                    time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))

    def _current(self, job: Job) -> bool:
        return job.state != "dropped" and self.epochs.get(job.tp) == job.epoch

    # ------------------------------------------------------------------ outcomes

    def _result_outcome(self, request_id: str, record: dict[str, Any], status: Literal["success", "error"],
                        error_code: str = "") -> Outcome:
        value = self.codecs["TtsResult"].encode(record)
        return Outcome(self.s.kafka.result_topic, request_id.encode(), value, [], status, error_code)

    def _finish_error(self, job: Job, request_id: str, exc: TtsError) -> None:
        record = events.error_result(
            request_id, job.origin, exc, worker_id=self.worker_id, req=job.request,
            processing_seconds=(self.clock() - job.started) if job.started else 0.0,
            model=self.engine.info if job.state in ("synthesizing", "finishing") else None, attempts=job.attempts,
        )
        self._complete(job, self._result_outcome(request_id, record, "error", exc.code.value))

    def _finish_dead_letter(self, job: Job, msg: Message, reason: str) -> None:
        headers: list[tuple[str, bytes]] = []
        for item in msg.headers() or []:
            raw = item[1]
            headers.append((str(item[0]), raw.encode() if isinstance(raw, str) else (raw or b"")))
        record = events.dead_letter(job.origin, msg.key(), msg.value(), headers, "undecodable", reason,
                                    self.worker_id)
        dlq_headers = [
            ("dlq.source.topic", job.origin.topic.encode()),
            ("dlq.source.partition", str(job.origin.partition).encode()),
            ("dlq.source.offset", str(job.origin.offset).encode()),
            ("dlq.reason", b"undecodable"),
            ("dlq.error", reason.encode()[:1000]),
            ("dlq.worker", self.worker_id.encode()),
        ]
        value = self.codecs["DeadLetter"].encode(record)
        self._complete(job, Outcome(self.s.kafka.dlq_topic, msg.key(), value, dlq_headers, "dead_letter"))

    def _complete(self, job: Job, outcome: Outcome) -> None:
        job.outcome = outcome
        self._done.put(job)

    def _collect_done(self) -> None:
        while True:
            try:
                job = self._done.get_nowait()
            except queue.Empty:
                return
            if self._current(job):
                job.state = "done"

    def _busy(self) -> bool:
        return any(j.state not in ("done", "dropped") for jobs in self.pending.values() for j in jobs)

    def _ready(self) -> list[Job]:
        """Per partition, the done prefix in offset order (never past an unfinished request)."""
        ready: list[Job] = []
        for jobs in self.pending.values():
            for job in jobs:
                if job.state != "done" or len(ready) >= self.s.worker.max_batch:
                    break
                ready.append(job)
        return ready

    def _commit_ready(self, *, force: bool = False) -> None:
        ready = self._ready()
        if not ready:
            return
        oldest = min(j.received for j in ready)
        if not force and len(ready) < self.s.worker.max_batch and self.clock() - oldest < 0.05:
            return  # batch a little: one transaction for several results, without delaying any by much
        self._commit(ready)

    def _commit(self, jobs: list[Job]) -> None:
        """THE checkpoint: audio is already stored; results + offsets now commit atomically, or not at all."""
        offsets: dict[TP, int] = {}
        for job in jobs:
            offsets[job.tp] = job.origin.offset + 1
        t0 = time.perf_counter()
        try:
            self.txn.begin_transaction()
            for job in jobs:
                o = job.outcome
                assert o is not None
                self.txn.produce(o.topic, o.value, o.key, headers=list(o.headers))
            self.txn.send_offsets_to_transaction(
                [TopicPartition(t, p, off) for (t, p), off in offsets.items()],
                self.consumer.consumer_group_metadata(), 30,
            )
            self._commit_transaction()
        except KafkaException as exc:
            err: KafkaError = exc.args[0]
            if err.fatal():
                metrics.TRANSACTIONS.labels("fatal").inc()
                raise FatalKafkaError(f"producer fenced or fatal: {err}") from exc
            log.warning("transaction failed (%s); aborting and rewinding to the committed offsets", err)
            self.broker_error = (self.clock(), str(err))
            self._abort_and_rewind()
            return
        metrics.TRANSACTIONS.labels("committed").inc()
        t1 = time.perf_counter()
        metrics.STAGE_SECONDS.labels("commit").observe(t1 - t0)
        for job in jobs:
            self.pending[job.tp].popleft()
            o = job.outcome
            assert o is not None
            metrics.REQUESTS.labels(o.status if o.status != "dead_letter" else "error",
                                    o.error_code or ("undecodable" if o.status == "dead_letter" else "")).inc()
            if o.status == "success":
                self.counters.done += 1
            elif o.status == "error":
                self.counters.failed += 1
            else:
                self.counters.dead_lettered += 1
                metrics.DEAD_LETTERS.inc()
            job.marks["committed"] = t1
            job.stage_seconds["commit"] = t1 - t0
        self.committed.update(offsets)
        if self.on_commit is not None:
            self.on_commit(jobs)

    def _commit_transaction(self) -> None:
        for attempt in range(10):
            try:
                self.txn.commit_transaction(30)
                return
            except KafkaException as exc:
                err: KafkaError = exc.args[0]
                if err.retriable() and not err.txn_requires_abort() and attempt < 9:
                    time.sleep(min(2.0, 0.1 * 2**attempt))
                    continue
                raise

    def _abort_and_rewind(self) -> None:
        metrics.TRANSACTIONS.labels("aborted").inc()
        for attempt in range(10):
            try:
                self.txn.abort_transaction(30)
                break
            except KafkaException as exc:
                err: KafkaError = exc.args[0]
                if err.fatal():
                    raise FatalKafkaError(f"producer fatal during abort: {err}") from exc
                time.sleep(min(2.0, 0.1 * 2**attempt))
        # Everything taken since the last commit is redone from the committed position.
        assigned = list(self.epochs)
        for tp in assigned:
            self.epochs[tp] = next(self._epoch_seq)
            self.pending[tp] = deque()
            self.next_offset.pop(tp, None)
        tps = [TopicPartition(t, p) for t, p in assigned]
        if not tps:
            return
        committed: list[TopicPartition] = []
        for attempt in range(8):
            try:
                committed = self.consumer.committed(tps, timeout=10)
                break
            except KafkaException as exc:  # e.g. NOT_COORDINATOR right after a broker restart
                if attempt == 7:
                    raise FatalKafkaError(f"cannot read committed offsets after abort: {exc}") from exc
                log.warning("reading committed offsets failed (%s); retrying", exc.args[0])
                time.sleep(min(5.0, 0.25 * 2**attempt))
        for c in committed:
            self.consumer.seek(TopicPartition(c.topic, c.partition, c.offset if c.offset >= 0 else OFFSET_BEGINNING))

    # ------------------------------------------------------------------ flow control and rebalances

    def _flow_control(self) -> None:
        in_progress = sum(1 for jobs in self.pending.values() for j in jobs if j.state not in ("done", "dropped"))
        metrics.INFLIGHT_JOBS.set(in_progress)
        current = self.current
        metrics.INFLIGHT_AGE.set(self.clock() - current.started if current is not None else 0.0)
        full = self._draining or in_progress >= self._intake_limit() + 1
        if full:
            to_pause = [tp for tp in self.epochs if tp not in self.paused]
            if to_pause:
                self.consumer.pause([TopicPartition(t, p) for t, p in to_pause])
                self.paused.update(to_pause)
        elif self.paused:
            to_resume = [tp for tp in self.paused if tp in self.epochs]
            if to_resume:
                self.consumer.resume([TopicPartition(t, p) for t, p in to_resume])
            self.paused.clear()

    def _intake_limit(self) -> int:
        """WORKER_PREFETCH, raised for short jobs so the queued work outlasts a resume's re-fetch delay."""
        limit = self.s.worker.prefetch
        avg = self.engine_seconds_ewma
        if avg is not None and avg > 0:
            limit = max(limit, min(16, math.ceil(RESUME_LATENCY_SECONDS / avg) + 1))
        return limit

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        metrics.REBALANCES.labels("assign").inc()
        for tp in partitions:
            key = (tp.topic, tp.partition)
            self.epochs[key] = next(self._epoch_seq)
            self.pending[key] = deque()
            self.next_offset.pop(key, None)
            self.last_message[key] = self.clock()
        self.joined = True
        self.assignment_changed.set()
        log.info("assigned %s", sorted(f"{t.topic}[{t.partition}]" for t in partitions))

    def resync_stalled(self, lags: dict[TP, int | None], stall_seconds: float) -> list[TP]:
        """Re-seek partitions that have lag but delivered nothing for a long time while we were not
        pausing them: a fetcher left stuck by a broker restart must not strand requests. Logged loudly,
        so it is visible how often this happens."""
        stalled: list[TP] = []
        now = self.clock()
        for tp, lag in lags.items():
            if not lag or tp in self.paused or self.pending.get(tp) or self._draining:
                continue
            if now - self.last_message.get(tp, now) < stall_seconds:
                continue
            # Nothing committed yet: start over from the log start, as auto.offset.reset=earliest would.
            committed = self.committed.get(tp, OFFSET_BEGINNING)
            log.warning("partition %s[%d] has lag %d but delivered nothing for %.0fs: re-seeking to offset %d",
                        tp[0], tp[1], lag, now - self.last_message.get(tp, now), committed)
            self.consumer.seek(TopicPartition(tp[0], tp[1], committed))
            self.next_offset.pop(tp, None)
            self.last_message[tp] = now
            metrics.REBALANCES.labels("resync").inc()
            stalled.append(tp)
        return stalled

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        metrics.REBALANCES.labels("revoke").inc()
        # We still own these partitions inside the callback: commit what is finished, drop the rest.
        self._collect_done()
        self._commit_ready(force=True)
        self._forget(partitions)
        log.info("revoked %s", sorted(f"{t.topic}[{t.partition}]" for t in partitions))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        metrics.REBALANCES.labels("lost").inc()
        # Someone else may own them already: commit nothing.
        self._forget(partitions)
        log.warning("lost %s", sorted(f"{t.topic}[{t.partition}]" for t in partitions))

    def _forget(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            key = (tp.topic, tp.partition)
            for job in self.pending.pop(key, deque()):
                if job.state != "done":
                    job.state = "dropped"
            self.epochs.pop(key, None)
            self.next_offset.pop(key, None)
            self.last_message.pop(key, None)
            self.paused.discard(key)
            self.committed.pop(key, None)
            with contextlib.suppress(KeyError):
                metrics.QUEUE_LAG.remove(tp.topic, str(tp.partition))
        self.assignment_changed.set()
