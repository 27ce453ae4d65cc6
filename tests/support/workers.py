"""Run real worker processes (`tts-processor run`) against the local stack, and talk to them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer

from processor.wire import Codec, SchemaRegistry

REPO = Path(__file__).resolve().parents[2]

REQUEST_DEFAULTS: dict[str, Any] = {
    f: None for f in ("emotion_reference", "emotion_vector", "emotion_text", "top_p", "top_k", "temperature",
                      "num_beams", "repetition_penalty", "max_mel_tokens", "interval_silence_ms", "output_bucket",
                      "output_key_prefix", "workflow_id", "stage_name", "deadline", "created_at")
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Topics:
    requests: str
    results: str
    progress: str
    health: str
    dlq: str

    @classmethod
    def create(cls, stack: Any, prefix: str, partitions: int = 4) -> Topics:
        t = cls(*(f"{prefix}.{n}" for n in ("requests", "results", "progress", "health", "dlq")))
        stack.create_topics({t.requests: partitions, t.results: partitions, t.progress: partitions,
                             t.health: 1, t.dlq: 1})
        return t

    def env(self) -> dict[str, str]:
        return {"KAFKA_REQUEST_TOPIC": self.requests, "KAFKA_RESULT_TOPIC": self.results,
                "KAFKA_PROGRESS_TOPIC": self.progress, "KAFKA_HEALTH_TOPIC": self.health,
                "KAFKA_DLQ_TOPIC": self.dlq}


def worker_env(stack: Any, topics: Topics, bucket: str, group: str, tmp: Path, **extra: str) -> dict[str, str]:
    env = {
        # SCHEMA_REGISTRY_ too: a test picks its wire format (extra SCHEMA_REGISTRY_URL=...), the shell doesn't.
        **{k: v for k, v in os.environ.items()
           if not k.startswith(("KAFKA_", "S3_", "WORKER_", "INDEX_TTS_", "SCHEMA_REGISTRY_"))},
        **stack.env(bucket),
        **topics.env(),
        "KAFKA_GROUP_ID": group,
        "INDEX_TTS_ENGINE": "tests.support.tone_engine:tone_engine",
        "S3_REFERENCE_CACHE_DIR": str(tmp / f"refcache-{uuid.uuid4().hex[:6]}"),
        "WORKER_HEALTH_INTERVAL_SECONDS": "2",
        "PYTHONPATH": str(REPO),
        "PYTHONUNBUFFERED": "1",
    }
    env.update(extra)
    return env


@dataclass
class WorkerProcess:
    env: dict[str, str]
    log_path: Path
    worker_id: str = field(default_factory=lambda: f"w-{uuid.uuid4().hex[:6]}")
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        env = {**self.env, "WORKER_ID": self.worker_id, "HTTP_PORT": str(self.port), "HTTP_HOST": "127.0.0.1"}
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "processor.cli", "run"], env=env, cwd=REPO,
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def http(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
                return int(r.status), r.read().decode()
        except urllib.error.HTTPError as e:
            return int(e.code), e.read().decode()

    def wait_ready(self, timeout: float = 120) -> WorkerProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.logs()[-4000:]}")
            try:
                if self.http("/readyz")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"worker not ready in {timeout}s:\n{self.logs()[-4000:]}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM, wait up to ``timeout`` s for a graceful exit, SIGKILL after that.

        Returns the exit status, or None when the worker had to be killed.
        """
        self.terminate()
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def request(request_id: str, voice: str, text: str = "hello world from the test", **fields: Any) -> dict[str, Any]:
    return {**REQUEST_DEFAULTS, "request_id": request_id, "text": text, "voice": voice,
            "created_at": datetime.now(UTC), **fields}


def codec_for(name: str, topic: str, registry_url: str | None = None) -> Codec:
    """Our codec for ``topic``: Confluent framing through the registry at ``registry_url`` (subject
    ``<topic>-value``, as the worker names it), else single-object encoding."""
    return Codec(name, SchemaRegistry(registry_url), f"{topic}-value") if registry_url else Codec(name)


def produce(bootstrap: str, topic: str, records: Iterable[dict[str, Any]] | Iterable[bytes],
            *, partition_by_index: int | None = None, registry_url: str | None = None,
            headers: list[tuple[str, bytes]] | None = None) -> int:
    codec = codec_for("TtsRequest", topic, registry_url)
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    n = 0
    for i, rec in enumerate(records):
        value = rec if isinstance(rec, bytes) else codec.encode(rec)
        key = (rec["request_id"] if isinstance(rec, dict) else f"raw-{i}").encode()
        if partition_by_index is not None:
            p.produce(topic, value, key, partition=i % partition_by_index, headers=headers)
        else:
            p.produce(topic, value, key, headers=headers)
        n += 1
    assert p.flush(30) == 0
    return n


def read_all(bootstrap: str, topic: str, codec_name: str, *, until: int | None = None, timeout: float = 60,
             settle: float = 2.0, stop: Callable[[list[dict[str, Any]]], bool] | None = None,
             registry_url: str | None = None) -> list[tuple[dict[str, Any], Any]]:
    """Read a topic from the start (read_committed) until ``until`` records came and ``settle`` s passed
    with nothing new, or ``stop(records)`` holds, or ``timeout``. Returns (record, message) pairs."""
    codec = codec_for(codec_name, topic, registry_url)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex[:8]}", "log_level": 2,
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "isolation.level": "read_committed"})
    c.subscribe([topic])
    out: list[tuple[dict[str, Any], Any]] = []
    deadline = time.monotonic() + timeout
    last_new = time.monotonic()
    try:
        while time.monotonic() < deadline:
            msg = c.poll(0.2)
            if msg is not None and not msg.error():
                out.append((codec.decode(msg.value()), msg))
                last_new = time.monotonic()
                if stop is not None and stop([r for r, _ in out]):
                    break
            elif until is not None and len(out) >= until and time.monotonic() - last_new > settle:
                break
    finally:
        c.close()
    return out
