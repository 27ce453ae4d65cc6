"""Validation: every bad field gets a stable code and a message naming it; good requests pass."""

from __future__ import annotations

from typing import Any

import pytest

from processor.errors import ErrorCode, TtsError
from processor.request import parse_s3_uri, validate_request

BASE: dict[str, Any] = {"request_id": "r-1", "text": "hello world", "voice": "s3://voices/alice.wav"}


def check(**over: Any) -> TtsError:
    with pytest.raises(TtsError) as info:
        validate_request({**BASE, **over})
    return info.value


def test_minimal_request_gets_defaults() -> None:
    req = validate_request(BASE)
    assert req.emotion_mode == "same_as_voice" and req.emotion_alpha == 0.65
    assert req.max_text_tokens_per_segment == 120
    loc = req.output_location("out")
    assert (loc.bucket, loc.key) == ("out", "tts/r-1.wav")
    assert req.seed == validate_request(BASE).seed  # deterministic


def test_generation_used_is_the_request_over_the_model_defaults() -> None:
    assert validate_request(BASE).generation_overrides() == {}
    used = validate_request({**BASE, "top_k": 5, "max_mel_tokens": 400}).generation_used()
    assert used == {"top_p": 0.8, "top_k": 5.0, "temperature": 0.8, "num_beams": 3.0,
                    "repetition_penalty": 10.0, "max_mel_tokens": 400.0}


@pytest.mark.parametrize("over,mode", [
    ({"emotion_reference": "s3://voices/angry.wav"}, "reference"),
    ({"emotion_vector": [0, 0.8, 0, 0, 0, 0, 0, 0]}, "vector"),
    ({"emotion_text": "furious"}, "text"),
    ({"use_emotion_text": True}, "text"),
    ({"voice": "narrator_en"}, "same_as_voice"),
])
def test_emotion_modes(over: dict[str, Any], mode: str) -> None:
    assert validate_request({**BASE, **over}).emotion_mode == mode


@pytest.mark.parametrize("over,field", [
    ({"emotion_vector": [0.1] * 7}, "emotion_vector"),
    ({"emotion_vector": [float("nan")] + [0.1] * 7}, "emotion_vector"),
    ({"emotion_vector": [0.0] * 8}, "emotion_vector"),
    ({"emotion_vector": [2.0] + [0.1] * 7}, "emotion_vector"),
    ({"emotion_alpha": 1.5}, "emotion_alpha"),
    ({"voice": "http://evil/x.wav"}, "voice"),
    ({"voice": "file:///etc/passwd"}, "voice"),
    ({"voice": "../etc"}, "voice"),
    ({"emotion_reference": "s3://Bad_Bucket/x.wav"}, "emotion_reference"),
    ({"request_id": "has space"}, "request_id"),
    ({"text": "   "}, "text"),
    ({"top_p": 0.0}, "top_p"),
    ({"num_beams": 50}, "num_beams"),
    ({"max_text_tokens_per_segment": 5}, "max_text_tokens_per_segment"),
    ({"output_key_prefix": "a/../b"}, "output_key_prefix"),
    ({"emotion_text": "x", "emotion_vector": [0.5] * 8}, "at most one"),
])
def test_invalid_fields_give_invalid_request(over: dict[str, Any], field: str) -> None:
    err = check(**over)
    assert err.code is ErrorCode.INVALID_REQUEST
    assert field in err.message
    assert not err.retriable


def test_too_long_text_has_its_own_code() -> None:
    err = check(text="字" * 10_001)
    assert err.code is ErrorCode.TEXT_TOO_LONG and "10001" in err.message


def test_message_never_echoes_the_input() -> None:
    secret_text = "SECRET value with spaces " + "x" * 50
    err = check(request_id=secret_text)
    assert secret_text not in err.message


def test_parse_s3_uri() -> None:
    loc = parse_s3_uri("s3://my-bucket/a/b.wav")
    assert (loc.bucket, loc.key, loc.uri) == ("my-bucket", "a/b.wav", "s3://my-bucket/a/b.wav")
    with pytest.raises(ValueError):
        parse_s3_uri("s3://my-bucket/")
