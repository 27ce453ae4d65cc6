"""Output formats, rates, loudness, timing, subtitles and streamed segments, end to end: a real worker
process, the real Kafka broker and S3 server. Every stored object is checked with FFmpeg (PyAV),
not with the libraries that wrote it; subtitle files with the srt and webvtt-py parsers.

One worker and one batch of requests for the whole module keep it to a few seconds of work.
"""

from __future__ import annotations

import hashlib
import io
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyloudnorm
import pytest
import srt
import webvtt

from tests.support.audio import voice_clip
from tests.support.decode import decode
from tests.support.workers import Topics, WorkerProcess, produce, read_all, request, worker_env

TONE_RATE = 16000  # the tone engine's rate: what a request without sample_rate gets (Opus codes it too)
CONTAINERS = {"wav": ("wav", "audio/wav"), "flac": ("flac", "audio/flac"), "opus": ("ogg", "audio/ogg"),
              "mp3": ("mp3", "audio/mpeg")}
TEXT = "the quick brown fox jumps over the lazy dog while the band plays on and on"

# (id, fields): every format, every standard rate at least once, loudness on lossless and lossy.
CASES: list[tuple[str, dict[str, Any]]] = [
    ("wav-default", {}),
    ("wav-48k-23", {"output_format": "wav", "sample_rate": 48000, "loudness": -23.0}),
    ("wav-11k-stereo", {"output_format": "wav", "sample_rate": 11025, "channels": 2}),
    ("flac-44k", {"output_format": "flac", "sample_rate": 44100}),
    ("flac-8k-16", {"output_format": "flac", "sample_rate": 8000, "loudness": -16.0}),
    ("opus-default", {"output_format": "opus"}),
    ("opus-48k-16", {"output_format": "opus", "sample_rate": 48000, "loudness": -16.0}),
    ("opus-12k", {"output_format": "opus", "sample_rate": 12000, "bitrate_kbps": 16}),
    ("opus-24k-stereo", {"output_format": "opus", "sample_rate": 24000, "channels": 2}),
    ("mp3-22k", {"output_format": "mp3", "sample_rate": 22050}),
    ("mp3-32k", {"output_format": "mp3", "sample_rate": 32000, "bitrate_kbps": 96}),
    ("mp3-48k-14", {"output_format": "mp3", "sample_rate": 48000, "loudness": -14.0, "true_peak_dbtp": -2.0}),
    ("mp3-16k", {"output_format": "mp3", "sample_rate": 16000}),
]


# Several segments each (the tone engine puts 5 words in a segment at 20 tokens), one lossless with
# subtitles, one streamed as Opus with loudness on.
SUBS = ("subs", {"output_format": "flac", "sample_rate": 48000, "subtitles": "both", "interval_silence_ms": 300})
STREAM = ("stream", {"output_format": "opus", "sample_rate": 48000, "loudness": -16.0, "stream_segments": True})


@dataclass
class Run:
    stack: Any
    topics: Topics
    bucket: str
    worker: WorkerProcess
    results: dict[str, dict[str, Any]]
    result_times: dict[str, int]  # Kafka timestamp (ms) of each result record
    progress: dict[str, list[tuple[dict[str, Any], int]]]  # request id -> (event, Kafka timestamp ms)

    def get(self, key: str) -> bytes:
        body: bytes = self.stack.s3_client().get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return body


@pytest.fixture(scope="module")
def run(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp: Path = tmp_path_factory.mktemp("output")
    prefix = f"out-{datetime.now(UTC).strftime('%H%M%S%f')}"
    topics = Topics.create(stack, prefix, partitions=2)
    stack.create_bucket(prefix)
    stack.s3_client().put_object(Bucket=prefix, Key="voices/alice.wav", Body=voice_clip(seed=1))
    worker = WorkerProcess(worker_env(stack, topics, prefix, f"{prefix}-group", tmp), tmp / "worker.log").start()
    try:
        worker.wait_ready()
        voice = f"s3://{prefix}/voices/alice.wav"
        reqs = [request(rid, voice, text=TEXT, max_text_tokens_per_segment=20, **fields)
                for rid, fields in [*CASES, SUBS, STREAM]]
        produce(stack.kafka_bootstrap, topics.requests, reqs)
        found = read_all(stack.kafka_bootstrap, topics.results, "TtsResult", until=len(reqs), timeout=120)
        progress: dict[str, list[tuple[dict[str, Any], int]]] = {}
        for event, msg in read_all(stack.kafka_bootstrap, topics.progress, "TtsProgress", timeout=30, settle=1.0,
                                   until=1):
            progress.setdefault(event["request_id"], []).append((event, msg.timestamp()[1]))
        yield Run(stack, topics, prefix, worker, {r["request_id"]: r for r, _ in found},
                  {r["request_id"]: m.timestamp()[1] for r, m in found}, progress)
    finally:
        worker.stop()


@pytest.mark.parametrize("rid,fields", CASES, ids=[c[0] for c in CASES])
def test_stored_object_is_the_format_rate_and_loudness_asked_for(run: Run, rid: str, fields: dict[str, Any]) -> None:
    r = run.results[rid]
    assert r["status"] == "success", r
    fmt = fields.get("output_format", "wav")
    data = run.get(r["output_key"])
    assert hashlib.sha256(data).hexdigest() == r["sha256"] and len(data) == r["size_bytes"]
    assert r["output_key"].endswith(f"/{r['sha256']}.{fmt}")
    head = run.stack.s3_client().head_object(Bucket=run.bucket, Key=r["output_key"])
    assert head["ContentType"] == CONTAINERS[fmt][1] == r["content_type"]

    d = decode(data)
    rate = fields.get("sample_rate") or TONE_RATE
    assert (d.container, d.sample_rate, d.channels) == (CONTAINERS[fmt][0], rate, fields.get("channels", 1))
    assert (r["output_format"], r["sample_rate"], r["channels"]) == (fmt, rate, fields.get("channels", 1))
    assert d.duration_seconds == pytest.approx(r["duration_seconds"], abs=0.005)
    assert r["duration_seconds"] > 1.0
    if "loudness" in fields:
        measured = pyloudnorm.Meter(d.decode_rate).integrated_loudness(d.samples.astype(np.float64))
        assert measured == pytest.approx(fields["loudness"], abs=1.0)
        assert r["loudness_lufs"] == pytest.approx(fields["loudness"], abs=0.5)
    else:
        assert r["loudness_lufs"] is None
    if fmt in ("opus", "mp3"):
        kbps = fields.get("bitrate_kbps") or (32 * fields.get("channels", 1) if fmt == "opus" else 64)
        assert r["bitrate_kbps"] == kbps
        assert len(data) * 8 / d.duration_seconds / 1000 < kbps * 1.3
    assert r["parameters"]["output"]["format"] == fmt


def test_segment_timing_is_where_the_speech_is_and_subtitles_say_the_same(run: Run) -> None:
    r = run.results["subs"]
    assert r["status"] == "success", r
    timing = r["segment_timing"]
    assert len(timing) == r["segments"] >= 3
    assert [t["index"] for t in timing] == list(range(1, len(timing) + 1))
    assert " ".join(t["text"] for t in timing) == TEXT
    d = decode(run.get(r["output_key"]))
    x = d.samples[:, 0]
    # The tone engine speaks a tone and is silent between segments: after resampling to 48 kHz the
    # timing must still put every segment's speech inside [start, end) and silence between them.
    for t in timing:
        a, b = round(t["start_seconds"] * d.decode_rate), round(t["end_seconds"] * d.decode_rate)
        assert np.sqrt(np.mean(x[a + 48:b - 48] ** 2)) > 0.1, t
    for prev, nxt in itertools.pairwise(timing):
        assert nxt["start_seconds"] - prev["end_seconds"] == pytest.approx(0.3, abs=0.002)
        gap = x[round(prev["end_seconds"] * d.decode_rate) + 48:round(nxt["start_seconds"] * d.decode_rate) - 48]
        assert np.abs(gap).max() < 0.01
    assert timing[-1]["end_seconds"] == pytest.approx(r["duration_seconds"], abs=0.001)

    files = {f["format"]: f for f in r["subtitles"]}
    assert set(files) == {"srt", "vtt"}
    texts = {}
    for fmt, f in files.items():
        body = run.get(f["key"])
        assert hashlib.sha256(body).hexdigest() == f["sha256"] and len(body) == f["size_bytes"]
        assert f["key"].startswith(r["output_key"].rsplit("/", 1)[0] + "/") and f["key"].endswith(f".{fmt}")
        assert f["uri"] == f"s3://{run.bucket}/{f['key']}"
        texts[fmt] = body.decode()
    cues = list(srt.parse(texts["srt"]))
    vtt = webvtt.from_buffer(io.StringIO(texts["vtt"])).captions
    assert len(cues) == len(vtt) == len(timing)
    for t, c, v in zip(timing, cues, vtt, strict=True):
        assert abs(c.start.total_seconds() - t["start_seconds"]) <= 0.0005 + 1e-9
        assert abs(c.end.total_seconds() - t["end_seconds"]) <= 0.0005 + 1e-9
        assert abs(_vtt_seconds(v.start) - t["start_seconds"]) <= 0.0005 + 1e-9
        assert abs(_vtt_seconds(v.end) - t["end_seconds"]) <= 0.0005 + 1e-9
        assert " ".join(c.content.split()) == " ".join(v.text.split()) == t["text"]


def test_every_result_has_timing_even_without_subtitles(run: Run) -> None:
    for rid, _ in CASES:
        r = run.results[rid]
        assert r["segment_timing"] and len(r["segment_timing"]) == r["segments"], rid
        assert r["subtitles"] == []


def test_streamed_segments_are_stored_and_announced_before_the_result(run: Run) -> None:
    r = run.results["stream"]
    assert r["status"] == "success", r
    events = sorted(run.progress.get("stream", []), key=lambda e: e[0]["segment"])
    assert [e["segment"] for e, _ in events] == list(range(1, r["segments"] + 1))
    assert all(ts <= run.result_times["stream"] for _, ts in events)  # every piece was announced first
    total = 0.0
    for (e, _), t in zip(events, r["segment_timing"], strict=True):
        piece = e["audio"]
        assert piece is not None, e
        assert (e["text"], e["start_seconds"], e["end_seconds"]) == (t["text"], t["start_seconds"], t["end_seconds"])
        body = run.get(piece["key"])
        assert hashlib.sha256(body).hexdigest() == piece["sha256"] and len(body) == piece["size_bytes"]
        assert piece["key"].startswith(r["output_key"].rsplit("/", 1)[0] + f"/segment-{e['segment']:04d}/")
        assert piece["content_type"] == "audio/ogg" == r["content_type"]
        d = decode(body)
        assert (d.codec, d.sample_rate) == ("opus", 48000)
        assert d.duration_seconds == pytest.approx(piece["duration_seconds"], abs=0.002)
        assert piece["offset_seconds"] == pytest.approx(total, abs=0.002)
        if d.duration_seconds >= 0.5:  # BS.1770 gates in 400 ms blocks: shorter pieces have no loudness
            measured = pyloudnorm.Meter(d.decode_rate).integrated_loudness(d.samples.astype(np.float64))
            assert measured == pytest.approx(-16.0, abs=1.5)  # each piece near the job's level
        total += d.duration_seconds
    # The pieces laid end to end are the final audio.
    assert total == pytest.approx(r["duration_seconds"], abs=0.002 * len(events))
    assert decode(run.get(r["output_key"])).duration_seconds == pytest.approx(total, abs=0.002 * len(events))


def test_requests_without_streaming_announce_text_and_timing_only(run: Run) -> None:
    events = [e for e, _ in run.progress.get("subs", [])]
    assert len(events) == run.results["subs"]["segments"]
    assert all(e["audio"] is None and e["text"] for e in events)


def _vtt_seconds(stamp: str) -> float:
    h, m, sec = stamp.split(":")
    return int(h) * 3600 + int(m) * 60 + float(sec)
