"""Issue 12: request fields speed/language, the capability refusal per engine, and old records."""

from __future__ import annotations

import io
from typing import Any

import fastavro
import pytest

from devstack.schema_compat import current_schemas, released_schemas
from processor.capabilities import check_capabilities
from processor.engine.base import ModelInfo
from processor.engine.families import INDEXTTS2, INDEXTTS25, detect_language
from processor.errors import ErrorCode, TtsError
from processor.request import validate_request

V2 = ModelInfo("indextts2", "2.0", "cpu", "fp32", engine="indextts2", capabilities=INDEXTTS2)
V25 = ModelInfo("indextts2.5", "2.5", "cpu", "fp32", engine="indextts2.5", capabilities=INDEXTTS25)
BASE = {"request_id": "r1", "text": "Hello.", "voice": "alice"}


def refused(record: dict[str, Any], info: ModelInfo) -> str:
    with pytest.raises(TtsError) as err:
        check_capabilities(validate_request({**BASE, **record}), info)
    assert err.value.code is ErrorCode.UNSUPPORTED_CAPABILITY and not err.value.retriable
    return err.value.message


@pytest.mark.parametrize(
    ("record", "info", "words"),
    [
        ({"emotion_text": "happy"}, V25, ["IndexTTS-2.5", "emotion mode 'text'"]),
        ({"use_emotion_text": True}, V25, ["emotion mode 'text'"]),
        ({"speed": 0.8}, V2, ["IndexTTS2", "speed 0.8", "no speed control"]),
        ({"language": "ja"}, V2, ["language 'ja'", "zh, en"]),
        ({"language": "es"}, V2, ["language 'es'"]),
        ({"language": "ar"}, V2, ["language 'ar'"]),
    ],
)
def test_each_capability_refusal(record: dict[str, Any], info: ModelInfo, words: list[str]) -> None:
    message = refused(record, info)
    for word in words:
        assert word in message


@pytest.mark.parametrize(
    ("record", "info"),
    [
        ({"emotion_text": "happy"}, V2),
        ({"speed": 0.8, "language": "ja"}, V25),
        ({"speed": 1.0, "language": "en"}, V2),
        ({"emotion_vector": [0, 0, 0.5, 0, 0, 0, 0, 0], "language": "ar", "speed": 2.0}, V25),
        ({}, V2),
        ({}, V25),
    ],
)
def test_what_the_engine_can_do_passes(record: dict[str, Any], info: ModelInfo) -> None:
    check_capabilities(validate_request({**BASE, **record}), info)


@pytest.mark.parametrize(("field", "value"), [("speed", 0.4), ("speed", 2.5), ("speed", float("nan")),
                                              ("language", "fr"), ("language", "")])
def test_out_of_bounds_speed_and_language_are_invalid(field: str, value: Any) -> None:
    with pytest.raises(TtsError) as err:
        validate_request({**BASE, field: value})
    assert err.value.code is ErrorCode.INVALID_REQUEST and field in err.value.message


def test_an_old_record_still_decodes_with_the_defaults() -> None:
    """A request written with the released schema (before speed/language) reads as speed 1.0, no language."""
    old, new = released_schemas()["TtsRequest"], current_schemas()["TtsRequest"]
    assert "speed" not in {f["name"] for f in old["fields"]}
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(old), {**BASE, "text": "你好, world."})
    buf.seek(0)
    record = fastavro.schemaless_reader(buf, fastavro.parse_schema(old), fastavro.parse_schema(new))
    req = validate_request(record)
    assert (req.speed, req.language) == (1.0, None)
    check_capabilities(req, V2)
    check_capabilities(req, V25)


@pytest.mark.parametrize(
    ("text", "lang"),
    [("Hello there, how are you?", "en"), ("Hola, ¿qué tal?", "es"), ("Buenos días a todos los amigos", "es"),
     ("你好世界", "zh"), ("東京へようこそ", "ja"), ("カタカナ", "ja"), ("مرحبا", "ar"), ("12345", "en")],
)
def test_language_detection(text: str, lang: str) -> None:
    assert detect_language(text) == lang
