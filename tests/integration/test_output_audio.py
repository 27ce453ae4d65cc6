"""Output formats, rates, loudness, timing, subtitles and streamed segments, end to end: a real worker
process, the real Kafka broker and S3 server. Every stored object is checked with FFmpeg (PyAV),
not with the libraries that wrote it; subtitle files with the srt and webvtt-py parsers.

One worker and one batch of requests for the whole module keep it to a few seconds of work.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyloudnorm
import pytest

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


@dataclass
class Run:
    stack: Any
    topics: Topics
    bucket: str
    worker: WorkerProcess
    results: dict[str, dict[str, Any]]

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
        reqs = [request(rid, voice, text=TEXT, max_text_tokens_per_segment=20, **fields) for rid, fields in CASES]
        produce(stack.kafka_bootstrap, topics.requests, reqs)
        found = read_all(stack.kafka_bootstrap, topics.results, "TtsResult", until=len(reqs), timeout=120)
        yield Run(stack, topics, prefix, worker, {r["request_id"]: r for r, _ in found})
    finally:
        worker.terminate()
        try:
            worker.wait(30)
        except Exception:
            worker.kill()


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
