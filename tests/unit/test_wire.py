"""Both wire formats, both directions, across two Avro implementations (fastavro and Apache avro)."""

from __future__ import annotations

import io
import json
import struct
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import avro.io
import avro.schema
import pytest

from processor.wire import Codec, DecodeError, RegistryUnavailable, SchemaRegistry, schema_fingerprint, schema_json

REQUEST = {
    "request_id": "r-1", "text": "你好, hello", "voice": "s3://voices/a.wav", "emotion_reference": None,
    "emotion_alpha": 0.5, "emotion_vector": [0.1, 0, 0, 0, 0, 0, 0, 0.9], "emotion_text": None,
    "use_emotion_text": False, "use_random": True, "max_text_tokens_per_segment": 80, "top_p": 0.9, "top_k": None,
    "temperature": None, "num_beams": 2, "repetition_penalty": None, "max_mel_tokens": None,
    "interval_silence_ms": 100, "output_bucket": None, "output_key_prefix": "x", "workflow_id": "wf",
    "stage_name": None, "deadline": datetime(2030, 1, 1, tzinfo=UTC), "created_at": None,
    "output_format": "opus", "sample_rate": 24000, "channels": 1, "bitrate_kbps": None, "loudness": -16.0,
    "true_peak_dbtp": -1.0, "subtitles": "vtt", "stream_segments": True, "speed": 0.9, "language": "es",
}


def crc64_avro(data: bytes) -> int:
    """The Avro spec's reference CRC-64-AVRO, written independently of fastavro to check it."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for b in data:
        fp = (fp >> 8) ^ table[(fp ^ b) & 0xFF]
    return fp


def apache_write(name: str, record: dict[str, object]) -> bytes:
    schema = avro.schema.parse(json.dumps(schema_json(name)))
    buf = io.BytesIO()
    avro.io.DatumWriter(schema).write(record, avro.io.BinaryEncoder(buf))
    return buf.getvalue()


def apache_read(name: str, body: bytes) -> dict[str, object]:
    schema = avro.schema.parse(json.dumps(schema_json(name)))
    return avro.io.DatumReader(schema, schema).read(avro.io.BinaryDecoder(io.BytesIO(body)))  # type: ignore[no-any-return]


def test_fingerprint_matches_the_spec_algorithm() -> None:
    from fastavro.schema import to_parsing_canonical_form

    canonical = to_parsing_canonical_form(schema_json("TtsRequest")).encode()
    assert schema_fingerprint(schema_json("TtsRequest")) == struct.pack("<Q", crc64_avro(canonical))


def test_single_object_round_trip() -> None:
    codec = Codec("TtsRequest")
    data = codec.encode(REQUEST)
    assert data[:2] == b"\xc3\x01"
    out = codec.decode(data)
    assert out["text"] == "你好, hello" and out["deadline"] == REQUEST["deadline"]
    assert out["emotion_vector"] == pytest.approx(REQUEST["emotion_vector"])


def test_payload_written_by_apache_avro_is_read_by_the_processor() -> None:
    body = apache_write("TtsRequest", REQUEST)
    framed = b"\xc3\x01" + struct.pack("<Q", crc64_avro(
        __import__("fastavro").schema.to_parsing_canonical_form(schema_json("TtsRequest")).encode())) + body
    out = Codec("TtsRequest").decode(framed)
    assert out["request_id"] == "r-1" and out["num_beams"] == 2 and out["output_key_prefix"] == "x"


def test_processor_payload_is_read_by_apache_avro() -> None:
    data = Codec("TtsRequest").encode(REQUEST)
    out = apache_read("TtsRequest", data[10:])
    assert out["text"] == "你好, hello" and out["use_random"] is True


# The registry client's own retries (3, backing off from 1 s) without the waiting: what these tests
# check is what an unreachable registry leads to, not the client's back-off.
QUICK_RETRIES = {"retries.wait.ms": 1, "retries.max.wait.ms": 5}


def test_registry_framing_round_trip_and_evolution() -> None:
    registry = SchemaRegistry("mock://wire-test")
    codec = Codec("TtsRequest", registry, "tts.requests-value")
    data = codec.encode(REQUEST)
    assert data[0] == 0 and len(data) > 5
    schema_id = struct.unpack(">I", data[1:5])[0]
    assert codec.decode(data)["request_id"] == "r-1"
    # An older producer that knows only three fields: its schema is registered, defaults fill the rest.
    old = {"type": "record", "name": "TtsRequest", "namespace": "tts.processor.v1", "fields": [
        {"name": "request_id", "type": "string"}, {"name": "text", "type": "string"},
        {"name": "voice", "type": "string"}]}
    old_id = registry.register("tts.requests-value-old", old)
    assert old_id != schema_id
    body = apache_write_schema(old, {"request_id": "old-1", "text": "hi", "voice": "alice"})
    out = codec.decode(b"\x00" + struct.pack(">I", old_id) + body)
    assert out["request_id"] == "old-1" and out["emotion_alpha"] == 0.65 and out["max_text_tokens_per_segment"] == 120


def apache_write_schema(schema: dict[str, object], record: dict[str, object]) -> bytes:
    parsed = avro.schema.parse(json.dumps(schema))
    buf = io.BytesIO()
    avro.io.DatumWriter(parsed).write(record, avro.io.BinaryEncoder(buf))
    return buf.getvalue()


@pytest.mark.parametrize("data,reason", [
    (b"", "empty"),
    (b"{\"request_id\": \"json\"}", "not Avro"),
    (b"\xc3\x01" + b"\x00" * 8 + b"abc", "unknown schema fingerprint"),
    (b"\x00\x00\x00\x00\x01abc", "no SCHEMA_REGISTRY_URL"),
])
def test_undecodable_bytes_raise_decode_error(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        Codec("TtsRequest").decode(data)


def test_unknown_schema_id_is_a_decode_error_naming_the_id() -> None:
    codec = Codec("TtsRequest", SchemaRegistry("mock://wire-unknown-id"), "tts.requests-value")
    with pytest.raises(DecodeError, match="schema id 424242 is unknown to the registry"):
        codec.decode(b"\x00" + struct.pack(">I", 424242) + b"abc")


def test_unreachable_registry_is_not_a_decode_error() -> None:
    """A registry outage says nothing about the record: it must not be dead-lettered."""
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    codec = Codec("TtsRequest", SchemaRegistry(f"http://127.0.0.1:{port}", QUICK_RETRIES), "tts.requests-value")
    with pytest.raises(RegistryUnavailable, match="schema id 7"):
        codec.decode(b"\x00" + struct.pack(">I", 7) + b"abc")


def test_truncated_and_trailing_payloads_are_rejected() -> None:
    codec = Codec("TtsRequest")
    data = codec.encode(REQUEST)
    with pytest.raises(DecodeError):
        codec.decode(data[:-7])
    with pytest.raises(DecodeError, match="trailing"):
        codec.decode(data + b"\x00\x01")


def test_a_registry_outage_is_retried_never_dead_lettered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the processor: while the registry is unreachable the record stays uncommitted (the
    worker rewinds and retries); once it answers, the request is served."""
    import socket

    from processor import pipeline
    from tests.support.rig import CODECS, VOICE, Rig
    from tests.support.workers import request

    monkeypatch.setattr(pipeline, "REGISTRY_RETRY_SECONDS", 0.05)
    up = Codec("TtsRequest", SchemaRegistry("mock://outage"), "req-value")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        unreachable = SchemaRegistry(f"http://127.0.0.1:{s.getsockname()[1]}", QUICK_RETRIES)
    asked: list[int] = []
    ask = unreachable.writer_schema

    def counted(schema_id: int) -> Any:
        asked.append(schema_id)
        return ask(schema_id)

    monkeypatch.setattr(unreachable, "writer_schema", counted)
    down = Codec("TtsRequest", unreachable, "req-value")
    rig = Rig(tmp_path, partitions=1)
    rig.broker.produce("req", 0, up.encode(request("framed", VOICE)), b"framed")
    rig.processor.stages.codecs = {**CODECS, "TtsRequest": down}
    rig.start()
    deadline = time.monotonic() + 30
    while len(asked) < 4:  # the record is taken again after each rewind: retried, never given up on
        assert time.monotonic() < deadline, f"the record was retried {len(asked)} times"
        rig.processor.run_once()
    assert rig.committed(0) == 0 and not rig.broker.read("dlq") and not rig.broker.read("res")
    rig.processor.stages.codecs = {**CODECS, "TtsRequest": up}
    rig.step_until(lambda: rig.committed(0) == 1, timeout=60)
    rig.stop()
    assert [r["status"] for r in rig.results()] == ["success"]
