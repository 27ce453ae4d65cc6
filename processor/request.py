"""Decode → validate: a Kafka record becomes a `TtsRequest` or a stable error, never a crash.

Bounds are enforced here, before anything touches storage or the GPU. The console validates
uploads and forms with these same rules.
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from processor.audio import DEFAULT_TRUE_PEAK_DBTP, FORMATS, OutputFormat, OutputSpec, SubtitleFormat, spec_problems
from processor.errors import ErrorCode, TtsError

MAX_TEXT_CHARS = 10_000
# The documented request_id contract (schemas/TtsRequest.avsc). The id is copied into the result's key
# and value and into the object key, so it must be short and inert; anything else is invalid_request.
REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
_REQUEST_ID = re.compile(REQUEST_ID_PATTERN)
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PRESET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_PREFIX_SEGMENT = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_PREFIX_CHARS = 256
# C0/C1 control characters, except tab and line breaks: nothing a speaker can say, often an exploit.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
MAX_KEY_BYTES = 1024
# What check_key refuses, as C-speed tests: it runs several times per request (intake, output policy,
# before every storage call), and a per-character Python loop cost more than the rest of the check.
_KEY_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_BAD_SEGMENTS = frozenset(("", ".", ".."))
# Avro `float` carries emotion weights: 1.2 arrives as 1.2000000477. Bounds are checked with this slack.
_FLOAT32_SLACK = 1e-6
# A producer's clock may run a little ahead; a created_at further in the future would dodge the
# max-age check for as long as it likes, so it is refused.
CREATED_AT_MAX_SKEW = timedelta(hours=1)

EmotionMode = Literal["same_as_voice", "reference", "vector", "text"]


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def check_key(key: str) -> str:
    """Raise ValueError unless ``key`` is an object key we are willing to send to storage.

    S3-compatible stores reject (or, worse, normalize) keys with empty, '.' or '..' segments, control
    characters or a NUL; such a key is the request's fault and must fail at once as invalid_request,
    not be retried as a storage outage.
    """
    if not key:
        raise ValueError("object key is empty")
    try:
        # An ASCII str is its own UTF-8 (isascii() reads a flag CPython keeps): no copy to count bytes.
        size = len(key) if key.isascii() else len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError("object key is not valid UTF-8") from None
    if size > MAX_KEY_BYTES:
        raise ValueError(f"object key is {size} bytes; the limit is {MAX_KEY_BYTES}")
    if _KEY_CONTROL.search(key):
        raise ValueError("object key contains control characters")
    if not _BAD_SEGMENTS.isdisjoint(key.split("/")):
        raise ValueError("object key has an empty, '.' or '..' segment (leading, trailing or double '/')")
    return key


def check_bucket(bucket: str) -> str:
    if not _BUCKET.fullmatch(bucket):
        raise ValueError("invalid bucket name")
    return bucket


def parse_s3_uri(uri: str) -> S3Location:
    if not uri.startswith("s3://"):
        scheme = uri.split("://", 1)[0][:16] if "://" in uri else "none"
        raise ValueError(f"only s3:// URIs are accepted (got scheme '{scheme}')")
    bucket, _, key = uri[5:].partition("/")
    if not _BUCKET.fullmatch(bucket):
        raise ValueError("invalid bucket name in s3 URI")
    if not key or key.endswith("/"):
        raise ValueError("s3 URI must name an object key")
    check_key(key)
    return S3Location(bucket, key)


def check_prefix(prefix: str) -> str:
    """A key prefix made of plain segments ([A-Za-z0-9_.-], never '.' or '..'), without outer slashes."""
    prefix = prefix.strip("/")
    if not prefix or len(prefix) > MAX_PREFIX_CHARS:
        raise ValueError(f"prefix must have 1-{MAX_PREFIX_CHARS} characters")
    for seg in prefix.split("/"):
        if seg in (".", "..") or not _PREFIX_SEGMENT.fullmatch(seg):
            raise ValueError("prefix segments may use [A-Za-z0-9_.-] (1-64 each), no empty, '.' or '..' segments")
    return prefix


def outcome_id(raw: object, origin: str) -> str:
    """The request_id an outcome may carry for a record, whatever the record held.

    A valid id is itself. Anything else (missing, too long, outside the charset) becomes a short,
    readable stand-in that can never equal a valid id ('~' is outside the charset): an excerpt plus a
    hash of the whole, so the producer can still match it. ``origin`` (topic-partition-offset) names
    records without any id.
    """
    if isinstance(raw, str) and _REQUEST_ID.fullmatch(raw):
        return raw
    if not isinstance(raw, str) or not raw:
        return f"~unidentified~{origin[:200]}"
    excerpt = re.sub(r"[^A-Za-z0-9._:-]", "_", raw[:48])
    digest = hashlib.sha256(raw.encode("utf-8", "replace")).hexdigest()[:16]
    return f"~{excerpt}~{digest}"


# IndexTTS2's own generation defaults (indextts.infer_v2.infer): what a null field in a request means.
GENERATION_DEFAULTS: dict[str, float | int] = {
    "top_p": 0.8, "top_k": 30, "temperature": 0.8, "num_beams": 3, "repetition_penalty": 10.0, "max_mel_tokens": 1500,
}


class TtsRequest(BaseModel):
    """Mirror of schemas/TtsRequest.avsc with the processor's bounds."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    request_id: str = Field(pattern=REQUEST_ID_PATTERN)
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
    # IndexTTS-2.5's duration factor: < 1 speaks faster. Engines without speed control take 1.0 only.
    speed: float = Field(default=1.0, ge=0.5, le=2.0, allow_inf_nan=False)
    # Text language; None detects it (or uses the worker's INDEX_TTS_LANGUAGE).
    language: Literal["zh", "en", "ja", "es", "ar"] | None = None
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
        if _CONTROL.search(v):
            raise ValueError("text contains control characters (other than tab and line breaks)")
        if not any(unicodedata.category(c)[0] in "LN" for c in v):
            raise ValueError("text has nothing to speak (no letters or digits)")
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
        elif not _PRESET.fullmatch(v):
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
        if not all(math.isfinite(x) and 0.0 <= x <= 1.2 + _FLOAT32_SLACK for x in v):
            raise ValueError("values must be finite and within [0, 1.2]")
        if sum(v) <= 0.0:
            raise ValueError("at least one emotion weight must be positive")
        return v

    @field_validator("output_bucket")
    @classmethod
    def _bucket(cls, v: str | None) -> str | None:
        return None if v is None else check_bucket(v)

    @field_validator("output_key_prefix")
    @classmethod
    def _prefix(cls, v: str | None) -> str | None:
        return None if v is None else check_prefix(v)

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


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _instant(name: str, value: object) -> datetime | None:
    """A timestamp field as an aware datetime: millis since the epoch (how the worker's codec hands them
    over, so that out-of-range values reach validation instead of failing the decode) or a datetime."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return _EPOCH + timedelta(milliseconds=value)
        except OverflowError:
            raise TtsError(ErrorCode.INVALID_REQUEST, f"{name}: timestamp out of range") from None
    raise TtsError(ErrorCode.INVALID_REQUEST, f"{name}: not a timestamp")


def validate_request(record: dict[str, Any], *, now: datetime | None = None) -> TtsRequest:
    """Raise TtsError(text_too_long | invalid_request) with a message naming the fields."""
    record = dict(record)
    for name in ("deadline", "created_at"):
        record[name] = _instant(name, record.get(name))
    created = record["created_at"]
    if created is not None and created > (now or datetime.now(UTC)) + CREATED_AT_MAX_SKEW:
        raise TtsError(ErrorCode.INVALID_REQUEST,
                       f"created_at: lies more than {CREATED_AT_MAX_SKEW} in the future")
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


@dataclass(frozen=True)
class OutputPolicy:
    """Where a request may have its audio written: checked at intake, before any download or GPU time.

    Writable buckets and key prefixes are configured apart from the buckets references may be read
    from (S3_OUTPUT_BUCKETS / S3_OUTPUT_PREFIXES vs S3_ALLOWED_BUCKETS). Reserved prefixes (voice
    presets, dead-letter claim checks) are never writable by a request, even when a configured output
    prefix would contain them.
    """

    default_bucket: str
    buckets: frozenset[str]
    prefixes: tuple[str, ...]
    reserved: tuple[str, ...] = ()

    @classmethod
    def of(cls, default_bucket: str, buckets: Iterable[str], prefixes: Iterable[str],
           reserved: Iterable[str] = ()) -> OutputPolicy:
        return cls(default_bucket, frozenset(buckets) | {default_bucket},
                   tuple(check_prefix(p) for p in prefixes), tuple(p.strip("/") for p in reserved if p.strip("/")))

    def location(self, req: TtsRequest) -> S3Location:
        """The request's output location, or TtsError(bucket_not_allowed | output_not_allowed)."""
        loc = req.output_location(self.default_bucket)
        if loc.bucket not in self.buckets:
            raise TtsError(ErrorCode.BUCKET_NOT_ALLOWED, f"output bucket '{loc.bucket}' is not in S3_OUTPUT_BUCKETS")
        prefix = loc.key.rpartition("/")[0]
        if not _under(prefix, self._prefix_roots):
            raise TtsError(ErrorCode.OUTPUT_NOT_ALLOWED,
                           f"output_key_prefix '{prefix}' is not under S3_OUTPUT_PREFIXES ({', '.join(self.prefixes)})")
        # Everything written for a request lies at or under <prefix>/<request_id> (whatever the naming of
        # the final object), so that is what must stay clear of the reserved prefixes.
        written = f"{prefix}/{req.request_id}"
        if _under(prefix, self._reserved_roots) or _under(written, self._reserved_roots):
            raise TtsError(ErrorCode.OUTPUT_NOT_ALLOWED, f"output_key_prefix '{prefix}' overlaps a reserved prefix")
        try:
            check_key(loc.key)
        except ValueError as exc:
            raise TtsError(ErrorCode.INVALID_REQUEST, f"output key: {exc}") from None
        return loc

    # Each prefix with its trailing '/', for _under: one C-level startswith per check, no generator.
    @cached_property
    def _prefix_roots(self) -> tuple[str, ...]:
        return tuple(f"{p}/" for p in self.prefixes)

    @cached_property
    def _reserved_roots(self) -> tuple[str, ...]:
        return tuple(f"{r}/" for r in self.reserved)


def _under(path: str, roots: tuple[str, ...]) -> bool:
    """``path`` is a root or lies below one; ``roots`` carry their trailing '/' ('a/b' is under 'a/',
    'ab' is not)."""
    return f"{path}/".startswith(roots)
