"""Validation: every bad field gets a stable code and a message naming it; good requests pass."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from processor.errors import ErrorCode, TtsError
from processor.request import OutputPolicy, check_prefix, outcome_id, parse_s3_uri, validate_request

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


# ---------------------------------------------------------------- untrusted input (issue 11)

@pytest.mark.parametrize("request_id", ["a" * 129, "x" * 600_000, "", "ü", "a/b", "a b", "a\x00b", "~x"])
def test_request_ids_outside_the_charset_or_length_are_invalid(request_id: str) -> None:
    err = check(request_id=request_id)
    assert err.code is ErrorCode.INVALID_REQUEST and "request_id" in err.message
    assert len(err.message) < 500


def test_outcome_id_is_the_id_when_valid_and_a_short_stand_in_otherwise() -> None:
    assert outcome_id("r-1.a:b_C", "t-0-1") == "r-1.a:b_C"
    huge = outcome_id("x" * 600_000, "t-0-1")
    assert len(huge) <= 128 and huge.startswith("~") and huge != outcome_id("x" * 600_001, "t-0-1")
    assert outcome_id(None, "t-0-7") == "~unidentified~t-0-7"
    assert outcome_id("ü/\x00", "t-0-1").startswith("~___~")
    for raw in ("x" * 600_000, None, "a b", ""):  # a stand-in can never be mistaken for a valid id
        with pytest.raises(TtsError):
            validate_request({**BASE, "request_id": outcome_id(raw, "t-0-1")})


def test_emotion_vector_bound_survives_avro_float32() -> None:
    as_float32 = struct.unpack("<f", struct.pack("<f", 1.2))[0]
    assert as_float32 > 1.2
    req = validate_request({**BASE, "emotion_vector": [as_float32] + [0.0] * 7})
    assert req.emotion_vector is not None
    assert check(emotion_vector=[1.21] + [0.0] * 7).code is ErrorCode.INVALID_REQUEST


@pytest.mark.parametrize("field,millis", [
    ("deadline", 2**63 - 1), ("deadline", -(2**63)), ("created_at", 2**63 - 1), ("deadline", 253402300800000),
])
def test_timestamps_no_datetime_can_hold_are_invalid_requests(field: str, millis: int) -> None:
    err = check(**{field: millis})
    assert err.code is ErrorCode.INVALID_REQUEST and field in err.message


def test_created_at_in_the_future_is_refused_instead_of_dodging_the_age_check() -> None:
    now = datetime(2026, 11, 29, tzinfo=UTC)
    far = int(datetime(9999, 1, 1, tzinfo=UTC).timestamp() * 1000)
    with pytest.raises(TtsError) as info:
        validate_request({**BASE, "created_at": far}, now=now)
    assert info.value.code is ErrorCode.INVALID_REQUEST and "created_at" in info.value.message
    slightly_ahead = now + timedelta(minutes=5)  # producer clocks may run a little ahead
    assert validate_request({**BASE, "created_at": slightly_ahead}, now=now).created_at == slightly_ahead


@pytest.mark.parametrize("uri", [
    "s3://voices/a/../b.wav", "s3://voices/a//b.wav", "s3://voices/./b.wav", "s3://voices/a\x00b.wav",
    "s3://voices/a\nb.wav", "s3://voices/" + "k" * 1025, "s3://voices//abs.wav", "s3://voices/..",
])
def test_keys_storage_would_reject_are_invalid_before_any_call(uri: str) -> None:
    with pytest.raises(ValueError):
        parse_s3_uri(uri)
    assert check(voice=uri).code is ErrorCode.INVALID_REQUEST


def test_unicode_keys_are_fine() -> None:
    assert parse_s3_uri("s3://voices/声音/alice 1.wav").key == "声音/alice 1.wav"


POLICY = OutputPolicy.of("out", ["extra-out"], ["tts", "team/a"], reserved=["voices", "dead-letters"])


@pytest.mark.parametrize("over,key", [
    ({}, "out/tts/r-1.wav"),
    ({"output_key_prefix": "tts/sub"}, "out/tts/sub/r-1.wav"),
    ({"output_key_prefix": "team/a", "output_bucket": "extra-out"}, "extra-out/team/a/r-1.wav"),
])
def test_output_policy_allows_configured_buckets_and_prefixes(over: dict[str, Any], key: str) -> None:
    loc = POLICY.location(validate_request({**BASE, **over}))
    assert f"{loc.bucket}/{loc.key}" == key


@pytest.mark.parametrize("over,code", [
    ({"output_bucket": "voices"}, ErrorCode.BUCKET_NOT_ALLOWED),       # readable is not writable
    ({"output_key_prefix": "voices/narrator", "request_id": "reference"}, ErrorCode.OUTPUT_NOT_ALLOWED),
    ({"output_key_prefix": "voices"}, ErrorCode.OUTPUT_NOT_ALLOWED),
    ({"output_key_prefix": "dead-letters/t"}, ErrorCode.OUTPUT_NOT_ALLOWED),
    ({"output_key_prefix": "elsewhere"}, ErrorCode.OUTPUT_NOT_ALLOWED),
    ({"output_key_prefix": "team"}, ErrorCode.OUTPUT_NOT_ALLOWED),     # a parent of an allowed prefix
    ({"output_key_prefix": "ttsx"}, ErrorCode.OUTPUT_NOT_ALLOWED),     # a sibling sharing its letters
])
def test_output_policy_refuses_everything_else(over: dict[str, Any], code: ErrorCode) -> None:
    with pytest.raises(TtsError) as info:
        POLICY.location(validate_request({**BASE, **over}))
    assert info.value.code is code and not info.value.retriable


def test_reserved_prefix_inside_an_output_prefix_stays_reserved() -> None:
    policy = OutputPolicy.of("out", [], ["data"], reserved=["data/voices"])
    with pytest.raises(TtsError):
        policy.location(validate_request({**BASE, "output_key_prefix": "data", "request_id": "voices"}))
    assert policy.location(validate_request({**BASE, "output_key_prefix": "data"})).key == "data/r-1.wav"


@pytest.mark.parametrize("prefix", ["a/./b", "a//b", "a/b c", "a\x00", "ü", "x" * 300])
def test_prefix_components_are_validated_not_concatenated(prefix: str) -> None:
    assert check(output_key_prefix=prefix).code is ErrorCode.INVALID_REQUEST


@pytest.mark.parametrize("text,words", [
    ("hello\x00world", "control"), ("\x1b[31mred", "control"),
    ("🙂🙃🎉", "nothing to speak"), ("... !!! ???", "nothing to speak"),
])
def test_texts_with_controls_or_nothing_to_speak_are_invalid(text: str, words: str) -> None:
    err = check(text=text)
    assert err.code is ErrorCode.INVALID_REQUEST and words in err.message


@pytest.mark.parametrize("text", ["Hello, мир! 你好 مرحبا 🙂", "line one\nline two\ttabbed", "42"])
def test_mixed_scripts_and_line_breaks_are_fine(text: str) -> None:
    assert validate_request({**BASE, "text": text}).text == text


def test_a_trailing_newline_is_not_part_of_any_name() -> None:
    """``$`` also matches before a final newline: every name check must match the whole string."""
    stand_in = outcome_id("r-1\n", "req-0-7")
    assert stand_in != "r-1\n" and "\n" not in stand_in
    for uri in ("s3://bucket\n/voice.wav", "s3://bucket/tts\n/voice.wav"):
        with pytest.raises(ValueError):
            parse_s3_uri(uri)
    assert check(voice="narrator\n").code is ErrorCode.INVALID_REQUEST
    with pytest.raises(ValueError):
        check_prefix("teams\n")
    assert check_prefix("teams") == "teams"
