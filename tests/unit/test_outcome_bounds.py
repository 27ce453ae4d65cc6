"""Every outcome has a size bound, whatever the request held; reference audio is bounded before decoding."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from processor import events
from processor.errors import ErrorCode, TtsError
from processor.references import check_audio
from processor.request import MAX_TEXT_CHARS, outcome_id, validate_request
from processor.wire import Codec

RESULT = Codec("TtsResult")
ORIGIN = events.Origin("t" * 249, 2**31 - 1, 2**63 - 1)


def largest_valid_request() -> dict[str, Any]:
    return {
        "request_id": "r" * 128, "text": "字" * MAX_TEXT_CHARS, "voice": "s3://" + "b" * 63 + "/" + "语" * 340,
        "emotion_text": "怒" * 1000, "workflow_id": "w" * 256, "stage_name": "s" * 256,
        "output_key_prefix": "/".join(["p" * 63] * 4),
    }


def test_error_result_for_any_request_is_small() -> None:
    req = validate_request(largest_valid_request())
    err = TtsError(ErrorCode.ENGINE_ERROR, "boom: " + "€" * 100_000)
    value = RESULT.encode(events.error_result(req.request_id, ORIGIN, err, worker_id="w" * 200, req=req))
    assert len(value) < 32 * 1024


def test_error_result_for_a_huge_invalid_id_is_small() -> None:
    raw = "x" * 600_000
    with pytest.raises(TtsError) as info:
        validate_request({"request_id": raw, "text": "hi", "voice": "narrator"})
    rid = outcome_id(raw, "t-0-1")
    value = RESULT.encode(events.error_result(rid, ORIGIN, info.value, worker_id="w"))
    assert len(value) + len(rid.encode()) < 4 * 1024


def test_bounded_says_what_it_cut() -> None:
    assert events.bounded("short", 10) == "short"
    cut = events.bounded("x" * 5000, 100)
    assert len(cut) <= 100 and "more]" in cut


def wav(rate: int = 24000, channels: int = 1, seconds: float = 1.0) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.zeros((int(rate * seconds), channels), dtype="int16"), rate, format="WAV")
    return buf.getvalue()


@pytest.mark.parametrize("data,words", [
    (wav(rate=384_000), "sample rate"), (wav(rate=4_000), "sample rate"), (wav(channels=8), "channels"),
    (wav(seconds=0.05), "lasts"), (wav(seconds=61, rate=8000), "lasts"), (b"RIFF" + b"\x00" * 40, "not decodable"),
    (b"", "not decodable"),
])
def test_reference_bounds_are_checked_from_the_header(data: bytes, words: str) -> None:
    with pytest.raises(TtsError) as info:
        check_audio(data, "clip")
    assert info.value.code is ErrorCode.INVALID_REFERENCE_AUDIO and words in info.value.message


def test_ordinary_references_pass() -> None:
    for data in (wav(), wav(rate=48_000, channels=2, seconds=10), wav(rate=16_000, seconds=0.3)):
        check_audio(data, "clip")


def test_segment_text_in_progress_events_and_results_is_bounded() -> None:
    from processor.audio import SegmentTiming

    one_long_segment = SegmentTiming(1, "字" * MAX_TEXT_CHARS, 0.0, 1.0)
    progress = events.progress_event("r-1", 1, 1, "w", 0.1, timing=one_long_segment)
    assert len(progress["text"]) <= events.MAX_SEGMENT_TEXT_CHARS
    assert len(Codec("TtsProgress").encode(progress)) < 16 * 1024
    assert len(events.timing_record(one_long_segment)["text"]) <= events.MAX_SEGMENT_TEXT_CHARS
