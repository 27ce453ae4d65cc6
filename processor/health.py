"""Health: WorkerHealth events on Kafka, and /livez, /readyz, /metrics on one HTTP port.

Liveness means the poll loop is ticking, every stage thread is alive and work gets committed (a
stuck loop, a dead thread, a GPU job stuck far past its time limit, or work with no commit for
WORKER_LIVENESS_COMMIT_SECONDS fails it so Kubernetes restarts the pod).
Readiness means the model is loaded and warm and the consumer has joined the group. The probes and
the events read the processor's published snapshot, never Kafka or S3 directly. Status is derived
from real signals, never hard-coded.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from processor import events, metrics
from processor.engine.base import ModelInfo

if TYPE_CHECKING:
    from processor.pipeline import Processor

log = logging.getLogger(__name__)

RECENT_ERROR_SECONDS = 60.0


class WorkerState:
    """What the HTTP probes read; written by the worker as it starts, serves and stops."""

    def __init__(self, stall_seconds: float, job_timeout_seconds: float,
                 commit_stall_seconds: float | None = None) -> None:
        self.status = "starting"
        self.model: ModelInfo | None = None
        self.processor: Processor | None = None
        self.stall_seconds = stall_seconds
        self.job_timeout_seconds = job_timeout_seconds
        # Default as WORKER_LIVENESS_COMMIT_SECONDS's: the longest job, its retries and a commit.
        self.commit_stall_seconds = commit_stall_seconds or 2 * job_timeout_seconds + 600
        self.started = time.monotonic()

    def live(self) -> tuple[bool, str]:
        p = self.processor
        if p is None:
            return True, "starting"
        snap = p.snapshot
        if snap.thread_failure is not None:
            return False, snap.thread_failure
        now = p.clock()
        stalled = now - snap.last_tick
        if stalled > self.stall_seconds:
            return False, f"poll loop stalled for {stalled:.0f}s"
        if snap.current_started is not None and now - snap.current_started > 2 * self.job_timeout_seconds:
            return False, "GPU job stuck past twice its time limit"
        if snap.progress_at is not None and now - snap.progress_at > self.commit_stall_seconds:
            return False, f"had work but committed nothing for {now - snap.progress_at:.0f}s"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        if self.model is None:
            return False, "model not loaded"
        if self.processor is None or not self.processor.snapshot.joined:
            return False, "consumer has not joined the group"
        if self.status in ("draining", "stopped"):
            return False, self.status
        return True, "ok"


def gpu_record() -> dict[str, Any]:
    torch = sys.modules.get("torch")
    if torch is None:  # the engine never loaded torch (a stand-in engine): importing it here would stall the loop
        return {"available": False, "count": 0, "name": None, "memory_used_bytes": None, "memory_total_bytes": None}
    try:
        if torch.cuda.is_available():
            _, total = torch.cuda.mem_get_info()
            used = int(torch.cuda.memory_allocated())
            metrics.GPU_MEMORY.labels("allocated").set(used)
            metrics.GPU_MEMORY.labels("total").set(total)
            return {"available": True, "count": torch.cuda.device_count(),
                    "name": torch.cuda.get_device_name(0), "memory_used_bytes": used,
                    "memory_total_bytes": int(total)}
    except Exception as exc:  # a lost GPU is reported, not raised  # noqa: BLE001
        log.warning("GPU query failed: %s", exc)
        return {"available": False, "count": 0, "name": f"error: {type(exc).__name__}",
                "memory_used_bytes": None, "memory_total_bytes": None}
    return {"available": False, "count": 0, "name": None, "memory_used_bytes": None, "memory_total_bytes": None}


def health_record(
    state: WorkerState, worker_id: str, status: str, voices: list[str], *,
    lags: dict[tuple[str, int], int | None], gpu: dict[str, Any], reasons: list[str],
) -> dict[str, Any]:
    p = state.processor
    m = state.model
    snap = p.snapshot if p is not None else None
    now = p.clock() if p is not None else time.monotonic()
    counters = snap.counters if snap is not None else None
    return {
        "worker_id": worker_id,
        "status": status,
        "reasons": reasons,
        "gpu": gpu,
        "model": {"loaded": m is not None, "model_type": m.model_type if m else None,
                  "model_version": m.model_version if m else None, "device": m.device if m else None,
                  "precision": m.precision if m else None, "load_seconds": m.load_seconds if m else None,
                  "engine": m.engine if m else None, "backend": m.backend if m else None,
                  "capabilities": m.capabilities.as_dict() if m else None},
        "assignments": [{"topic": t, "partition": part, "lag": lag} for (t, part), lag in sorted(lags.items())],
        "current_job": (
            {"request_id": snap.current_request or "", "running_seconds": now - snap.current_started}
            if snap is not None and snap.current_started is not None else None
        ),
        "counters": {"done": counters.done if counters else 0, "failed": counters.failed if counters else 0,
                     "dead_lettered": counters.dead_lettered if counters else 0},
        "voices": voices,
        "emitted_at": events.now(),
    }


class HealthReporter:
    """Publishes WorkerHealth on an interval and on assignment changes.

    It reads the processor's snapshot and never calls the consumer; listing voice presets reads S3,
    so ``start()`` runs it on a thread of its own, away from the poll loop."""

    def __init__(self, state: WorkerState, processor: Processor, worker_id: str, interval: float) -> None:
        self.state = state
        self.p = processor
        self.worker_id = worker_id
        self.interval = interval
        self._last = float("-inf")  # the first tick publishes, whatever the monotonic clock's origin
        self._voices: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="tts-health", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # health must never take the worker down
                log.exception("health publishing failed")
            self.p.assignment_changed.wait(min(1.0, self.interval))

    def tick(self) -> None:
        due = time.monotonic() - self._last >= self.interval
        if due or self.p.assignment_changed.is_set():
            self.p.assignment_changed.clear()
            self.publish()

    def reasons(self) -> list[str]:
        out: list[str] = []
        now = self.p.clock()
        snap = self.p.snapshot
        for label, err in (("storage", snap.storage_error), ("broker", snap.broker_error)):
            if err is not None and now - err[0] < RECENT_ERROR_SECONDS:
                out.append(f"{label}: {err[1]}"[:300])
        return out

    def publish(self, status: str | None = None) -> None:
        self._last = time.monotonic()
        reasons = self.reasons()
        gpu = gpu_record()
        if self.state.model is not None and self.state.model.device.startswith("cuda") and not gpu["available"]:
            reasons.append("gpu: CUDA no longer available")
        try:
            self._voices = sorted(self.p.voices.list())
        except Exception as exc:  # noqa: BLE001 (health must report a failure, never die of it)
            reasons.append(f"voices: {type(exc).__name__}")
        if status is None:
            status = self.state.status
            if status == "ready":
                # Same signal as /readyz: not 'ready' before the consumer has joined the group.
                ok, why = self.state.ready()
                if not ok:
                    status = "starting"
                    reasons.insert(0, why)
                elif reasons:
                    status = "degraded"
        lags = dict(self.p.snapshot.lags)
        value = self.p.codecs["WorkerHealth"].encode(
            health_record(self.state, self.worker_id, status, self._voices, lags=lags, gpu=gpu, reasons=reasons))
        try:
            self.p.events_producer.produce(self.p.s.kafka.health_topic, value, self.worker_id.encode())
            self.p.events_producer.poll(0)
        except BufferError:
            log.warning("health event dropped: local queue full")


def serve_http(state: WorkerState, host: str, port: int, *, poll_interval: float = 0.5) -> ThreadingHTTPServer:
    """/livez, /readyz and /metrics on a daemon thread; ``shutdown()`` takes up to ``poll_interval``."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                metrics.READY.set(1 if state.ready()[0] else 0)
                self._send(200, generate_latest(), CONTENT_TYPE_LATEST)
            elif path in ("/livez", "/readyz"):
                ok, why = state.live() if path == "/livez" else state.ready()
                body = json.dumps({"ok": ok, "status": state.status, "detail": why}).encode()
                self._send(200 if ok else 503, body, "application/json")
            else:
                self._send(404, b"not found\n", "text/plain")

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds: keep logs quiet
            return

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, args=(poll_interval,), name="tts-http", daemon=True).start()
    return server
