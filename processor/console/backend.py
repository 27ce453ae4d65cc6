"""What the console knows: background Kafka tailers keeping recent progress, results and health in memory.

The console is a *client* of the pipeline: it publishes TtsRequests and reads the progress, result
(read_committed) and health topics like any other consumer, and reads/writes S3 (uploads, voice
presets, result WAVs). It never talks to a worker directly and runs no model.

Each tailer assigns every partition of its topic explicitly (no consumer group, nothing committed),
starting a little before the end so a restarted console still shows recent history, and picks up
partitions added later.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, KafkaException, Producer, TopicPartition

from processor import tracing
from processor.config import Settings
from processor.errors import ErrorCode, TtsError
from processor.references import check_audio
from processor.request import GENERATION_DEFAULTS, TtsRequest, validate_request
from processor.storage import Storage
from processor.voices import VoiceCatalog
from processor.wire import Codec, DecodeError, make_codecs

log = logging.getLogger(__name__)

# What a null field in a TtsRequest means, for the form.
MODEL_DEFAULTS: dict[str, float | int] = {
    **GENERATION_DEFAULTS, "max_text_tokens_per_segment": 120, "interval_silence_ms": 200,
}
GENERATION_FIELDS = ("top_p", "top_k", "temperature", "num_beams", "repetition_penalty", "max_mel_tokens",
                     "interval_silence_ms")
REQUEST_NULLS: dict[str, Any] = {
    f: None for f in ("emotion_reference", "emotion_vector", "emotion_text", "top_p", "top_k", "temperature",
                      "num_beams", "repetition_penalty", "max_mel_tokens", "interval_silence_ms", "output_bucket",
                      "output_key_prefix", "workflow_id", "stage_name", "deadline", "created_at")
}
# Output settings the form may send; absent or empty means the request's default.
OUTPUT_FIELDS = ("output_format", "sample_rate", "channels", "bitrate_kbps", "loudness", "true_peak_dbtp",
                 "subtitles", "stream_segments")
UPLOAD_PREFIX = "uploads"
HISTORY_TAIL = 100  # records per partition read back at start for the history
PROGRESS_TAIL = 200
TRACE_KEY = "_trace_id"  # set on decoded records by the tailers: not a schema field
THROUGHPUT_WINDOW = 300.0  # seconds
WORKER_FORGET_SECONDS = 3600.0
AUDIO_SUFFIX = {"WAV": ".wav", "FLAC": ".flac", "OGG": ".ogg"}


def jsonable(value: Any) -> Any:
    """Avro-decoded records → JSON-ready values (datetimes as ISO 8601 strings)."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return None
    return value


def _timeline(request_id: str, progress: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per segment seen so far (the latest event wins), with its text, timing and piece."""
    rows: dict[int, dict[str, Any]] = {}
    for e in progress:
        index = e.get("segment")
        if not isinstance(index, int):
            continue
        audio = e.get("audio")
        rows[index] = {
            "index": index, "text": e.get("text"), "start_seconds": e.get("start_seconds"),
            "end_seconds": e.get("end_seconds"),
            "audio_url": f"api/pieces/{request_id}/{index}" if audio else None,
            "offset_seconds": audio.get("offset_seconds") if audio else None,
            "duration_seconds": audio.get("duration_seconds") if audio else None,
        }
    return [rows[i] for i in sorted(rows)]


class ConsoleError(Exception):
    """A client-facing failure: HTTP status + stable code + message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass
class Job:
    """A request submitted from this console."""

    request_id: str
    submitted_at: datetime
    text: str
    voice: str
    emotion_mode: str
    segments_estimate: int
    progress: list[dict[str, Any]] = field(default_factory=list)
    trace_id: str | None = None  # of the traceparent this console sent with the request


@dataclass
class WorkerView:
    health: dict[str, Any]
    seen: float  # time.time() of the last event
    samples: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=200))


class Tailer(threading.Thread):
    """Reads one topic (read_committed) from ``back`` records before the end of each partition."""

    def __init__(self, name: str, settings: Settings, topic: str, codec: Codec, back: int | None,
                 handle: Callable[[dict[str, Any]], None]) -> None:
        super().__init__(name=f"console-{name}", daemon=True)
        self.kind = name
        self.settings = settings
        self.topic = topic
        self.codec = codec
        self.back = back  # None: from the beginning
        self.handle = handle
        self.stop_event = threading.Event()
        self.assigned: set[int] = set()
        self.ready = threading.Event()
        self.error: str | None = None
        self.records = 0
        self.undecodable = 0

    def run(self) -> None:
        while not self.stop_event.is_set():
            consumer = None
            try:
                consumer = Consumer({
                    **self.settings.kafka.librdkafka_common(),
                    "group.id": f"tts-console-{uuid.uuid4().hex[:8]}",
                    "enable.auto.commit": False,
                    "isolation.level": "read_committed",
                    "auto.offset.reset": "latest",
                    "logger": _quiet,
                })
                self._loop(consumer)
            except Exception as exc:  # noqa: BLE001 (a tailer reports its failure in the UI and retries)
                self.error = f"{type(exc).__name__}: {exc}"[:300]
                log.warning("%s tailer: %s", self.kind, self.error)
                self.stop_event.wait(2.0)
            finally:
                if consumer is not None:
                    with contextlib.suppress(Exception):
                        consumer.close()
                self.assigned = set()

    def _assign_new(self, consumer: Consumer) -> None:
        md = consumer.list_topics(self.topic, timeout=10)
        meta = md.topics.get(self.topic)
        if meta is None or (meta.error is not None and not meta.partitions):
            raise KafkaException(f"topic {self.topic} not found")
        new = sorted(set(meta.partitions) - self.assigned)
        if not new:
            return
        tps = []
        for p in new:
            low, high = consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10, cached=False)
            start = low if self.back is None else max(low, high - self.back)
            # A partition created after start-up is new: read all of it.
            if self.assigned and self.back is not None:
                start = low
            tps.append(TopicPartition(self.topic, p, start if start >= 0 else OFFSET_END))
        consumer.incremental_assign(tps)
        self.assigned |= set(new)

    def _loop(self, consumer: Consumer) -> None:
        self._assign_new(consumer)
        self.error = None
        self.ready.set()
        last_check = time.monotonic()
        while not self.stop_event.is_set():
            if time.monotonic() - last_check > 30:
                last_check = time.monotonic()
                self._assign_new(consumer)
            msg = consumer.poll(0.25)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise KafkaException(err)
                continue
            try:
                record = self.codec.decode(msg.value())
            except DecodeError:
                self.undecodable += 1
                continue
            # The record's trace (W3C traceparent header), kept beside it for the views.
            record[TRACE_KEY] = tracing.trace_id(msg.headers())
            self.records += 1
            try:
                self.handle(record)
            except Exception:
                log.exception("%s tailer: handling a record failed", self.kind)


_quiet = logging.getLogger("tts.console.librdkafka")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False


class Backend:
    def __init__(self, settings: Settings, *, storage: Storage | None = None, history: int = 200) -> None:
        self.settings = settings
        k = settings.kafka
        self.codecs = make_codecs(settings)
        self.storage = storage or Storage(settings.s3)
        self.catalog = VoiceCatalog(self.storage, settings.s3.bucket, settings.s3.voices_prefix)
        self.history_size = history
        self.lock = threading.Lock()
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self.progress: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
        self.results: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.workers: dict[str, WorkerView] = {}
        self._producer: Producer | None = None
        self.tailers = [
            Tailer("results", settings, k.result_topic, self.codecs["TtsResult"], HISTORY_TAIL, self._on_result),
            Tailer("progress", settings, k.progress_topic, self.codecs["TtsProgress"], PROGRESS_TAIL,
                   self._on_progress),
            Tailer("health", settings, k.health_topic, self.codecs["WorkerHealth"], None, self._on_health),
        ]

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        for t in self.tailers:
            t.start()

    def stop(self) -> None:
        for t in self.tailers:
            t.stop_event.set()
        for t in self.tailers:
            t.join(timeout=5)
        if self._producer is not None:
            self._producer.flush(5)

    def status(self) -> dict[str, Any]:
        return {
            "topics": {t.kind: {"topic": t.topic, "ready": t.ready.is_set() and t.error is None,
                                "partitions": sorted(t.assigned), "records": t.records, "error": t.error,
                                "undecodable": t.undecodable} for t in self.tailers},
            "request_topic": self.settings.kafka.request_topic,
            "bucket": self.settings.s3.bucket,
            "kafka": self.settings.kafka.bootstrap_servers,
        }

    # ------------------------------------------------------------------ event handlers

    def _on_result(self, rec: dict[str, Any]) -> None:
        rid = str(rec.get("request_id", ""))
        with self.lock:
            self.results.pop(rid, None)  # a redo replaces the earlier result
            self.results[rid] = rec
            while len(self.results) > self.history_size:
                self.results.popitem(last=False)

    def _on_progress(self, rec: dict[str, Any]) -> None:
        rid = str(rec.get("request_id", ""))
        with self.lock:
            events = self.progress.setdefault(rid, [])
            events.append({"segment": rec.get("segment"), "segments": rec.get("segments"),
                           "worker_id": rec.get("worker_id"), "elapsed_seconds": rec.get("elapsed_seconds"),
                           "emitted_at": rec.get("emitted_at"), "text": rec.get("text"),
                           "start_seconds": rec.get("start_seconds"), "end_seconds": rec.get("end_seconds"),
                           "audio": rec.get("audio"), "trace_id": rec.get(TRACE_KEY)})
            del events[:-200]
            self.progress.move_to_end(rid)
            while len(self.progress) > 1000:
                self.progress.popitem(last=False)

    def _on_health(self, rec: dict[str, Any]) -> None:
        wid = str(rec.get("worker_id", ""))
        now = time.time()
        with self.lock:
            view = self.workers.get(wid)
            if view is None:
                view = self.workers[wid] = WorkerView(rec, now)
            emitted = rec.get("emitted_at")
            at = emitted.timestamp() if isinstance(emitted, datetime) else now
            view.health, view.seen = rec, at
            counters = rec.get("counters") or {}
            view.samples.append((at, int(counters.get("done", 0)) + int(counters.get("failed", 0))))

    # ------------------------------------------------------------------ reads

    def voices(self) -> list[dict[str, str]]:
        try:
            presets = self.catalog.list()
        except TtsError as exc:
            raise ConsoleError(503, exc.code.value, exc.message) from None
        return [{k: v for k, v in p.as_dict().items()} for p in sorted(presets.values(), key=lambda p: p.name)]

    def job_view(self, request_id: str) -> dict[str, Any] | None:
        with self.lock:
            job = self.jobs.get(request_id)
            progress = list(self.progress.get(request_id, []))
            result = self.results.get(request_id)
        if job is None and result is None and not progress:
            return None
        latest = max(progress, key=lambda e: (e.get("segment") or 0)) if progress else None
        state = "queued"
        if result is not None:
            state = "done" if result.get("status") == "success" else "error"
        elif latest is not None:
            state = "running"
        traced = [job.trace_id if job else None, (result or {}).get(TRACE_KEY),
                  *(e.get("trace_id") for e in progress)]
        view: dict[str, Any] = jsonable({
            "request_id": request_id,
            "trace_id": next((t for t in traced if t), None),
            "state": state,
            "submitted_at": job.submitted_at if job else None,
            "text": job.text if job else None,
            "voice": job.voice if job else None,
            "emotion_mode": job.emotion_mode if job else None,
            "segments_estimate": job.segments_estimate if job else None,
            "progress": latest,
            "progress_events": len(progress),
            "timeline": _timeline(request_id, progress),
            "result": self._result_view(result) if result is not None else None,
        })
        return view

    def _result_view(self, r: dict[str, Any]) -> dict[str, Any]:
        duration = r.get("duration_seconds")
        processing = r.get("processing_seconds")
        synthesis = r.get("synthesis_seconds")
        ok = r.get("status") == "success"
        job = self.jobs.get(str(r.get("request_id")))
        return {
            "request_id": r.get("request_id"),
            "trace_id": r.get(TRACE_KEY) or (job.trace_id if job else None),
            "status": r.get("status"),
            "error_code": r.get("error_code"),
            "error_message": r.get("error_message"),
            "output_uri": r.get("output_uri"),
            "duration_seconds": duration,
            "processing_seconds": processing,
            "synthesis_seconds": synthesis,
            # Real-time factor: seconds of work per second of audio (< 1 is faster than real time).
            "rtf": processing / duration if ok and duration and processing is not None else None,
            "synthesis_rtf": synthesis / duration if ok and duration and synthesis is not None else None,
            "segments": r.get("segments"),
            "sample_rate": r.get("sample_rate"),
            "output_format": r.get("output_format") or "wav",
            "content_type": r.get("content_type") or "audio/wav",
            "channels": r.get("channels"),
            "bitrate_kbps": r.get("bitrate_kbps"),
            "loudness_lufs": r.get("loudness_lufs"),
            "true_peak_dbtp": r.get("true_peak_dbtp"),
            "segment_timing": r.get("segment_timing") or [],
            "subtitles": [{"format": f.get("format"), "uri": f.get("uri"), "size_bytes": f.get("size_bytes"),
                           "url": f"api/subtitles/{r.get('request_id')}/{f.get('format')}"}
                          for f in r.get("subtitles") or []],
            "size_bytes": r.get("size_bytes"),
            "worker_id": r.get("worker_id"),
            "model": r.get("model"),
            "parameters": r.get("parameters"),
            "attempts": r.get("attempts"),
            "completed_at": r.get("completed_at"),
            "audio_url": f"api/audio/{r.get('request_id')}" if ok and r.get("output_key") else None,
            "text": job.text if job else None,
            "mine": job is not None,
        }

    def history(self, limit: int = 50) -> list[dict[str, Any]]:
        with self.lock:
            recent = list(self.results.values())[-limit:]
            views = [self._result_view(r) for r in reversed(recent)]
        return [jsonable(v) for v in views]

    def worker_views(self) -> list[dict[str, Any]]:
        now = time.time()
        out = []
        with self.lock:
            recent = [r for r in self.results.values() if isinstance(r.get("completed_at"), datetime)
                      and now - r["completed_at"].timestamp() <= THROUGHPUT_WINDOW]
            for wid, view in sorted(self.workers.items()):
                h = view.health
                age = max(0.0, now - view.seen)
                if age > WORKER_FORGET_SECONDS:
                    continue
                mine = [r for r in recent if r.get("worker_id") == wid]
                audio = sum(float(r.get("duration_seconds") or 0.0) for r in mine if r.get("status") == "success")
                # Jobs/min from the worker's own counters over the window (covers jobs this console did
                # not see); falls back to the results seen here.
                old = [s for s in view.samples if now - s[0] <= THROUGHPUT_WINDOW]
                per_min = None
                if len(old) >= 2 and old[-1][0] > old[0][0]:
                    per_min = (old[-1][1] - old[0][1]) / (old[-1][0] - old[0][0]) * 60.0
                elif mine:
                    per_min = len(mine) / (THROUGHPUT_WINDOW / 60.0)
                lags = [a.get("lag") for a in h.get("assignments") or [] if a.get("lag") is not None]
                status = str(h.get("status"))
                out.append(jsonable({
                    "worker_id": wid,
                    "status": status,
                    "stale": status != "stopped" and age > 60.0,
                    "last_seen_seconds": round(age, 1),
                    "reasons": h.get("reasons") or [],
                    "gpu": h.get("gpu"),
                    "model": h.get("model"),
                    "assignments": h.get("assignments") or [],
                    "total_lag": sum(lags) if lags else None,
                    "current_job": h.get("current_job"),
                    "counters": h.get("counters"),
                    "voices": h.get("voices") or [],
                    "throughput": {
                        "window_seconds": THROUGHPUT_WINDOW,
                        "jobs_per_minute": round(per_min, 2) if per_min is not None else None,
                        "results_seen": len(mine),
                        "audio_seconds": round(audio, 2),
                    },
                }))
        return out

    def audio_location(self, request_id: str) -> tuple[str, str, str]:
        """Bucket, key and content type of a result's audio."""
        with self.lock:
            r = self.results.get(request_id)
        if r is None or r.get("status") != "success" or not r.get("output_key"):
            raise ConsoleError(404, "not_found", f"no successful result for {request_id} in recent history")
        return (str(r.get("output_bucket") or self.settings.s3.bucket), str(r["output_key"]),
                str(r.get("content_type") or "audio/wav"))

    def piece_location(self, request_id: str, index: int) -> tuple[str, str, str]:
        """Bucket, key and content type of a streamed segment, from its progress event."""
        with self.lock:
            events = list(self.progress.get(request_id, []))
        for e in reversed(events):  # a redone job may have announced the segment again: the latest wins
            audio = e.get("audio")
            if e.get("segment") == index and audio:
                return str(audio["bucket"]), str(audio["key"]), str(audio["content_type"])
        raise ConsoleError(404, "not_found", f"no stored segment {index} of {request_id} in recent progress")

    def subtitle_location(self, request_id: str, fmt: str) -> tuple[str, str, str]:
        with self.lock:
            r = self.results.get(request_id)
        for f in (r or {}).get("subtitles") or []:
            if f.get("format") == fmt:
                bucket = str(r.get("output_bucket") or self.settings.s3.bucket) if r else ""
                return bucket, str(f["key"]), "text/vtt" if fmt == "vtt" else "application/x-subrip"
        raise ConsoleError(404, "not_found", f"no {fmt} subtitles for {request_id} in recent history")

    # ------------------------------------------------------------------ writes

    def upload(self, data: bytes, filename: str, kind: str) -> dict[str, Any]:
        cap = self.settings.s3.max_reference_bytes
        if len(data) > cap:
            raise ConsoleError(413, ErrorCode.REFERENCE_TOO_LARGE.value,
                               f"the clip is {len(data)} bytes; the limit is {cap}")
        try:
            check_audio(data, f"uploaded {kind} clip")
        except TtsError as exc:
            raise ConsoleError(400, exc.code.value, exc.message) from None
        import soundfile as sf

        info = sf.info(io.BytesIO(data))
        suffix = AUDIO_SUFFIX.get(str(info.format), ".wav")
        digest = hashlib.sha256(data).hexdigest()
        # Content-addressed: the same clip uploaded twice is one object (and one conditioning cache entry).
        key = f"{UPLOAD_PREFIX}/{digest[:32]}{suffix}"
        bucket = self.settings.s3.bucket
        try:
            if self.storage.etag(bucket, key) is None:
                self.storage.put(bucket, key, data, content_type=f"audio/{suffix[1:]}",
                                 metadata={"source": "tts-console", "kind": kind,
                                           "filename": filename.encode("ascii", "replace").decode()[:200]})
        except TtsError as exc:
            raise ConsoleError(503, exc.code.value, exc.message) from None
        return {"uri": f"s3://{bucket}/{key}", "seconds": round(info.frames / info.samplerate, 3),
                "format": info.format, "sample_rate": info.samplerate, "bytes": len(data), "sha256": digest,
                "kind": kind}

    def build_record(self, form: dict[str, Any]) -> dict[str, Any]:
        """Form fields → a TtsRequest record (only the chosen emotion mode; defaults as null)."""
        rid = str(form.get("request_id") or f"console-{uuid.uuid4().hex[:16]}")
        record: dict[str, Any] = {**REQUEST_NULLS, "request_id": rid, "text": form.get("text", ""),
                                  "voice": form.get("voice") or "", "use_emotion_text": False,
                                  "use_random": bool(form.get("use_random", False)),
                                  "created_at": datetime.now(UTC)}
        mode = form.get("emotion_mode") or "same_as_voice"
        alpha = form.get("emotion_alpha")
        if mode == "reference":
            record["emotion_reference"] = form.get("emotion_reference") or None
            if not record["emotion_reference"]:
                raise ConsoleError(400, "invalid_request", "emotion_reference: upload an emotion clip first")
        elif mode == "vector":
            record["emotion_vector"] = form.get("emotion_vector")
        elif mode == "text":
            text = (form.get("emotion_text") or "").strip()
            record["emotion_text"] = text or None
            record["use_emotion_text"] = True
        elif mode != "same_as_voice":
            raise ConsoleError(400, "invalid_request", f"emotion_mode: unknown mode '{mode}'")
        if mode != "same_as_voice" and alpha is not None:
            record["emotion_alpha"] = alpha
        for name in OUTPUT_FIELDS:
            value = form.get(name)
            if value is not None and value != "":
                record[name] = value
        segment_tokens = form.get("max_text_tokens_per_segment")
        if segment_tokens is not None:
            record["max_text_tokens_per_segment"] = segment_tokens
        for name in GENERATION_FIELDS:
            value = form.get(name)
            # A value equal to the model's default is sent as null ("model default"), so a model whose
            # own limits differ (e.g. a smaller max_mel_tokens) is not overridden by the form.
            if value is not None and value != "" and value != MODEL_DEFAULTS[name]:
                record[name] = value
        return record

    def submit(self, form: dict[str, Any]) -> tuple[TtsRequest, dict[str, Any]]:
        record = self.build_record(form)
        try:
            req = validate_request(record)  # the processor's own rules, before anything is published
        except TtsError as exc:
            raise ConsoleError(400, exc.code.value, exc.message) from None
        if req.voice_location is None:
            try:
                known = self.catalog.list()
                if req.voice not in known:
                    known = self.catalog.list(refresh=True)
            except TtsError as exc:
                raise ConsoleError(503, exc.code.value, exc.message) from None
            if req.voice not in known:
                raise ConsoleError(400, ErrorCode.UNKNOWN_VOICE.value, f"no voice preset named '{req.voice}'")
        for name in ("emotion_vector",):
            if record.get(name) is not None:
                record[name] = [float(x) for x in record[name]]
        for name in ("top_p", "temperature", "repetition_penalty", "emotion_alpha", "loudness", "true_peak_dbtp"):
            if record.get(name) is not None:
                record[name] = float(record[name])
        for name in ("top_k", "num_beams", "max_mel_tokens", "interval_silence_ms", "max_text_tokens_per_segment",
                     "sample_rate", "channels", "bitrate_kbps"):
            if record.get(name) is not None:
                record[name] = int(record[name])
        value = self.codecs["TtsRequest"].encode(record)
        errors: list[str] = []

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                errors.append(str(err))

        producer = self._get_producer()
        with self.lock:
            from processor.console.segments import estimate_segments

            self.jobs[req.request_id] = Job(req.request_id, datetime.now(UTC), req.text[:2000], req.voice,
                                            req.emotion_mode,
                                            len(estimate_segments(req.text, req.max_text_tokens_per_segment)))
            while len(self.jobs) > 500:
                self.jobs.popitem(last=False)
        # Every console request starts a trace: the workers continue it, and its id is shown here.
        traceparent = tracing.new_traceparent()
        with self.lock:
            self.jobs[req.request_id].trace_id = tracing.trace_id([("traceparent", traceparent)])
        producer.produce(self.settings.kafka.request_topic, value, req.request_id.encode(), on_delivery=delivered,
                         headers=[("traceparent", traceparent.encode())])
        left = producer.flush(15)
        if left or errors:
            with self.lock:
                self.jobs.pop(req.request_id, None)
            raise ConsoleError(503, "kafka_unavailable",
                               f"request not delivered to {self.settings.kafka.request_topic}: "
                               f"{errors[0] if errors else 'timed out'}")
        return req, record

    def _get_producer(self) -> Producer:
        with self.lock:
            if self._producer is None:
                self._producer = Producer({**self.settings.kafka.librdkafka_common(), "enable.idempotence": True,
                                           "linger.ms": 0, "message.timeout.ms": 15000, "logger": _quiet})
            return self._producer
