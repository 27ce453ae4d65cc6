"""Outgoing events as Avro-ready dicts: results, progress, dead letters.

One function per event type, so every producer of an event writes the same shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from processor.audio import EncodedAudio, SegmentTiming
from processor.engine.base import ModelInfo
from processor.errors import TtsError
from processor.request import S3Location, TtsRequest

# Upper bounds on what an event copies: a request's own fields are bounded by validation
# (processor/request.py), these bound messages built from them and from exceptions.
MAX_MESSAGE_CHARS = 2000
# A segment's text (progress events, the result's segment list): segments are bounded in tokens, not
# characters, and one "token" run can be long; the request's text bounds their sum (10,000 characters).
MAX_SEGMENT_TEXT_CHARS = 4000


@dataclass(frozen=True)
class Origin:
    """Where a request record came from; results carry it so they can be traced back."""

    topic: str
    partition: int
    offset: int


def now() -> datetime:
    return datetime.now(UTC)


def model_record(info: ModelInfo | None) -> dict[str, Any] | None:
    if info is None:
        return None
    return {"model_type": info.model_type, "model_version": info.model_version,
            "device": info.device, "precision": info.precision, "engine": info.engine, "backend": info.backend,
            "capabilities": info.capabilities.as_dict()}


def parameters_record(req: TtsRequest, voice_sha256: str | None) -> dict[str, Any]:
    return {
        "voice": req.voice,
        "voice_sha256": voice_sha256,
        "emotion_mode": req.emotion_mode,
        "emotion_alpha": req.emotion_alpha,
        "emotion_vector": list(req.emotion_vector) if req.emotion_vector is not None else None,
        "emotion_text": req.emotion_text if req.emotion_mode == "text" else None,
        "use_random": req.use_random,
        "max_text_tokens_per_segment": req.max_text_tokens_per_segment,
        "generation": req.generation_used(),
        "interval_silence_ms": 200 if req.interval_silence_ms is None else req.interval_silence_ms,
        "seed": req.seed,
        "speed": req.speed,
        "language": req.language,
        "output": output_record(req),
    }


def output_record(req: TtsRequest, engine_rate: int | None = None) -> dict[str, Any]:
    spec = req.output_spec
    rate = spec.sample_rate if engine_rate is None else spec.rate_for(engine_rate)
    return {
        "format": spec.format,
        "sample_rate": rate,  # None until the engine's rate is known (an error before synthesis)
        "channels": spec.channels,
        "bitrate_kbps": spec.bitrate_for(rate) if rate is not None else spec.bitrate_kbps,
        "loudness": spec.loudness_lufs,
        "true_peak_dbtp": spec.true_peak_dbtp,
        "subtitles": req.subtitles,
        "stream_segments": req.stream_segments,
    }


@dataclass(frozen=True)
class StoredFile:
    """An object stored besides the audio (a subtitle file)."""

    format: str
    location: S3Location
    sha256: str
    size_bytes: int


def success_result(
    req: TtsRequest, origin: Origin, *, worker_id: str, location: S3Location, audio: EncodedAudio,
    segments: int, processing_seconds: float, synthesis_seconds: float, model: ModelInfo | None,
    voice_sha256: str | None, attempts: int, timing: Sequence[SegmentTiming] | None = None,
    subtitles: Sequence[StoredFile] = (), engine_rate: int | None = None,
) -> dict[str, Any]:
    parameters = parameters_record(req, voice_sha256)
    parameters["output"] = {**output_record(req, engine_rate), "sample_rate": audio.sample_rate,
                            "bitrate_kbps": audio.bitrate_kbps}
    return {
        **_base(req.request_id, origin, worker_id, req.workflow_id, req.stage_name),
        "status": "success",
        "output_uri": location.uri,
        "output_bucket": location.bucket,
        "output_key": location.key,
        "sha256": audio.sha256,
        "size_bytes": audio.size,
        "duration_seconds": audio.duration_seconds,
        "sample_rate": audio.sample_rate,
        "output_format": audio.format,
        "content_type": audio.content_type,
        "channels": audio.channels,
        "bitrate_kbps": audio.bitrate_kbps,
        "loudness_lufs": audio.loudness_lufs,
        "true_peak_dbtp": audio.true_peak_dbtp,
        "segment_timing": [timing_record(t) for t in timing or ()],
        "subtitles": [{"format": f.format, "uri": f.location.uri, "key": f.location.key, "sha256": f.sha256,
                       "size_bytes": f.size_bytes} for f in subtitles],
        "segments": segments,
        "processing_seconds": processing_seconds,
        "synthesis_seconds": synthesis_seconds,
        "model": model_record(model),
        "parameters": parameters,
        "attempts": attempts,
    }


def error_result(
    request_id: str, origin: Origin, error: TtsError, *, worker_id: str, req: TtsRequest | None = None,
    processing_seconds: float = 0.0, model: ModelInfo | None = None, attempts: int = 1,
) -> dict[str, Any]:
    return {
        **_base(request_id, origin, worker_id, req.workflow_id if req else None, req.stage_name if req else None),
        "status": "error",
        "error_code": error.code.value,
        "error_message": bounded(error.message, MAX_MESSAGE_CHARS),
        "processing_seconds": processing_seconds,
        "model": model_record(model),
        "parameters": parameters_record(req, None) if req is not None else None,
        "attempts": attempts,
    }


def timing_record(t: SegmentTiming) -> dict[str, Any]:
    return {"index": t.index, "text": bounded(t.text, MAX_SEGMENT_TEXT_CHARS), "start_seconds": t.start_seconds,
            "end_seconds": t.end_seconds}


@dataclass(frozen=True)
class SegmentPiece:
    """A streamed segment as stored: where it is and where it sits in the final audio."""

    location: S3Location
    audio: EncodedAudio
    offset_seconds: float


def progress_event(request_id: str, segment: int, segments: int, worker_id: str, elapsed: float,
                   timing: SegmentTiming | None = None, piece: SegmentPiece | None = None) -> dict[str, Any]:
    record: dict[str, Any] = {"request_id": request_id, "segment": segment, "segments": segments,
                              "worker_id": worker_id, "elapsed_seconds": elapsed, "emitted_at": now()}
    if timing is not None:
        record.update(text=bounded(timing.text, MAX_SEGMENT_TEXT_CHARS), start_seconds=timing.start_seconds,
                      end_seconds=timing.end_seconds)
    if piece is not None:
        record["audio"] = {
            "uri": piece.location.uri, "bucket": piece.location.bucket, "key": piece.location.key,
            "sha256": piece.audio.sha256, "size_bytes": piece.audio.size, "content_type": piece.audio.content_type,
            "offset_seconds": piece.offset_seconds, "duration_seconds": piece.audio.duration_seconds,
        }
    return record


def dead_letter(
    origin: Origin, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]] | None,
    reason: str, message: str, worker_id: str, *, claim_check: ClaimCheck | None = None,
    original_size: int | None = None,
) -> dict[str, Any]:
    return {
        "source_topic": origin.topic,
        "source_partition": origin.partition,
        "source_offset": origin.offset,
        "original_key": key,
        "original_value": value,
        "original_headers": {k: (v or b"") for k, v in (headers or [])},
        "reason": reason,
        "error_message": bounded(message, MAX_MESSAGE_CHARS),
        "worker_id": worker_id,
        "failed_at": now(),
        "claim_check_uri": claim_check.uri if claim_check else None,
        "claim_check_sha256": claim_check.sha256 if claim_check else None,
        "claim_check_size_bytes": claim_check.size if claim_check else None,
        "original_size_bytes": original_size,
    }


@dataclass(frozen=True)
class ClaimCheck:
    """Where a dead letter's original went when it was too large for the DLQ topic."""

    uri: str
    sha256: str
    size: int


def bounded(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, saying so: every string an event copies from a
    request or an exception goes through here, so no outcome can outgrow its topic's record limit."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - 24)] + f"… [{len(text) - limit + 24} more]"


def _base(request_id: str, origin: Origin, worker_id: str, workflow_id: str | None,
          stage_name: str | None) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "workflow_id": workflow_id,
        "stage_name": stage_name,
        "worker_id": worker_id,
        "request_topic": origin.topic,
        "request_partition": origin.partition,
        "request_offset": origin.offset,
        "completed_at": now(),
    }
