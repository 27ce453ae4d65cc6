"""The console's output options and segment timeline, without a broker: the form becomes the request
fields, progress events become a timeline with playable pieces, results name their subtitles."""

from __future__ import annotations

from typing import Any, cast

import pytest

from processor.config import Settings
from processor.console.backend import Backend, ConsoleError
from processor.storage import Storage
from tests.support.memory_storage import MemoryStorage

PIECE = {"uri": "s3://b/tts/r/segment-0001/x.opus", "bucket": "b", "key": "tts/r/segment-0001/x.opus",
         "sha256": "x", "size_bytes": 10, "content_type": "audio/ogg", "offset_seconds": 0.0, "duration_seconds": 1.2}


@pytest.fixture
def backend() -> Backend:
    # Nothing here reaches S3: the in-memory store spares each test building a boto3 client.
    return Backend(Settings(), storage=cast(Storage, MemoryStorage()))


def test_form_output_options_become_request_fields(backend: Backend) -> None:
    record = backend.build_record({"text": "hi", "voice": "alice", "output_format": "opus", "sample_rate": 24000,
                                   "loudness": -16, "subtitles": "both", "stream_segments": True, "channels": "",
                                   "bitrate_kbps": None})
    assert {k: record[k] for k in ("output_format", "sample_rate", "loudness", "subtitles", "stream_segments")} == {
        "output_format": "opus", "sample_rate": 24000, "loudness": -16, "subtitles": "both", "stream_segments": True}
    assert "channels" not in record and "bitrate_kbps" not in record  # empty: the request's default


def test_progress_events_become_a_timeline_with_pieces(backend: Backend) -> None:
    def event(i: int, audio: dict[str, Any] | None) -> dict[str, Any]:
        return {"request_id": "r", "segment": i, "segments": 2, "worker_id": "w", "elapsed_seconds": 0.1 * i,
                "emitted_at": None, "text": f"segment {i}", "start_seconds": 1.2 * (i - 1),
                "end_seconds": 1.2 * i - 0.2, "audio": audio}

    backend._on_progress(event(1, PIECE))
    backend._on_progress(event(2, None))
    view = backend.job_view("r")
    assert view is not None and view["state"] == "running"
    assert [(t["index"], t["text"], t["audio_url"]) for t in view["timeline"]] == [
        (1, "segment 1", "api/pieces/r/1"), (2, "segment 2", None)]
    assert backend.piece_location("r", 1) == ("b", "tts/r/segment-0001/x.opus", "audio/ogg")
    with pytest.raises(ConsoleError):
        backend.piece_location("r", 2)


def test_result_view_names_format_timing_and_subtitles(backend: Backend) -> None:
    backend._on_result({"request_id": "r", "status": "success", "output_bucket": "b", "output_key": "tts/r/x.mp3",
                        "output_format": "mp3", "content_type": "audio/mpeg", "duration_seconds": 2.0,
                        "segment_timing": [{"index": 1, "text": "hi", "start_seconds": 0.0, "end_seconds": 1.0}],
                        "subtitles": [{"format": "vtt", "uri": "s3://b/tts/r/y.vtt", "key": "tts/r/y.vtt",
                                       "sha256": "y", "size_bytes": 40}]})
    view = backend.job_view("r")
    assert view is not None
    r = view["result"]
    assert (r["output_format"], r["content_type"]) == ("mp3", "audio/mpeg")
    assert r["segment_timing"][0]["text"] == "hi"
    assert r["subtitles"] == [{"format": "vtt", "uri": "s3://b/tts/r/y.vtt", "size_bytes": 40,
                               "url": "api/subtitles/r/vtt"}]
    assert backend.audio_location("r") == ("b", "tts/r/x.mp3", "audio/mpeg")
    assert backend.subtitle_location("r", "vtt") == ("b", "tts/r/y.vtt", "text/vtt")
    with pytest.raises(ConsoleError):
        backend.subtitle_location("r", "srt")
