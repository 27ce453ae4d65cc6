"""Outgoing events as Avro-ready dicts: results, progress, dead letters.

One function per event type, so every producer of an event writes the same shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from processor.audio import EncodedAudio
from processor.engine.base import ModelInfo
from processor.errors import TtsError
from processor.request import S3Location, TtsRequest


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
            "device": info.device, "precision": info.precision}


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
    }


def success_result(
    req: TtsRequest, origin: Origin, *, worker_id: str, location: S3Location, audio: EncodedAudio,
    segments: int, processing_seconds: float, synthesis_seconds: float, model: ModelInfo | None,
    voice_sha256: str | None, attempts: int,
) -> dict[str, Any]:
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
        "segments": segments,
        "processing_seconds": processing_seconds,
        "synthesis_seconds": synthesis_seconds,
        "model": model_record(model),
        "parameters": parameters_record(req, voice_sha256),
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
        "error_message": error.message[:2000],
        "processing_seconds": processing_seconds,
        "model": model_record(model),
        "parameters": parameters_record(req, None) if req is not None else None,
        "attempts": attempts,
    }


def progress_event(request_id: str, segment: int, segments: int, worker_id: str, elapsed: float, *,
                   text: str | None = None, start_seconds: float | None = None,
                   end_seconds: float | None = None) -> dict[str, Any]:
    return {"request_id": request_id, "segment": segment, "segments": segments, "worker_id": worker_id,
            "elapsed_seconds": elapsed, "emitted_at": now(), "text": text, "start_seconds": start_seconds,
            "end_seconds": end_seconds}


def dead_letter(
    origin: Origin, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]] | None,
    reason: str, message: str, worker_id: str,
) -> dict[str, Any]:
    return {
        "source_topic": origin.topic,
        "source_partition": origin.partition,
        "source_offset": origin.offset,
        "original_key": key,
        "original_value": value,
        "original_headers": {k: (v or b"") for k, v in (headers or [])},
        "reason": reason,
        "error_message": message[:2000],
        "worker_id": worker_id,
        "failed_at": now(),
    }


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
