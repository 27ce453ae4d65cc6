"""Decode → validate: a Kafka record becomes a `TtsRequest` or a stable error, never a crash.

Bounds are enforced here, before anything touches storage or the GPU. The console validates
uploads and forms with these same rules.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from processor.audio import DEFAULT_TRUE_PEAK_DBTP, FORMATS, OutputFormat, OutputSpec, SubtitleFormat, spec_problems
from processor.errors import ErrorCode, TtsError

MAX_TEXT_CHARS = 10_000
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PRESET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_PREFIX = re.compile(r"^[A-Za-z0-9_.\-/]{1,256}$")

EmotionMode = Literal["same_as_voice", "reference", "vector", "text"]


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def parse_s3_uri(uri: str) -> S3Location:
    if not uri.startswith("s3://"):
        scheme = uri.split("://", 1)[0] if "://" in uri else "none"
        raise ValueError(f"only s3:// URIs are accepted (got scheme '{scheme}')")
    bucket, _, key = uri[5:].partition("/")
    if not _BUCKET.match(bucket):
        raise ValueError("invalid bucket name in s3 URI")
    if not key or key.endswith("/") or len(key) > 1024:
        raise ValueError("s3 URI must name an object key")
    return S3Location(bucket, key)


# IndexTTS2's own generation defaults (indextts.infer_v2.infer): what a null field in a request means.
GENERATION_DEFAULTS: dict[str, float | int] = {
    "top_p": 0.8, "top_k": 30, "temperature": 0.8, "num_beams": 3, "repetition_penalty": 10.0, "max_mel_tokens": 1500,
}


class TtsRequest(BaseModel):
    """Mirror of schemas/TtsRequest.avsc with the processor's bounds."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    request_id: str = Field(pattern=r"^[A-Za-z0-9._:-]{1,128}$")
    text: str = Field(min_length=1)
    voice: str = Field(min_length=1, max_length=1100)
    emotion_reference: str | None = None
    emotion_alpha: float = Field(default=0.65, ge=0.0, le=1.0)
    emotion_vector: tuple[float, ...] | None = None
    emotion_text: str | None = Field(default=None, max_length=1000)
    use_emotion_text: bool = False
    use_random: bool = False
    max_text_tokens_per_segment: int = Field(default=120, ge=20, le=600)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0, le=1000)
    temperature: float | None = Field(default=None, ge=0.1, le=2.0)
    num_beams: int | None = Field(default=None, ge=1, le=10)
    repetition_penalty: float | None = Field(default=None, ge=1.0, le=20.0)
    max_mel_tokens: int | None = Field(default=None, ge=50, le=1815)
    interval_silence_ms: int | None = Field(default=None, ge=0, le=5000)
    output_bucket: str | None = None
    output_key_prefix: str | None = None
    output_format: OutputFormat = "wav"
    sample_rate: int | None = None
    channels: int = 1
    bitrate_kbps: int | None = None
    loudness: float | None = None
    true_peak_dbtp: float = DEFAULT_TRUE_PEAK_DBTP
    subtitles: SubtitleFormat = "none"
    stream_segments: bool = False
    workflow_id: str | None = Field(default=None, max_length=256)
    stage_name: str | None = Field(default=None, max_length=256)
    deadline: datetime | None = None
    created_at: datetime | None = None

    @field_validator("text")
    @classmethod
    def _text(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("text is empty")
        return v

    @field_validator("emotion_alpha")
    @classmethod
    def _finite_alpha(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be finite")
        return v

    @field_validator("voice")
    @classmethod
    def _voice(cls, v: str) -> str:
        if "://" in v:
            parse_s3_uri(v)
        elif not _PRESET.match(v):
            raise ValueError("must be an s3:// URI or a preset name of [A-Za-z0-9_-], up to 64 chars")
        return v

    @field_validator("emotion_reference")
    @classmethod
    def _emo_ref(cls, v: str | None) -> str | None:
        if v is not None:
            parse_s3_uri(v)
        return v

    @field_validator("emotion_vector")
    @classmethod
    def _vector(cls, v: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if v is None:
            return v
        if len(v) != 8:
            raise ValueError(f"needs exactly 8 values, got {len(v)}")
        if not all(math.isfinite(x) and 0.0 <= x <= 1.2 for x in v):
            raise ValueError("values must be finite and within [0, 1.2]")
        if sum(v) <= 0.0:
            raise ValueError("at least one emotion weight must be positive")
        return v

    @field_validator("output_bucket")
    @classmethod
    def _bucket(cls, v: str | None) -> str | None:
        if v is not None and not _BUCKET.match(v):
            raise ValueError("invalid bucket name")
        return v

    @field_validator("output_key_prefix")
    @classmethod
    def _prefix(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = v.strip("/")
        if not _PREFIX.match(v) or ".." in v.split("/"):
            raise ValueError("prefix may use [A-Za-z0-9_.-/], no '..' segments, at most 256 chars")
        return v

    @model_validator(mode="after")
    def _output(self) -> TtsRequest:
        problems = spec_problems(self.output_spec)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _one_emotion_mode(self) -> TtsRequest:
        modes = [
            self.emotion_reference is not None,
            self.emotion_vector is not None,
            self.emotion_text is not None or self.use_emotion_text,
        ]
        if sum(modes) > 1:
            raise ValueError("set at most one of emotion_reference, emotion_vector, emotion_text/use_emotion_text")
        return self

    @property
    def emotion_mode(self) -> EmotionMode:
        if self.emotion_reference is not None:
            return "reference"
        if self.emotion_vector is not None:
            return "vector"
        if self.emotion_text is not None or self.use_emotion_text:
            return "text"
        return "same_as_voice"

    @property
    def voice_location(self) -> S3Location | None:
        return parse_s3_uri(self.voice) if "://" in self.voice else None

    @property
    def seed(self) -> int:
        # Deterministic per request: a redo after a crash renders the same bytes to the same key.
        return int.from_bytes(hashlib.sha256(self.request_id.encode()).digest()[:4], "big") & 0x7FFFFFFF

    def generation_overrides(self) -> dict[str, float]:
        return {n: float(getattr(self, n)) for n in GENERATION_DEFAULTS if getattr(self, n) is not None}

    def generation_used(self) -> dict[str, float]:
        """The settings in effect: this request's values over IndexTTS2's defaults."""
        return {**{n: float(v) for n, v in GENERATION_DEFAULTS.items()}, **self.generation_overrides()}

    @property
    def output_spec(self) -> OutputSpec:
        return OutputSpec(format=self.output_format, sample_rate=self.sample_rate, channels=self.channels,
                          bitrate_kbps=self.bitrate_kbps, loudness_lufs=self.loudness,
                          true_peak_dbtp=self.true_peak_dbtp)

    def output_location(self, default_bucket: str, extension: str | None = None) -> S3Location:
        """The bucket and base key; the stored key adds the audio's sha256 (storage.content_addressed)."""
        prefix = self.output_key_prefix or "tts"
        ext = extension or FORMATS[self.output_format].extension
        return S3Location(self.output_bucket or default_bucket, f"{prefix}/{self.request_id}.{ext}")

    def segment_location(self, default_bucket: str, index: int) -> S3Location:
        """Base key of a streamed segment, next to the final audio: ``<prefix>/<request_id>/segment-NNNN.<ext>``."""
        base = self.output_location(default_bucket)
        stem = base.key.rsplit(".", 1)[0]
        return S3Location(base.bucket, f"{stem}/segment-{index:04d}.{FORMATS[self.output_format].extension}")


def validate_request(record: dict[str, Any]) -> TtsRequest:
    """Raise TtsError(text_too_long | invalid_request) with a message naming the fields."""
    text = record.get("text")
    if isinstance(text, str) and len(text.strip()) > MAX_TEXT_CHARS:
        raise TtsError(
            ErrorCode.TEXT_TOO_LONG, f"text has {len(text.strip())} characters; the limit is {MAX_TEXT_CHARS}"
        )
    try:
        return TtsRequest.model_validate(record)
    except ValidationError as exc:
        # Name fields and rules, never echo the input (it may be huge or sensitive).
        parts = []
        for err in exc.errors(include_input=False, include_url=False):
            where = ".".join(str(p) for p in err["loc"]) or "request"
            parts.append(f"{where}: {err['msg']}")
        raise TtsError(ErrorCode.INVALID_REQUEST, "; ".join(parts)) from None
