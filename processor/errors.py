"""Stable error codes: the contract downstream consumers switch on (``TtsResult.error_code``).

Exceptions are used inside the processor; at the boundary every failure becomes one of these codes
plus a human message. Never put secrets or raw credentials into a message.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    INVALID_REQUEST = "invalid_request"
    TEXT_TOO_LONG = "text_too_long"
    INVALID_REFERENCE_AUDIO = "invalid_reference_audio"
    REFERENCE_NOT_FOUND = "reference_not_found"
    REFERENCE_TOO_LARGE = "reference_too_large"
    BUCKET_NOT_ALLOWED = "bucket_not_allowed"
    OUTPUT_NOT_ALLOWED = "output_not_allowed"
    UNKNOWN_VOICE = "unknown_voice"
    OUT_OF_MEMORY = "out_of_memory"
    ENGINE_ERROR = "engine_error"
    STORAGE_ERROR = "storage_error"
    STORAGE_REJECTED = "storage_rejected"
    # The broker refused the request's outcome for good (larger than its topic takes): a small error
    # result stands in for it, so the record still gets exactly one outcome.
    OUTCOME_TOO_LARGE = "outcome_too_large"
    EXPIRED = "expired"
    TIMEOUT = "timeout"
    # The serving engine cannot do what the request asks (e.g. emotion text on IndexTTS-2.5, speed or
    # Japanese on IndexTTS2); refused before any download or GPU time.
    UNSUPPORTED_CAPABILITY = "unsupported_capability"
    # A failure nobody foresaw (a bug, a full disk): the request ends with it instead of the worker.
    INTERNAL_ERROR = "internal_error"
    UNSUPPORTED_FORMAT = "unsupported_format"


# Codes a retry cannot fix: the request itself is wrong. Everything else may be transient.
PERMANENT = frozenset(
    {
        ErrorCode.INVALID_REQUEST,
        ErrorCode.TEXT_TOO_LONG,
        ErrorCode.INVALID_REFERENCE_AUDIO,
        ErrorCode.REFERENCE_NOT_FOUND,
        ErrorCode.REFERENCE_TOO_LARGE,
        ErrorCode.BUCKET_NOT_ALLOWED,
        ErrorCode.OUTPUT_NOT_ALLOWED,
        ErrorCode.STORAGE_REJECTED,
        ErrorCode.OUTCOME_TOO_LARGE,
        ErrorCode.UNKNOWN_VOICE,
        ErrorCode.EXPIRED,
        ErrorCode.TIMEOUT,
        ErrorCode.UNSUPPORTED_FORMAT,
        ErrorCode.UNSUPPORTED_CAPABILITY,
    }
)


class TtsError(Exception):
    """A failure that ends one request with a stable code; the worker keeps serving."""

    def __init__(self, code: ErrorCode, message: str, *, retriable: bool | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retriable = (code not in PERMANENT) if retriable is None else retriable

    def __str__(self) -> str:
        return f"{self.code.value}: {self.message}"
