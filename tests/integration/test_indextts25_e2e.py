"""Issue 12 end to end: a worker configured for IndexTTS-2.5 (the real indextts25 code on the tiny
random model, CPU) serves requests from the real Kafka + S3 with a speed and a language set, streams
progress with each segment's text, and refuses what IndexTTS-2.5 cannot do before any synthesis."""

from __future__ import annotations

import io
import wave
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.support.audio import voice_clip
from tests.support.workers import Topics, WorkerProcess, produce, read_all, request, worker_env

ROOT = Path(__file__).resolve().parents[2]
TINY25 = ROOT / ".cache" / "tiny-model25"

pytestmark = pytest.mark.integration


def test_indextts25_worker_serves_speed_and_language_and_refuses_emotion_text(
    stack: Any, tmp_path: Path
) -> None:
    from devstack import tiny_model25

    tiny_model25.build(TINY25)  # idempotent: a complete build is reused
    prefix = f"e2e25-{datetime.now(UTC).strftime('%H%M%S%f')}"
    topics = Topics.create(stack, prefix, partitions=1)
    stack.create_bucket(prefix)
    s3 = stack.s3_client()
    s3.put_object(Bucket=prefix, Key="voices/alice.wav", Body=voice_clip(seed=1))
    env = worker_env(stack, topics, prefix, f"{prefix}-group", tmp_path,
                     INDEX_TTS_ENGINE="processor.engine.loader:product", INDEX_TTS_FAMILY="indextts2.5",
                     INDEX_TTS_MODEL_DIR=str(TINY25), HF_HOME=str(TINY25 / "hf"), HF_HUB_OFFLINE="1",
                     INDEX_TTS_DEVICE="cpu", INDEX_TTS_DIFFUSION_STEPS="2", WORKER_JOB_TIMEOUT_SECONDS="600")
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        worker.wait_ready(timeout=600)
        voice = f"s3://{prefix}/voices/alice.wav"
        produce(stack.kafka_bootstrap, topics.requests, [
            request("es-1", voice, "Hola, ¿qué tal? Muy bien.", speed=0.8, language="es", max_mel_tokens=50,
                    num_beams=1, max_text_tokens_per_segment=20),
            request("emo-text", voice, "Hello.", emotion_text="happy"),
        ])
        results = {r["request_id"]: r for r, _ in read_all(stack.kafka_bootstrap, topics.results, "TtsResult",
                                                              until=2, timeout=600)}
        ok, refused = results["es-1"], results["emo-text"]
        assert ok["status"] == "success", ok
        model = ok["model"]
        assert (model["engine"], model["backend"], model["model_type"]) == ("indextts2.5", "sdpa",
                                                                              "indextts2.5-tiny-random")
        assert model["capabilities"]["languages"] == ["zh", "en", "ja", "es", "ar"]
        assert (ok["parameters"]["speed"], ok["parameters"]["language"]) == (0.8, "es")
        body = s3.get_object(Bucket=ok["output_bucket"], Key=ok["output_key"])["Body"].read()
        with wave.open(io.BytesIO(body)) as w:
            assert w.getframerate() == 22050 and w.getnframes() > 0
        assert refused["status"] == "error" and refused["error_code"] == "unsupported_capability"
        assert "IndexTTS-2.5" in refused["error_message"] and refused.get("synthesis_seconds") is None
        progress = [r for r, _ in read_all(stack.kafka_bootstrap, topics.progress, "TtsProgress", timeout=30,
                                           settle=3)]
        mine = [p for p in progress if p["request_id"] == "es-1"]
        assert mine and all(p["text"] and p["text"].isupper() for p in mine)  # Spanish is upper-cased
        assert [p["segment"] for p in mine] == list(range(1, len(mine) + 1)) == list(range(1, ok["segments"] + 1))
        assert all(0 <= p["start_seconds"] < p["end_seconds"] for p in mine)
        assert not [p for p in progress if p["request_id"] == "emo-text"]
    finally:
        worker.stop(60)
