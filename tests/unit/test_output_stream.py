"""Finish-stage rendering and streamed pieces, without Kafka or S3: pieces tile the final audio,
arrive in order, are content-addressed next to it, and a failing store never blocks the job."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from processor import output
from processor.audio import EncodedAudio, SegmentTiming, speech_like_pcm
from processor.events import SegmentPiece
from processor.request import S3Location, validate_request
from tests.support.decode import decode

RATE = 22050


@dataclass(frozen=True)
class Span:
    index: int
    count: int
    text: str
    start_sample: int
    end_sample: int


def job(n: int = 3, seconds: float = 0.8, gap: float = 0.2) -> tuple[np.ndarray, list[Span], list[np.ndarray]]:
    """Engine-like output: n segments of speech, each followed by silence but the last; and its chunks."""
    chunks, spans, pos = [], [], 0
    for i in range(1, n + 1):
        speech = speech_like_pcm(seconds, sample_rate=RATE, seed=i)
        chunk = np.concatenate([speech, np.zeros(int(gap * RATE), np.int16)]) if i < n else speech
        spans.append(Span(i, n, f"segment number {i}.", pos, pos + len(speech)))
        pos += len(chunk)
        chunks.append(chunk)
    return np.concatenate(chunks), spans, chunks


def test_render_job_times_segments_in_the_output_and_writes_subtitles() -> None:
    pcm, spans, _ = job()
    req = validate_request({"request_id": "r", "text": "x", "voice": "v", "output_format": "mp3",
                            "sample_rate": 48000, "subtitles": "both"})
    r = output.render_job(req, pcm, RATE, spans)
    assert r.audio.sample_rate == 48000 and r.audio.frames == round(len(pcm) * 48000 / RATE)
    assert [(t.index, t.start_seconds, t.end_seconds) for t in r.timing] == [
        (1, 0.0, 0.8), (2, 1.0, 1.8), (3, 2.0, 2.8)]
    assert [(f.format, f.content_type) for f in r.subtitles] == [("srt", "application/x-subrip"), ("vtt", "text/vtt")]
    assert b"00:00:01,000 --> 00:00:01,800" in r.subtitles[0].data
    loc = output.subtitle_location(req.output_location("b"), "vtt", "ab" * 32)
    assert loc.key == f"tts/r/{'ab' * 32}.vtt"


@pytest.mark.parametrize("fmt,loudness", [("wav", None), ("opus", -16.0), ("mp3", None)])
def test_streamed_pieces_tile_the_final_audio(fmt: str, loudness: float | None) -> None:
    pcm, spans, chunks = job()
    req = validate_request({"request_id": "r", "text": "x", "voice": "v", "output_format": fmt,
                            "sample_rate": 48000, "loudness": loudness, "stream_segments": True})
    stored: dict[str, EncodedAudio] = {}
    announced: list[tuple[int, SegmentTiming, SegmentPiece | None]] = []
    streamer = output.SegmentStreamer()
    stream = streamer.open(req, req.output_location("b"), RATE, lambda loc, audio: stored.__setitem__(loc.key, audio),
                           lambda span, t, piece: announced.append((span.index, t, piece)))
    main_thread = threading.get_ident()
    for span, chunk in zip(spans, chunks, strict=True):
        stream.add(span, chunk)
    assert stream.wait(30) and stream.failed is None
    streamer.close()
    final = output.render_job(req, pcm, RATE, spans)
    assert [i for i, _, _ in announced] == [1, 2, 3]
    assert [t for _, t, _ in announced] == final.timing
    pieces = [p for _, _, p in announced if p is not None]
    assert sum(p.audio.duration_seconds for p in pieces) == pytest.approx(final.audio.duration_seconds, abs=3 / 48000)
    assert [p.offset_seconds for p in pieces] == pytest.approx([0.0, 1.0, 2.0], abs=1 / 48000)
    for i, p in enumerate(pieces, start=1):
        assert p.location.key == f"tts/r/segment-{i:04d}/{p.audio.sha256}.{final.audio.extension}"
        d = decode(stored[p.location.key].data)
        assert d.duration_seconds == pytest.approx(p.audio.duration_seconds, abs=1e-3)
    if loudness is not None:  # the job-so-far estimate keeps every piece near the final level
        assert all(abs((p.audio.loudness_lufs or 0) - loudness) < 1.0 for p in pieces)
    assert threading.get_ident() == main_thread


def test_a_failing_store_gives_up_on_the_stream_without_blocking_the_job() -> None:
    _, spans, chunks = job()
    req = validate_request({"request_id": "r", "text": "x", "voice": "v", "stream_segments": True})
    calls: list[Any] = []

    def store(loc: S3Location, audio: EncodedAudio) -> None:
        calls.append(loc)
        raise RuntimeError("storage down")

    streamer = output.SegmentStreamer()
    stream = streamer.open(req, req.output_location("b"), RATE, store, lambda *a: calls.append(a))
    for span, chunk in zip(spans, chunks, strict=True):
        stream.add(span, chunk)
    assert stream.wait(30)
    streamer.close()
    assert stream.failed == "RuntimeError: storage down" and stream.pieces == []
    assert len([c for c in calls if isinstance(c, S3Location)]) == 1  # gave up after the first piece
    announced = [c for c in calls if isinstance(c, tuple)]
    assert [(a[0].index, a[2]) for a in announced] == [(1, None), (2, None), (3, None)]  # timing still went out
