"""Output fields of requests, results and progress events: defaults keep today's behaviour, bad
combinations get invalid_request naming the field, old writers still decode, events round-trip."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fastavro
import pytest

from processor import events
from processor.audio import OutputSpec, SegmentTiming, encode_wav, render, speech_like_pcm
from processor.errors import ErrorCode, TtsError
from processor.request import S3Location, validate_request
from processor.storage import content_addressed
from processor.wire import SCHEMA_DIR, Codec

BASE: dict[str, Any] = {"request_id": "r-1", "text": "hello world", "voice": "s3://voices/alice.wav"}
ORIGIN = events.Origin("tts.requests", 0, 7)


def test_defaults_are_todays_wav() -> None:
    req = validate_request(BASE)
    assert req.output_spec == OutputSpec()
    assert (req.subtitles, req.stream_segments) == ("none", False)
    assert req.output_location("out").key == "tts/r-1.wav"


def test_keys_follow_the_format_and_sit_next_to_the_audio() -> None:
    req = validate_request({**BASE, "output_format": "opus", "output_key_prefix": "jobs/7"})
    sha = "ab" * 32
    assert content_addressed(req.output_location("out"), sha).key == f"jobs/7/r-1/{sha}.opus"
    assert content_addressed(req.output_location("out", "srt"), sha).key == f"jobs/7/r-1/{sha}.srt"
    from processor.output import segment_location, subtitle_location
    base = req.output_location("out")
    assert segment_location(base, 3, sha).key == f"jobs/7/r-1/segment-0003/{sha}.opus"
    assert subtitle_location(base, "vtt", sha).key == f"jobs/7/r-1/{sha}.vtt"


@pytest.mark.parametrize("over,needle", [
    ({"output_format": "aac"}, "output_format"),
    ({"output_format": "opus", "sample_rate": 44100}, "opus supports sample_rate"),
    ({"sample_rate": 4000}, "within 8000-48000"),
    ({"channels": 0}, "channels must be 1 or 2"),
    ({"output_format": "wav", "bitrate_kbps": 64}, "bitrate_kbps applies to opus and mp3"),
    ({"loudness": 10.0}, "loudness must be"),
    ({"loudness": float("nan")}, "loudness must be"),
    ({"subtitles": "ass"}, "subtitles"),
])
def test_impossible_outputs_are_invalid_requests(over: dict[str, Any], needle: str) -> None:
    with pytest.raises(TtsError) as info:
        validate_request({**BASE, **over})
    assert info.value.code == ErrorCode.INVALID_REQUEST and needle in info.value.message, info.value.message


def test_a_request_from_a_writer_without_the_output_fields_still_decodes() -> None:
    old = next((SCHEMA_DIR / "history").glob("TtsRequest.*.avsc"))
    import io
    import json

    from processor.wire import SINGLE_OBJECT_MAGIC, schema_fingerprint
    schema = json.loads(old.read_text())
    buf = io.BytesIO()
    buf.write(SINGLE_OBJECT_MAGIC + schema_fingerprint(schema))
    fastavro.schemaless_writer(buf, fastavro.parse_schema(schema), {**BASE, **{
        f["name"]: f.get("default") for f in schema["fields"] if f["name"] not in BASE}})
    record = Codec("TtsRequest").decode(buf.getvalue())
    assert record["output_format"] == "wav" and record["stream_segments"] is False
    assert validate_request(record).output_spec == OutputSpec()


def test_success_result_describes_the_stored_object_and_round_trips() -> None:
    req = validate_request({**BASE, "output_format": "mp3", "sample_rate": 48000, "loudness": -16.0,
                            "subtitles": "both"})
    audio = render(speech_like_pcm(1.0), 22050, req.output_spec)
    loc = content_addressed(req.output_location("out"), audio.sha256)
    timing = [SegmentTiming(1, "hello world", 0.0, 0.8)]
    sub = events.StoredFile("srt", S3Location("out", "tts/r-1/x.srt"), "cd" * 32, 40)
    record = events.success_result(
        req, ORIGIN, worker_id="w", location=loc, audio=audio, segments=1, processing_seconds=1.0,
        synthesis_seconds=0.5, model=None, voice_sha256=None, attempts=1, timing=timing, subtitles=[sub],
        engine_rate=22050)
    codec = Codec("TtsResult")
    back = codec.decode(codec.encode(record))
    assert (back["output_format"], back["content_type"], back["sample_rate"], back["bitrate_kbps"]) == (
        "mp3", "audio/mpeg", 48000, 64)
    assert back["size_bytes"] == len(audio.data) and back["duration_seconds"] == pytest.approx(1.0)
    assert back["loudness_lufs"] == pytest.approx(-16.0, abs=0.2)
    assert back["segment_timing"] == [{"index": 1, "text": "hello world", "start_seconds": 0.0, "end_seconds": 0.8}]
    assert back["subtitles"][0]["uri"] == "s3://out/tts/r-1/x.srt"
    assert back["parameters"]["output"] == {
        "format": "mp3", "sample_rate": 48000, "channels": 1, "bitrate_kbps": 64, "loudness": -16.0,
        "true_peak_dbtp": -1.0, "subtitles": "both", "stream_segments": False}


def test_error_result_and_progress_events_round_trip() -> None:
    req = validate_request({**BASE, "output_format": "opus"})
    err = events.error_result("r-1", ORIGIN, TtsError(ErrorCode.UNSUPPORTED_FORMAT, "no opus here"), worker_id="w",
                              req=req)
    back = Codec("TtsResult").decode(Codec("TtsResult").encode(err))
    assert back["error_code"] == "unsupported_format" and back["parameters"]["output"]["sample_rate"] is None
    assert back["segment_timing"] is None and back["subtitles"] == []
    wav = encode_wav(speech_like_pcm(0.5), 22050)
    piece = events.SegmentPiece(S3Location("out", "tts/r-1/segment-0001/x.wav"), wav, 0.0)
    ev = events.progress_event("r-1", 1, 2, "w", 0.3, SegmentTiming(1, "hello", 0.0, 0.4), piece)
    codec = Codec("TtsProgress")
    got = codec.decode(codec.encode(ev))
    assert (got["text"], got["start_seconds"], got["end_seconds"]) == ("hello", 0.0, 0.4)
    assert got["audio"]["content_type"] == "audio/wav" and got["audio"]["size_bytes"] == wav.size
    plain = codec.decode(codec.encode(events.progress_event("r-1", 1, 2, "w", 0.3)))
    assert plain["audio"] is None and plain["text"] is None


def test_history_keeps_the_schemas_before_the_output_fields() -> None:
    names = sorted(p.name.split(".")[0] for p in Path(SCHEMA_DIR / "history").glob("*.avsc"))
    assert {"TtsRequest", "TtsResult", "TtsProgress"} <= set(names)


def test_cli_submit_takes_the_output_options() -> None:
    from processor.cli import build_request, parser

    args = parser().parse_args(["submit", "--text", "hi", "--voice", "alice", "--format", "mp3", "--sample-rate",
                                "44100", "--loudness", "-16", "--subtitles", "srt", "--stream-segments"])
    req = validate_request(build_request(args))
    assert req.output_spec == OutputSpec("mp3", 44100, loudness_lufs=-16.0)
    assert (req.subtitles, req.stream_segments) == ("srt", True)
