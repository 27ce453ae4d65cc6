"""`tts-processor doctor` against the real stack: healthy, and each broken case as a clear failing line.

Doctor runs as a subprocess (`python -m processor.cli doctor`) with a complete model directory: the
tiny random IndexTTS2 from devstack.tiny_model (config.yaml, checkpoints and an offline HF cache with
the four auxiliary repos), built once into .cache/tiny-model.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from processor.config import Settings
from processor.doctor import HUB_FILES, can_read, check_schema_registry
from tests.support.workers import REPO, Topics, free_port

TINY_DIR = REPO / ".cache" / "tiny-model"


@pytest.fixture(scope="module")
def tiny_model() -> Path:
    from devstack import tiny_model

    return tiny_model.build(TINY_DIR)  # idempotent: a complete build is reused


@pytest.fixture
def model_copy(tiny_model: Path, tmp_path: Path) -> Path:
    """A private copy of the model dir (symlinked files) that a test may break."""
    out = tmp_path / "model"
    out.mkdir()
    for p in tiny_model.iterdir():
        if p.name != "hf":
            os.symlink(p, out / p.name)
    return out


@pytest.fixture
def topics(stack: Any, names: Any) -> Topics:
    return Topics.create(stack, names.prefix, partitions=2)


Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def doctor(stack: Any, bucket: str, topics: Topics, tiny_model: Path) -> Run:
    def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        base = {k: v for k, v in os.environ.items()
                if not k.startswith(("KAFKA_", "S3_", "INDEX_TTS_", "HF_", "SCHEMA_REGISTRY"))}
        full = {**base, **stack.env(bucket), **topics.env(), "PYTHONPATH": str(REPO),
                "INDEX_TTS_ENGINE": "processor.engine.loader:indextts2", "INDEX_TTS_MODEL_DIR": str(tiny_model),
                "HF_HOME": str(tiny_model / "hf"), "HF_HUB_OFFLINE": "1", **env}
        proc = subprocess.run([sys.executable, "-m", "processor.cli", "doctor", *args], env=full, cwd=REPO,
                              capture_output=True, text=True, timeout=180)
        print(proc.stdout, proc.stderr)
        return proc

    return run


def lines(out: str, status: str) -> list[str]:
    return [ln for ln in out.splitlines() if ln.startswith(status + "  ")]


def has(out: str, status: str, name: str, detail: str) -> bool:
    """A line ``STATUS  name<padding> detail...``."""
    return re.search(rf"^{status}  {re.escape(name)} +{re.escape(detail)}", out, re.M) is not None


def test_healthy(doctor: Run, topics: Topics, bucket: str, stack: Any) -> None:
    proc = doctor("--partitions", "2")
    assert proc.returncode == 0, proc.stdout
    assert not lines(proc.stdout, "FAIL")
    out = proc.stdout
    assert re.search(r"^PASS  python +3\.11", out, re.M)
    for pkg in ("confluent-kafka", "torch", "indextts2-inference", "boto3"):
        assert re.search(rf"^PASS  {re.escape(pkg)} +\d", out, re.M), pkg
    assert re.search(r"^(PASS|WARN)  gpu ", out, re.M)  # no GPU is a warning, never a failure
    assert has(out, "PASS", "audio formats", "wav, flac, opus, mp3; loudness")
    model_line = next(ln for ln in out.splitlines() if ln.startswith("PASS  model dir"))
    for name in ("gpt.pth", "s2mel.pth", "bpe.model", "wav2vec2bert_stats.pt", "feat1.pt", "feat2.pt",
                 "qwen0.6bemo4-merge/"):
        assert name in model_line
    for repo in HUB_FILES:
        assert re.search(rf"^PASS  hf {re.escape(repo)} ", out, re.M), repo
    assert has(out, "PASS", "kafka", stack.kafka_bootstrap)
    for topic, n in ((topics.requests, 2), (topics.results, 2), (topics.progress, 2), (topics.health, 1),
                     (topics.dlq, 1)):
        assert has(out, "PASS", "kafka topic", f"{topic}: {n} partition(s)"), topic
    assert has(out, "PASS", "s3 bucket", bucket)
    assert "PASS  s3 permissions" in out
    assert "SKIP  schema registry" in out  # SCHEMA_REGISTRY_URL unset
    assert out.rstrip().splitlines()[-1].startswith("OK:")
    # The probe object was deleted again.
    assert "Contents" not in stack.s3_client().list_objects_v2(Bucket=bucket, Prefix=".doctor/")


def test_too_few_partitions_fail(doctor: Run, topics: Topics) -> None:
    proc = doctor("--partitions", "4")
    assert proc.returncode == 1
    fails = lines(proc.stdout, "FAIL")
    for topic in (topics.requests, topics.results, topics.progress):
        assert any(f"{topic} has 2 partition(s), expected at least 4" in ln for ln in fails), fails
    assert len(fails) == 3


def test_kafka_down(doctor: Run) -> None:
    proc = doctor("--timeout", "3", KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}")
    assert proc.returncode == 1
    fails = lines(proc.stdout, "FAIL")
    assert len(fails) == 1 and fails[0].startswith("FAIL  kafka ") and "not reachable" in fails[0], fails
    assert "hint: check KAFKA_BOOTSTRAP_SERVERS" in proc.stdout
    assert "SKIP  kafka topics" in proc.stdout
    assert "PASS  s3 permissions" in proc.stdout  # the rest is still checked
    assert proc.stdout.rstrip().splitlines()[-1].startswith("FAILED:")


def test_missing_topic(doctor: Run, topics: Topics) -> None:
    proc = doctor(KAFKA_DLQ_TOPIC=topics.dlq + ".nope")
    assert proc.returncode == 1
    assert len(lines(proc.stdout, "FAIL")) == 1
    assert has(proc.stdout, "FAIL", "kafka topic", f"{topics.dlq}.nope does not exist")
    assert "tts-processor setup" in proc.stdout


def test_missing_model_file(doctor: Run, model_copy: Path, tiny_model: Path) -> None:
    (model_copy / "s2mel.pth").unlink()
    proc = doctor(INDEX_TTS_MODEL_DIR=str(model_copy))
    assert proc.returncode == 1
    fails = lines(proc.stdout, "FAIL")
    assert has(proc.stdout, "FAIL", "model file", f"s2mel_checkpoint: {model_copy / 's2mel.pth'} is missing"), fails
    assert has(proc.stdout, "FAIL", "model dir", f"{model_copy}: 6 of 7 files named by config.yaml present")
    assert len(fails) == 2
    assert "hint: the download is incomplete" in proc.stdout


def test_missing_emotion_model_and_hub_repo(doctor: Run, model_copy: Path, tiny_model: Path,
                                            tmp_path: Path) -> None:
    (model_copy / "qwen0.6bemo4-merge").unlink()
    hf = tmp_path / "hf"
    shutil.copytree(tiny_model / "hf", hf, symlinks=True)
    shutil.rmtree(hf / "hub" / "models--funasr--campplus")
    proc = doctor(INDEX_TTS_MODEL_DIR=str(model_copy), HF_HOME=str(hf))
    assert proc.returncode == 1
    fails = lines(proc.stdout, "FAIL")
    assert any("qwen_emo_path: emotion model dir" in ln and "is missing" in ln for ln in fails), fails
    assert any(ln.startswith("FAIL  hf funasr/campplus") and f"not in {hf / 'hub'}" in ln for ln in fails), fails
    assert "PASS  hf facebook/w2v-bert-2.0" in proc.stdout


def test_bucket_missing(doctor: Run) -> None:
    proc = doctor(S3_BUCKET="no-such-bucket-doctor")
    assert proc.returncode == 1
    fails = lines(proc.stdout, "FAIL")
    assert len(fails) == 1 and "bucket no-such-bucket-doctor does not exist" in fails[0], fails
    assert "hint: create it with `tts-processor setup`" in proc.stdout


def test_other_engine_skips_model_checks(doctor: Run) -> None:
    proc = doctor(INDEX_TTS_ENGINE="tests.support.tone_engine:tone_engine", INDEX_TTS_MODEL_DIR="/nonexistent")
    assert proc.returncode == 0, proc.stdout
    assert "SKIP  model dir" in proc.stdout and "SKIP  hf hub cache" in proc.stdout
    assert "is not the IndexTTS2 engine" in proc.stdout


# ------------------------------------------------------------ schema registry (in-process, mock registry)


def test_schema_registry_lines() -> None:
    import json

    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

    from processor.wire import schema_json

    settings = Settings()
    client = SchemaRegistryClient.new_client({"url": "mock://doctor"})
    k = settings.kafka
    client.register_schema(f"{k.request_topic}-value", Schema(json.dumps(schema_json("TtsRequest")), "AVRO"))
    older = schema_json("TtsProgress")
    older = {**older, "fields": [f for f in older["fields"] if f["name"] != "emitted_at"]}
    client.register_schema(f"{k.progress_topic}-value", Schema(json.dumps(older), "AVRO"))
    broken = schema_json("TtsResult")
    broken = {**broken, "fields": [{**f, "type": "int"} if f["name"] == "request_id" else f
                                   for f in broken["fields"]]}
    client.register_schema(f"{k.result_topic}-value", Schema(json.dumps(broken), "AVRO"))
    checks = {c.detail.split(" ")[0].rstrip(":"): c for c in check_schema_registry(settings, client)}
    assert len(checks) == 5
    req = checks[f"{k.request_topic}-value"]
    assert req.status == "pass" and "identical" in req.detail
    assert checks[f"{k.progress_topic}-value"].status == "pass"
    assert "compatible both ways" in checks[f"{k.progress_topic}-value"].detail
    assert checks[f"{k.result_topic}-value"].status == "fail"
    assert "request_id" in checks[f"{k.result_topic}-value"].detail
    assert "not registered yet" in checks[f"{k.health_topic}-value"].detail


def test_avro_resolution_rules() -> None:
    rec = {"type": "record", "name": "R", "fields": [{"name": "a", "type": "int"}]}
    added_default = {**rec, "fields": [*rec["fields"], {"name": "b", "type": "string", "default": ""}]}
    added_required = {**rec, "fields": [*rec["fields"], {"name": "b", "type": "string"}]}
    assert can_read(rec, added_default) == []
    assert can_read(added_default, rec) == []
    assert can_read(rec, added_required) == ["b: new field without a default"]
    promoted = {**rec, "fields": [{"name": "a", "type": "long"}]}
    assert can_read(rec, promoted) == [] and can_read(promoted, rec) == ["a: long cannot be read as int"]
    assert can_read({"type": "enum", "name": "E", "symbols": ["x", "y"]},
                    {"type": "enum", "name": "E", "symbols": ["x"], "default": "x"}) == []
    assert can_read(["null", "string"], ["null", "string", "int"]) == []
    assert can_read(["null", "int"], "int")
