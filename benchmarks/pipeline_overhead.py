"""Keep the GPU busy: how much of the wall time the engine is actually working, and where the rest goes.

    uv run python -m benchmarks.pipeline_overhead [--requests 500] [--out artifacts/bench/pipeline.json]

Starts the real local stack (Kafka 4 + S3Proxy as local Java processes, or the servers named by
``KAFKA_BOOTSTRAP_SERVERS`` / ``S3_ENDPOINT_URL``), creates a bucket with one reference voice clip
and, per variant, fresh topics (``--partitions``, default 4) and a consumer group. The request topic
is filled BEFORE the processor starts, so the processor is saturated from its first poll to its last
commit. Then a real ``Processor`` runs with transactions (the product path: prefetch thread,
GPU thread, finish thread, batched transactional commits) and a stand-in or real engine:

- ``standin_200ms`` / ``standin_1s``: ``benchmarks.standin_engine.StandInEngine`` SLEEPS for that
  long per request (a GPU job leaves the CPU mostly free) and returns audio of a fixed real-time
  factor (``--rtf``, default 0.1: 2 s of 22.05 kHz audio for 200 ms of "GPU").
- ``standin_200ms_prefetch6``: the 200 ms stand-in with ``WORKER_PREFETCH=6`` (the setting of the
  first runs, before intake was taken just in time); the other variants use ``--prefetch``,
  default 1, the product default. See docs/benchmarks.md.
- ``naive_200ms`` / ``naive_1s``: ``benchmarks.naive_loop``, the loop a typical user writes with
  confluent-kafka, on the same stand-in, Kafka and S3: the comparison column.
- ``light_200ms`` / ``naive_light_200ms``: an idle worker (processor / naive loop) gets one request
  per ``--light-interval`` s; send -> result visible to a read_committed consumer, split by step.
- ``indextts2_tiny_cpu``: the product engine (factory ``processor.engine.loader:indextts2``) on the
  tiny random model from ``devstack.tiny_model`` (built into ``.cache/bench/tiny-model`` on first
  use), on the CPU.

Each variant runs in a fresh Python process (this module with ``--child``) that builds the
Processor itself and reads every committed Job's ``marks`` / ``stage_seconds`` through
``on_commit``; a fresh process per variant keeps RSS figures per variant and leaves no stage
threads, engine or caches behind for the next one.

Definitions (all from ``time.perf_counter`` marks on each Job; see docs/benchmarks.md):

- wall = last ``committed`` - first ``polled``.
- duty cycle = sum over jobs of (``engine_end`` - ``engine_start``) / wall.
- GPU idle gap (the per-request overhead): jobs sorted by ``engine_start``; for each job after the
  first, ``engine_start[i] - engine_end[i-1]``. The request topic is pre-filled, so the GPU thread
  always has work waiting: every gap is pipeline overhead, not lack of demand.
  wall = fill (first poll -> first engine_start) + sum(engine) + sum(gaps) + drain (last
  engine_end -> last commit).
- end-to-end latency = ``committed`` - ``polled`` (includes queueing behind the GPU: with a
  saturated queue it is mostly prefetch depth x engine time).
- stage times: ``stage_seconds`` (decode, download, encode, upload, commit) as the Processor records them.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import itertools
import json
import logging
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from devstack.clips import voice_clip

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = Path("artifacts/bench/pipeline.json")
DEFAULT_MODEL_DIR = REPO / ".cache" / "bench" / "tiny-model"
CLK_TCK = os.sysconf("SC_CLK_TCK")

STARTUP_JOBS = 20
GOALS = {"duty_cycle_min": 0.97, "gap_p50_ms_max": 15.0, "gap_p99_ms_max": 50.0}
STAGES = ("decode", "download", "synthesis", "encode", "upload", "commit")
MARKS = ("polled", "decoded", "prepared", "engine_start", "engine_end", "finish_start", "uploaded", "committed")
# Waits between marks: where a job sits when it is not being worked on.
INTERVALS = {
    "poll_to_decoded": ("polled", "decoded"),
    "decoded_to_prepared": ("decoded", "prepared"),       # prepare queue wait + download
    "prepared_to_engine": ("prepared", "engine_start"),    # waiting for the GPU (prefetch depth)
    "engine_to_finish": ("engine_end", "finish_start"),    # hand-off to the finish thread
    "finish_to_uploaded": ("finish_start", "uploaded"),    # encode + upload
    "uploaded_to_committed": ("uploaded", "committed"),    # poll-thread pickup + batching + transaction
}

log = logging.getLogger("benchmarks.pipeline_overhead")


@dataclass
class Variant:
    name: str
    label: str
    engine: str  # "standin" | "indextts2"
    requests: int
    hold_seconds: float = 0.0
    prefetch: int | None = None  # None: --prefetch
    worker: str = "processor"  # "processor" (the product) | "naive" (benchmarks.naive_loop, the comparison)
    load: str = "saturated"  # "saturated": topic pre-filled | "light": one request every --light-interval s
    output: dict[str, Any] | None = None  # output fields of every request (format, rate, loudness, ...)


# ================================================================================= shared helpers


def _status_kb(field: str, pid: str = "self") -> int | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    m = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) if m else None


def _cpu_seconds_of(pid: int | str, tid: int | None = None) -> float | None:
    """utime + stime of a process (or one of its threads) from /proc, in seconds. A thread's comes
    from its schedstat (nanoseconds) where the kernel has it: stat counts in clock ticks (10 ms), too
    coarse for a thread that spends a few milliseconds per request."""
    if tid is not None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0]) / 1e9
    path = f"/proc/{pid}/task/{tid}/stat" if tid is not None else f"/proc/{pid}/stat"
    try:
        raw = Path(path).read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14, 15 of stat(5)


def _children_of(pid: int) -> list[tuple[int, str]]:
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            raw = (d / "stat").read_text()
            ppid = int(raw[raw.rindex(")") + 2:].split()[1])
            if ppid == pid:
                out.append((int(d.name), (d / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:160]))
        except (OSError, ValueError):
            continue
    return out


def _pct(values: list[float], scale: float = 1.0) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None, "mean": None}
    a = np.asarray(values, dtype=float) * scale
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {"n": len(values), "p50": round(float(p50), 3), "p95": round(float(p95), 3),
            "p99": round(float(p99), 3), "max": round(float(a.max()), 3), "mean": round(float(a.mean()), 3)}


def request_record(request_id: str, voice: str, text: str) -> dict[str, Any]:
    nulls = ("emotion_reference", "emotion_vector", "emotion_text", "top_p", "top_k", "temperature", "num_beams",
             "repetition_penalty", "max_mel_tokens", "interval_silence_ms", "output_bucket", "output_key_prefix",
             "workflow_id", "stage_name", "deadline")
    return {**dict.fromkeys(nulls), "request_id": request_id, "text": text, "voice": voice,
            "created_at": datetime.now(UTC)}


# ===================================================================================== the child


def child_main(config_path: Path) -> int:
    """Run one Processor to completion over a pre-filled topic; write what every job went through."""
    cfg = json.loads(config_path.read_text())
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s")
    from processor.config import EngineSettings, HttpSettings, KafkaSettings, S3Settings, Settings, WorkerSettings
    from processor.kafka_io import (
        consumer_config,
        make_consumer,
        make_producer,
        plain_producer_config,
        transactional_producer_config,
    )
    from processor.pipeline import Job, Processor
    from processor.session import KafkaSession
    from processor.storage import Storage
    from processor.wire import make_codecs
    from processor.worker import load_engine

    t = cfg["topics"]
    settings = Settings(
        kafka=KafkaSettings(bootstrap_servers=cfg["bootstrap"], group_id=cfg["group"], request_topic=t["requests"],
                            result_topic=t["results"], progress_topic=t["progress"], health_topic=t["health"],
                            dlq_topic=t["dlq"]),
        s3=S3Settings(endpoint_url=cfg["s3_endpoint"], region=cfg["s3_region"], bucket=cfg["bucket"],
                      access_key_id=cfg["s3_access_key"] or None, secret_access_key=cfg["s3_secret_key"] or None,
                      reference_cache_dir=cfg["refcache_dir"]),
        # The real engine goes through the product's own factory (INDEX_TTS_ENGINE), offline, on the CPU.
        engine=EngineSettings(**{"engine": "processor.engine.loader:indextts2", "model_dir": cfg["model_dir"] or "-",
                                 "device": "cpu", "auto_download": False, "HF_HOME": cfg["hf_home"]}),
        worker=WorkerSettings(id=cfg["worker_id"], prefetch=cfg["prefetch"], max_batch=cfg["max_batch"],
                              shutdown_grace_seconds=10.0),
        http=HttpSettings(),
    )
    out: dict[str, Any] = {"pid": os.getpid(), "prefetch": settings.worker.prefetch,
                           "max_batch": settings.worker.max_batch}
    t0 = time.perf_counter()
    engine: Any
    if cfg["engine"] == "standin":
        from benchmarks.standin_engine import StandInEngine

        engine = StandInEngine(cfg["hold_seconds"], rtf=cfg["rtf"])
    else:
        engine = load_engine(settings.engine)
    out["engine_load_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    engine.warm_up()
    out["engine_warmup_seconds"] = time.perf_counter() - t0
    # As the worker does at start-up (processor.worker): try every output encoder once, so the first
    # request does not pay for importing them (seconds on this machine).
    with contextlib.suppress(ImportError):
        from processor.audio import encoder_problems

        t0 = time.perf_counter()
        encoder_problems()
        out["encoders_seconds"] = time.perf_counter() - t0
    out["engine_info"] = asdict(engine.info)
    torch = sys.modules.get("torch")  # only if the engine loaded it: importing it here would cost RSS
    if torch is not None:
        out["torch_threads"] = torch.get_num_threads()

    wid = settings.worker.id
    processor_ref: list[Processor] = []
    expected = int(cfg["expected"])
    collected: list[dict[str, Any]] = []
    deadline = time.monotonic() + float(cfg["timeout"])
    cpu_at_end: dict[str, Any] = {}
    cpu_after_first: dict[str, Any] = {}  # start-up and the first request's one-time costs end here
    timed_out = False
    turns = 0  # poll-loop turns (Processor.run_once calls)

    def thread_cpu() -> dict[str, float]:
        """CPU seconds per thread, Python threads by name, native ones (librdkafka) by comm."""
        names = {th.native_id: th.name for th in threading.enumerate() if th.native_id is not None}
        per: dict[str, float] = {}
        for task in Path("/proc/self/task").iterdir():
            tid = int(task.name)
            sec = _cpu_seconds_of("self", tid)
            if sec is None:
                continue
            if tid in names:
                name = "poll (main)" if names[tid] == "MainThread" else names[tid]
            else:
                try:
                    comm = (task / "comm").read_text().strip()
                except OSError:
                    comm = "?"
                if comm.startswith("rdk:"):  # librdkafka: rdk:main, rdk:broker1, rdk:broker-1 (bootstrap)
                    name = "librdkafka " + re.sub(r"[-\d]+$", "", comm[4:])
                elif comm.startswith("python"):
                    name = "other native (e.g. torch intra-op)"
                else:
                    name = comm
            per[name] = per.get(name, 0.0) + sec
        return per

    def snapshot_cpu() -> dict[str, Any]:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return {"process": ru.ru_utime + ru.ru_stime, "threads": thread_cpu(), "at": time.perf_counter()}

    def on_commit(jobs: list[Job]) -> None:
        for j in jobs:
            o = j.outcome
            collected.append({
                "partition": j.origin.partition, "offset": j.origin.offset,
                "status": o.status if o else "?", "error_code": o.error_code if o else "",
                "attempts": j.attempts, "marks": dict(j.marks), "stage_seconds": dict(j.stage_seconds),
            })
        if not cpu_after_first and collected:
            cpu_after_first.update(snapshot_cpu())
        if len(collected) >= expected and not cpu_at_end:
            cpu_at_end.update(snapshot_cpu())  # before shutdown closes the clients and their threads
            cpu_at_end["turns"] = turns
            processor_ref[0].request_stop()

    def on_tick() -> None:
        # Only a counter and a clock read: the RSS is sampled from the parent (``_Child``), so that the
        # measured process pays nothing for it (reading /proc/self/status per turn was ~0.4 ms of
        # poll-thread CPU per request at one request a second, charged to the processor column only).
        nonlocal timed_out, turns
        turns += 1
        now = time.monotonic()
        if now > deadline and not timed_out:
            timed_out = True
            log.error("variant timed out after %.0fs with %d/%d committed", cfg["timeout"], len(collected), expected)
            processor_ref[0].request_stop()

    if cfg["worker"] == "naive":
        return _run_naive(cfg, engine, out, snapshot_cpu, deadline)

    codecs = make_codecs(settings)
    events_producer = make_producer(plain_producer_config(settings.kafka, wid))
    session = KafkaSession(make_consumer({**consumer_config(settings.kafka, wid), **cfg["consumer_extra"]}),
                           make_producer(transactional_producer_config(settings.kafka, wid)))
    storage = Storage(settings.s3)
    storage.warm_up(settings.s3.bucket)  # as the worker does at start-up (the naive loop warms its client too)
    processor = Processor(settings, engine, storage, session, events_producer, codecs, on_commit=on_commit)
    processor_ref.append(processor)
    out["rss_before_run_kb"] = _status_kb("VmRSS")
    out["hwm_before_run_kb"] = _status_kb("VmHWM")
    try:  # reset the peak, so VmHWM below is the peak of the run itself (Linux >= 4.0)
        Path("/proc/self/clear_refs").write_text("5")
        out["hwm_reset"] = True
    except OSError:
        out["hwm_reset"] = False
    cpu_start = snapshot_cpu()
    out["run_started"] = time.perf_counter()
    processor.run(on_tick=on_tick)
    out["run_returned"] = time.perf_counter()
    out["rss_peak_kb"] = _status_kb("VmHWM")
    out["rss_after_run_kb"] = _status_kb("VmRSS")
    out["timed_out"] = timed_out
    end = cpu_at_end or snapshot_cpu()
    out["cpu_seconds"] = end["process"] - cpu_start["process"]
    out["cpu_threads_seconds"] = {k: round(v - cpu_start["threads"].get(k, 0.0), 4)
                                  for k, v in sorted(end["threads"].items(), key=lambda kv: -kv[1])}
    out["cpu_window_seconds"] = end["at"] - cpu_start["at"]
    _after_first(out, cpu_after_first, end)
    out["poll_turns"] = end.get("turns", turns)
    if isinstance(getattr(engine, "held", None), list):
        out["engine_held_seconds"] = engine.held
    out["jobs"] = collected
    Path(cfg["result_path"]).write_text(json.dumps(out))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # daemon stage threads and native clients need no orderly teardown here


def _after_first(out: dict[str, Any], first: dict[str, Any], end: dict[str, Any]) -> None:
    """CPU from the first request's commit to the last one's: the steady state, without start-up (group
    join, transactions' set-up) and first-use costs (clients' lazy set-up, the reference download)."""
    if first:
        out["cpu_after_first_seconds"] = end["process"] - first["process"]
        out["cpu_after_first_threads_seconds"] = {k: round(v - first["threads"].get(k, 0.0), 4)
                                                  for k, v in end["threads"].items()}


def _run_naive(cfg: dict[str, Any], engine: Any, out: dict[str, Any], snapshot_cpu: Any, deadline: float) -> int:
    """The comparison column: ``benchmarks.naive_loop`` in this process, measured like the processor."""
    from benchmarks import naive_loop

    expected = int(cfg["expected"])
    cpu_at_end: dict[str, Any] = {}
    cpu_after_first: dict[str, Any] = {}
    timed_out = False

    def on_job(done: int) -> None:
        if not cpu_after_first:
            cpu_after_first.update(snapshot_cpu())
        if done >= expected and not cpu_at_end:
            cpu_at_end.update(snapshot_cpu())  # before close() leaves the group

    def on_tick() -> bool:
        nonlocal timed_out
        if time.monotonic() > deadline and not timed_out:
            timed_out = True
            log.error("naive loop timed out after %.0fs", cfg["timeout"])
        return timed_out

    loop = naive_loop.NaiveLoop(cfg, engine)
    out["rss_before_run_kb"] = _status_kb("VmRSS")
    out["hwm_before_run_kb"] = _status_kb("VmHWM")
    try:
        Path("/proc/self/clear_refs").write_text("5")
        out["hwm_reset"] = True
    except OSError:
        out["hwm_reset"] = False
    cpu_start = snapshot_cpu()
    out["run_started"] = time.perf_counter()
    jobs = loop.run(on_tick=on_tick, on_job=on_job)
    out["run_returned"] = time.perf_counter()
    out["rss_peak_kb"] = _status_kb("VmHWM")
    out["timed_out"] = timed_out
    end = cpu_at_end or snapshot_cpu()
    out["cpu_seconds"] = end["process"] - cpu_start["process"]
    out["cpu_threads_seconds"] = {k: round(v - cpu_start["threads"].get(k, 0.0), 4)
                                  for k, v in sorted(end["threads"].items(), key=lambda kv: -kv[1])}
    out["cpu_window_seconds"] = end["at"] - cpu_start["at"]
    _after_first(out, cpu_after_first, end)
    out["jobs"] = jobs
    Path(cfg["result_path"]).write_text(json.dumps(out))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


# ===================================================================================== the parent


def summarize(variant: Variant, raw: dict[str, Any]) -> dict[str, Any]:
    jobs = raw["jobs"]
    ok = [j for j in jobs if j["status"] == "success"]
    res: dict[str, Any] = {
        "label": variant.label, "engine": variant.engine, "requests": variant.requests,
        "prefetch": raw.get("prefetch"),
        "committed": len(jobs), "succeeded": len(ok),
        "errors": sorted({f"{j['status']}:{j['error_code']}" for j in jobs if j["status"] != "success"}),
        "timed_out": raw.get("timed_out", False),
        "engine_info": raw.get("engine_info"),
        "engine_load_seconds": round(raw.get("engine_load_seconds", 0.0), 2),
        "engine_warmup_seconds": round(raw.get("engine_warmup_seconds", 0.0), 2),
    }
    if variant.engine == "standin":
        res["engine_hold_ms"] = variant.hold_seconds * 1000
        held = raw.get("engine_held_seconds") or []
        res["engine_hold_measured_ms"] = _pct(held, 1000)
    if "torch_threads" in raw:
        res["torch_threads"] = raw["torch_threads"]
    if not ok:
        return res
    first_poll = min(j["marks"]["polled"] for j in jobs)
    last_commit = max(j["marks"]["committed"] for j in jobs)
    wall = last_commit - first_poll
    gpu = sorted((j for j in ok if "engine_start" in j["marks"] and "engine_end" in j["marks"]),
                 key=lambda j: j["marks"]["engine_start"])
    engine_times = [j["marks"]["engine_end"] - j["marks"]["engine_start"] for j in gpu]
    gaps = [b["marks"]["engine_start"] - a["marks"]["engine_end"] for a, b in itertools.pairwise(gpu)]
    busy = sum(engine_times)
    fill = gpu[0]["marks"]["engine_start"] - first_poll
    drain = last_commit - gpu[-1]["marks"]["engine_end"]
    commits = sorted({j["marks"]["committed"] for j in jobs})
    batch_sizes: dict[float, int] = {}
    for j in jobs:
        batch_sizes[j["marks"]["committed"]] = batch_sizes.get(j["marks"]["committed"], 0) + 1
    res.update({
        "wall_seconds": round(wall, 3),
        "throughput_rps": round(len(jobs) / wall, 3) if wall > 0 else None,
        "engine_busy_seconds": round(busy, 3),
        "duty_cycle": round(busy / wall, 4) if wall > 0 else None,
        "gpu_idle_gap_ms": _pct(gaps, 1000),
        "gpu_idle_gap_sum_seconds": round(sum(gaps), 3),
        "overhead_ms_per_request_amortized": round((wall - busy) * 1000 / len(gpu), 3),
        "fill_ms": round(fill * 1000, 1),
        "drain_ms": round(drain * 1000, 1),
        "engine_ms": _pct(engine_times, 1000),
        "e2e_latency_s": _pct([j["marks"]["committed"] - j["marks"]["polled"] for j in jobs]),
        # Pickup (the worker's poll returned the request) -> its result is visible (the processor's
        # transaction committed; the naive loop's produce was acknowledged).
        "pickup_to_result_s": _pct([_result_mark(j) - j["marks"]["polled"] for j in jobs]),
        "pickup_to_result_jobs": _pct([(_result_mark(j) - j["marks"]["polled"]) / variant.hold_seconds
                                       for j in jobs]) if variant.hold_seconds else None,
        # The start-up stall: the largest GPU idle gap among the first STARTUP_JOBS jobs (before the
        # worker knows how long a job takes).
        "startup_stall_ms": round(max(gaps[:STARTUP_JOBS], default=0.0) * 1000, 1),
        "stage_ms": {s: _pct([j["stage_seconds"][s] for j in ok if s in j["stage_seconds"]], 1000) for s in STAGES},
        "interval_ms": {name: _pct([j["marks"][b] - j["marks"][a] for j in ok if a in j["marks"] and b in j["marks"]],
                                   1000) for name, (a, b) in INTERVALS.items()},
        "transactions": len(commits),
        "batch_size_mean": round(len(jobs) / len(commits), 2),
        "batch_size_max": max(batch_sizes.values()),
        "rss_mb": {
            "before_run": round((raw.get("rss_before_run_kb") or 0) / 1024, 1),
            "peak_run": round((raw.get("rss_peak_kb") or 0) / 1024, 1) if raw.get("hwm_reset") else None,
            "peak_sampled": round((raw.get("rss_peak_sampled_kb") or 0) / 1024, 1),
            "peak_process_lifetime": round(max(raw.get("hwm_before_run_kb") or 0, raw.get("rss_peak_kb") or 0)
                                           / 1024, 1),
        },
        "cpu": {
            "processor_seconds": round(raw["cpu_seconds"], 3),
            "processor_ms_per_request": round(raw["cpu_seconds"] * 1000 / len(jobs), 2),
            "processor_cores_mean": round(raw["cpu_seconds"] / raw["cpu_window_seconds"], 3)
            if raw.get("cpu_window_seconds") else None,
            "threads_seconds": raw.get("cpu_threads_seconds", {}),
            # The first request's commit to the last one's, per request after the first.
            "after_first_ms_per_request": round(raw["cpu_after_first_seconds"] * 1000 / (len(jobs) - 1), 2)
            if "cpu_after_first_seconds" in raw and len(jobs) > 1 else None,
            "after_first_threads_ms_per_request": {
                k: round(v * 1000 / (len(jobs) - 1), 3)
                for k, v in _grouped_threads(raw.get("cpu_after_first_threads_seconds", {})).items()}
            if len(jobs) > 1 else {},
            "threads_ms_per_request": {k: round(v * 1000 / len(jobs), 3)
                                       for k, v in _grouped_threads(raw.get("cpu_threads_seconds", {})).items()},
        },
        "poll_turns_per_request": round(raw["poll_turns"] / len(jobs), 1) if raw.get("poll_turns") else None,
    })
    # Per-partition offset order is what the commit path guarantees; record that it held.
    by_part: dict[int, list[int]] = {}
    for j in sorted(jobs, key=lambda j: j["marks"]["committed"]):
        by_part.setdefault(j["partition"], []).append(j["offset"])
    res["commit_order_ok"] = all(v == sorted(v) for v in by_part.values())
    if variant.name == "standin_200ms":
        res["goals"] = {
            **GOALS,
            "met": {
                "duty_cycle": res["duty_cycle"] >= GOALS["duty_cycle_min"],
                "gap_p50": res["gpu_idle_gap_ms"]["p50"] <= GOALS["gap_p50_ms_max"],
                "gap_p99": res["gpu_idle_gap_ms"]["p99"] <= GOALS["gap_p99_ms_max"],
            },
        }
    return res


def _grouped_threads(threads: dict[str, float]) -> dict[str, float]:
    """Per-thread CPU with numbered siblings (tts-s3-0, tts-s3-1, ...) added up under one name."""
    out: dict[str, float] = {}
    for name, sec in threads.items():
        key = re.sub(r"[-_]\d+$", "", name)
        out[key] = out.get(key, 0.0) + sec
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _result_mark(job: dict[str, Any]) -> float:
    return float(job["marks"].get("result", job["marks"]["committed"]))


def summarize_light(variant: Variant, raw: dict[str, Any], sent: dict[str, Any]) -> dict[str, Any]:
    """Send -> visible per request at one request per interval, and where the time went."""
    by_origin = {(j["partition"], j["offset"]): j for j in raw["jobs"]}
    rows = []
    for s in sent["sends"]:
        job = by_origin.get((s.get("partition"), s.get("offset")))
        if job is None or s.get("visible") is None:
            continue
        m = job["marks"]
        rows.append({
            "send_to_visible": s["visible"] - s["sent"],
            "send_to_polled": m["polled"] - s["sent"],
            "polled_to_engine": m["engine_start"] - m["polled"],
            "engine": m["engine_end"] - m["engine_start"],
            "engine_to_result": _result_mark(job) - m["engine_end"],
            "result_to_visible": s["visible"] - _result_mark(job),
        })
    out: dict[str, Any] = {"sent": len(sent["sends"]), "seen": len(rows)}
    for name in ("send_to_visible", "send_to_polled", "polled_to_engine", "engine", "engine_to_result",
                 "result_to_visible"):
        out[f"{name}_ms"] = _pct([r[name] for r in rows], 1000)
    return out


def machine_info() -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError):
        m = re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())
        mem_kb = int(m.group(1)) if m else 0
    return {"nproc": os.cpu_count(), "affinity_cpus": len(os.sched_getaffinity(0)), "cpu_model": cpu,
            "mem_total_gb": round(mem_kb / 1024 / 1024, 1), "kernel": platform.release(),
            "python": platform.python_version()}


def git_info() -> dict[str, Any]:
    def run(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    return {"commit": run("rev-parse", "HEAD"), "pipeline_py_dirty": bool(run("status", "--porcelain", "--",
                                                                              "processor/pipeline.py"))}


def ensure_tiny_model(model_dir: Path, log_path: Path) -> tuple[Path, Path]:
    """Build the tiny random IndexTTS2 (idempotent: skipped when complete). Returns (model_dir, hf_home)."""
    hf = model_dir / "hf"
    with log_path.open("ab") as fh:
        proc = subprocess.run([sys.executable, "-m", "devstack.tiny_model", str(model_dir), "--hf-home", str(hf)],
                              cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"devstack.tiny_model failed (rc={proc.returncode}); see {log_path}")
    return model_dir, hf


class _Child:
    """The variant's process: killed with us (PDEATHSIG) and never outliving the benchmark."""

    def __init__(self, config: dict[str, Any], log_path: Path) -> None:
        self.config_file = Path(tempfile.mkstemp(prefix="bench-", suffix=".json")[1])
        self.config_file.write_text(json.dumps(config))
        cmd = [sys.executable, "-m", "benchmarks.pipeline_overhead", "--child", str(self.config_file)]
        setpriv = shutil.which("setpriv")
        if setpriv and threading.current_thread() is threading.main_thread():
            cmd = [setpriv, "--pdeathsig", "KILL", "--", *cmd]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}
        self.log = log_path.open("ab")
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        self.rss_peak_kb = 0
        threading.Thread(target=self._sample_rss, name="rss-sampler", daemon=True).start()

    def _sample_rss(self) -> None:
        """Peak RSS seen every 0.1 s from outside (VmHWM, read by the child itself, is the exact peak)."""
        while self.proc.poll() is None:
            self.rss_peak_kb = max(self.rss_peak_kb, _status_kb("VmRSS", str(self.proc.pid)) or 0)
            time.sleep(0.1)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.error("variant process %d did not finish in %.0fs: killing it", self.proc.pid, timeout)
            return -9

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self.proc.wait(30)
        self.log.close()
        self.config_file.unlink(missing_ok=True)


def drive_light_load(bootstrap: str, topics: dict[str, str], codec: Any, prefix: str, voice_uri: str,
                     variant: Variant, args: argparse.Namespace, alive: Callable[[], bool]) -> dict[str, Any]:
    """Send one request every ``--light-interval`` s to an idle worker; note when each is sent and
    when its result becomes visible to a ``read_committed`` consumer (perf_counter: CLOCK_MONOTONIC,
    the same clock as the worker's marks)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

    visible: dict[bytes, float] = {}
    stop = threading.Event()
    observer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{prefix}-observer",
                         "isolation.level": "read_committed", "enable.auto.commit": False,
                         "fetch.wait.max.ms": 10})
    observer.assign([TopicPartition(topics["results"], p, OFFSET_BEGINNING) for p in range(args.partitions)])

    def observe() -> None:
        while not stop.is_set():
            msg = observer.poll(0.05)
            if msg is not None and not msg.error() and msg.key() is not None:
                visible.setdefault(msg.key(), time.perf_counter())

    watcher = threading.Thread(target=observe, name="observer", daemon=True)
    watcher.start()
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 0})
    sends: list[dict[str, Any]] = []

    def send(i: int) -> bytes:
        rid = f"{prefix}-{i:05d}"
        value = codec.encode(request_record(rid, voice_uri, f"Hello world, this is light-load request {i}."))
        entry: dict[str, Any] = {"key": rid}

        def delivered(err: Any, msg: Any) -> None:
            if err is None:
                entry.update(partition=msg.partition(), offset=msg.offset())

        entry["sent"] = time.perf_counter()
        producer.produce(topics["requests"], value, rid.encode(), partition=i % args.partitions,
                         on_delivery=delivered)
        producer.flush(10)
        sends.append(entry)
        return rid.encode()

    def wait_for(key: bytes, seconds: float) -> bool:
        end = time.monotonic() + seconds
        while key not in visible and time.monotonic() < end and alive():
            time.sleep(0.005)
        return key in visible

    try:
        if not wait_for(send(0), 120):
            raise RuntimeError("the warm-up request's result never became visible")
        start = time.perf_counter() + args.light_interval
        for i in range(1, variant.requests + 1):
            due = start + (i - 1) * args.light_interval
            while (left := due - time.perf_counter()) > 0:
                time.sleep(left)
            send(i)
        wait_for(sends[-1]["key"].encode(), 60)
        time.sleep(0.5)
    finally:
        stop.set()
        watcher.join(2)
        observer.close()
    for entry in sends:
        entry["visible"] = visible.get(entry["key"].encode())
    return {"warmup": sends[0], "sends": sends[1:]}


def run_variant(stack: Any, variant: Variant, args: argparse.Namespace, bucket: str, voice_uri: str,
                logs_dir: Path, model: tuple[Path, Path] | None) -> dict[str, Any]:
    from confluent_kafka import Producer

    from processor.wire import Codec

    prefix = f"bench-{variant.name.replace('_', '-')}-{uuid.uuid4().hex[:6]}"
    topics = {n: f"{prefix}.{n}" for n in ("requests", "results", "progress", "health", "dlq")}
    stack.create_topics({topics["requests"]: args.partitions, topics["results"]: args.partitions,
                         topics["progress"]: args.partitions, topics["health"]: 1, topics["dlq"]: 1})
    codec = Codec("TtsRequest")
    light = variant.load == "light"
    # Light load: one warm-up request (the worker has joined once its result is visible), then the
    # measured ones, sent one at a time while the worker runs.
    expected = variant.requests + 1 if light else variant.requests
    if not light:
        producer = Producer({"bootstrap.servers": stack.kafka_bootstrap, "enable.idempotence": True,
                             "linger.ms": 5})
        for i in range(variant.requests):
            rid = f"{prefix}-{i:05d}"
            text = f"Hello world, this is benchmark request number {i}."
            record = {**request_record(rid, voice_uri, text), **(variant.output or {})}
            producer.produce(topics["requests"], codec.encode(record), rid.encode(), partition=i % args.partitions)
        if producer.flush(60) != 0:
            raise RuntimeError("could not pre-fill the request topic")
        del producer

    with tempfile.TemporaryDirectory(prefix="bench-refcache-") as refcache:
        result_path = Path(refcache) / "result.json"
        if light:
            timeout = args.variant_timeout or 180 + variant.requests * (args.light_interval + variant.hold_seconds)
        elif variant.engine == "standin":
            timeout = args.variant_timeout or 180 + variant.requests * variant.hold_seconds * 3
        else:
            timeout = args.variant_timeout or 900 + variant.requests * 180
        config = {
            "bootstrap": stack.kafka_bootstrap, "s3_endpoint": stack.s3_endpoint, "s3_region": stack.s3_region,
            "s3_access_key": stack.s3_access_key, "s3_secret_key": stack.s3_secret_key, "bucket": bucket,
            "topics": topics, "group": f"{prefix}-group", "worker_id": f"{prefix}-w",
            "prefetch": variant.prefetch or args.prefetch, "max_batch": args.max_batch,
            "consumer_extra": args.consumer_extra,
            "engine": variant.engine, "hold_seconds": variant.hold_seconds, "rtf": args.rtf,
            "model_dir": str(model[0]) if model else None, "hf_home": str(model[1]) if model else None,
            "expected": expected, "timeout": timeout, "result_path": str(result_path), "worker": variant.worker,
            "refcache_dir": str(Path(refcache) / "refs"),
        }
        java = {name: getattr(getattr(stack, name), "pid", None) for name in ("kafka", "s3")}
        java_cpu0 = {n: _cpu_seconds_of(p) for n, p in java.items() if p}
        load0 = os.getloadavg()
        t0 = time.monotonic()
        child = _Child(config, logs_dir / f"{variant.name}.log")
        sent: dict[str, Any] | None = None
        try:
            if light:
                sent = drive_light_load(stack.kafka_bootstrap, topics, codec, prefix, voice_uri, variant, args,
                                        alive=lambda: child.proc.poll() is None)
            rc = child.wait(timeout + 300)
        finally:
            child.close()
        java_cpu1 = {n: _cpu_seconds_of(p) for n, p in java.items() if p}
        if rc != 0 or not result_path.exists():
            raise RuntimeError(f"variant {variant.name} failed (rc={rc}); see {logs_dir / (variant.name + '.log')}")
        raw = json.loads(result_path.read_text())
        raw["rss_peak_sampled_kb"] = child.rss_peak_kb
    res = summarize(variant, raw)
    if sent is not None:
        res["requests"] = expected  # the warm-up request is a request too
        res["light"] = summarize_light(variant, raw, sent)
        res["startup_stall_ms"] = None  # idle between requests: gaps are the load's, not the pipeline's
    res["process_seconds"] = round(time.monotonic() - t0, 1)
    res["loadavg_before"] = [round(x, 2) for x in load0]
    res["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    if java_cpu0:
        res["stack_cpu_seconds"] = {n: round((java_cpu1.get(n) or 0) - (c or 0), 2) for n, c in java_cpu0.items()}
    res["raw_jobs"] = [{"p": j["partition"], "o": j["offset"], "status": j["status"],
                        **{k: round(v - raw["run_started"], 6) for k, v in j["marks"].items()}}
                       for j in raw["jobs"]] if args.keep_jobs else None
    return res


# ---------------------------------------------------------------------------------------- output


def _fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _p3(d: dict[str, Any] | None, digits: int = 1) -> str:
    if not d or d.get("p50") is None:
        return "-"
    return f"{_fmt(d['p50'], digits)} / {_fmt(d['p95'], digits)} / {_fmt(d['p99'], digits)}"


def table(result: dict[str, Any]) -> str:
    cols = list(result["variants"].items())

    def cell(v: dict[str, Any], fn: Any) -> str:
        if not v.get("available", True):
            return "n/a"
        try:
            return str(fn(v))
        except (KeyError, TypeError):
            return "-"

    rows: list[tuple[str, Any]] = [
        ("requests ok / committed", lambda v: f"{v['succeeded']} / {v['committed']}"),
        ("prefetch (WORKER_PREFETCH)", lambda v: _fmt(v["prefetch"])),
        ("engine ms p50 (per request)", lambda v: _fmt(v["engine_ms"]["p50"], 0)),
        ("wall s (first poll→last commit)", lambda v: _fmt(v["wall_seconds"], 2)),
        ("throughput req/s", lambda v: _fmt(v["throughput_rps"], 3)),
        ("DUTY CYCLE", lambda v: _fmt(v["duty_cycle"], 4)),
        ("GPU idle gap ms p50/p95/p99", lambda v: _p3(v["gpu_idle_gap_ms"])),
        ("GPU idle gap ms max", lambda v: _fmt(v["gpu_idle_gap_ms"]["max"])),
        ("overhead ms/request, amortized", lambda v: _fmt(v["overhead_ms_per_request_amortized"], 2)),
        ("fill / drain ms", lambda v: f"{_fmt(v['fill_ms'], 0)} / {_fmt(v['drain_ms'], 0)}"),
        ("e2e poll→commit s p50/p95/p99", lambda v: _p3(v["e2e_latency_s"], 2)),
        ("pickup→result s p50/p95/p99", lambda v: _p3(v["pickup_to_result_s"], 2)),
        ("pickup→result, job lengths p50", lambda v: _fmt(v["pickup_to_result_jobs"]["p50"], 2)),
        ("start-up stall ms (max gap, 20 jobs)", lambda v: _fmt(v["startup_stall_ms"])),
        ("LIGHT send→visible ms p50/p95/p99", lambda v: _p3(v["light"]["send_to_visible_ms"])),
        ("light: send→polled ms p50", lambda v: _fmt(v["light"]["send_to_polled_ms"]["p50"])),
        ("light: polled→engine ms p50", lambda v: _fmt(v["light"]["polled_to_engine_ms"]["p50"])),
        ("light: engine→result ms p50", lambda v: _fmt(v["light"]["engine_to_result_ms"]["p50"])),
        ("light: result→visible ms p50", lambda v: _fmt(v["light"]["result_to_visible_ms"]["p50"])),
        ("decode ms p50/p95/p99", lambda v: _p3(v["stage_ms"]["decode"], 2)),
        ("download ms p50/p95/p99", lambda v: _p3(v["stage_ms"]["download"])),
        ("encode ms p50/p95/p99", lambda v: _p3(v["stage_ms"]["encode"], 2)),
        ("upload ms p50/p95/p99", lambda v: _p3(v["stage_ms"]["upload"])),
        ("produce+commit ms p50/p95/p99", lambda v: _p3(v["stage_ms"]["commit"])),
        ("uploaded→committed ms p50/p95/p99", lambda v: _p3(v["interval_ms"]["uploaded_to_committed"])),
        ("transactions (mean batch)", lambda v: f"{v['transactions']} ({v['batch_size_mean']})"),
        ("RSS MB before / peak of run", lambda v: f"{_fmt(v['rss_mb']['before_run'], 0)} / "
                                                   f"{_fmt(v['rss_mb']['peak_run'], 0)}"),
        ("processor CPU ms / request", lambda v: _fmt(v["cpu"]["processor_ms_per_request"])),
        ("… after the first request", lambda v: _fmt(v["cpu"].get("after_first_ms_per_request"))),
        ("… of it: poll thread ms", lambda v: _fmt(v["cpu"]["threads_ms_per_request"].get("poll (main)"), 2)),
        ("poll-loop turns / request", lambda v: _fmt(v["poll_turns_per_request"])),
        ("Kafka+S3 JVM CPU s", lambda v: _fmt(sum(v.get("stack_cpu_seconds", {}).values()), 1)),
        ("load avg (1 min) before→after", lambda v: f"{v['loadavg_before'][0]}→{v['loadavg_after'][0]}"),
    ]
    width = 34
    head = f"{'':{width}}" + "".join(f"{v.get('label', name):>26}" for name, v in cols)
    lines = [head, "-" * len(head)]
    for title, fn in rows:
        lines.append(f"{title:{width}}" + "".join(f"{cell(v, fn):>26}" for _, v in cols))
    for name, v in cols:
        if not v.get("available", True):
            lines.append(f"{name}: not run: {v.get('reason')}")
        elif v.get("errors"):
            lines.append(f"{name}: errors: {v['errors']}")
    goals = result["variants"].get("standin_200ms", {}).get("goals")
    if goals:
        lines.append(f"goals at 200 ms (duty >= {goals['duty_cycle_min']}, gap p50 <= {goals['gap_p50_ms_max']} ms, "
                     f"p99 <= {goals['gap_p99_ms_max']} ms): {goals['met']}")
    return "\n".join(lines)


HEADLINE: dict[str, Callable[[dict[str, Any]], Any]] = {
    "duty cycle": lambda v: v["duty_cycle"],
    "pickup→result s p50": lambda v: v["pickup_to_result_s"]["p50"],
    "pickup→result s p99": lambda v: v["pickup_to_result_s"]["p99"],
    "start-up stall ms": lambda v: v["startup_stall_ms"],
    "CPU ms / request": lambda v: v["cpu"]["processor_ms_per_request"],
    "CPU ms / request after the first": lambda v: v["cpu"].get("after_first_ms_per_request"),
    "mean batch": lambda v: v["batch_size_mean"],
    "light send→visible ms p50": lambda v: v["light"]["send_to_visible_ms"]["p50"],
    "light send→visible ms p99": lambda v: v["light"]["send_to_visible_ms"]["p99"],
}


def rounds_table(result: dict[str, Any]) -> str:
    """The headline figures over every round: median (min-max), so the spread shows."""
    rounds = result.get("rounds") or []
    names = list(dict.fromkeys(n for r in rounds for n in r))
    width = 28
    lines = [f"{'':{width}}" + "".join(f"{n:>26}" for n in names)]
    for title, fn in HEADLINE.items():
        cells = []
        for n in names:
            vals = []
            for r in rounds:
                with contextlib.suppress(KeyError, TypeError):
                    if r.get(n, {}).get("available") and fn(r[n]) is not None:
                        vals.append(float(fn(r[n])))
            if not vals:
                cells.append("-")
                continue
            digits = 4 if title == "duty cycle" else 2 if "s p" in title or "batch" in title else 1
            cells.append(f"{np.median(vals):.{digits}f} ({min(vals):.{digits}f}-{max(vals):.{digits}f})")
        lines.append(f"{title:{width}}" + "".join(f"{c:>26}" for c in cells))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.pipeline_overhead",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=500, help="requests for the 200 ms stand-in (default %(default)s)")
    p.add_argument("--requests-1s", type=int, default=100, help="requests for the 1 s stand-in (default %(default)s)")
    p.add_argument("--requests-p6", type=int, default=100,
                   help="requests for the 200 ms stand-in at prefetch=6 (default %(default)s)")
    p.add_argument("--requests-real", type=int, default=20,
                   help="requests for the tiny IndexTTS2 on CPU (default %(default)s)")
    p.add_argument("--requests-short", type=int, default=300,
                   help="requests for the 10 ms stand-in, standin_10ms (default %(default)s)")
    p.add_argument("--requests-light", type=int, default=30,
                   help="measured requests of the light-load columns (default %(default)s)")
    p.add_argument("--light-interval", type=float, default=1.0,
                   help="seconds between light-load requests (default %(default)s)")
    p.add_argument("--variants", default="standin_200ms,standin_200ms_prefetch6,standin_1s,indextts2_tiny_cpu",
                   help="comma-separated subset to run (default: the four processor columns); also "
                        "naive_200ms, naive_1s (the naive confluent-kafka loop), light_200ms, naive_light_200ms, "
                        "standin_10ms")
    p.add_argument("--rounds", type=int, default=1,
                   help="run the variants this many times, interleaved; the table shows median (min-max)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output (default %(default)s)")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--prefetch", type=int, default=1,
                   help="WORKER_PREFETCH for the processor (default %(default)s, the product default; "
                        "the standin_200ms_prefetch6 variant uses 6)")
    p.add_argument("--max-batch", type=int, default=16, help="WORKER_MAX_BATCH (default %(default)s)")
    p.add_argument("--consumer-extra", type=json.loads, default={}, metavar="JSON",
                   help="librdkafka properties merged into the processor's consumer config, "
                        "e.g. '{\"fetch.queue.backoff.ms\": 10}' (default: none, the product config)")
    p.add_argument("--rtf", type=float, default=0.1,
                   help="stand-in real-time factor: audio seconds = hold / rtf (default %(default)s)")
    p.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR, help="tiny model dir (built if missing)")
    p.add_argument("--variant-timeout", type=float, default=None, help="seconds per variant (default: scaled)")
    p.add_argument("--keep-jobs", action="store_true", help="also write every job's marks into the JSON")
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        return child_main(args.child)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    logging.getLogger("devstack.stack").setLevel(logging.INFO)
    # SIGTERM -> SystemExit, so the `with` blocks below stop the variant process and the servers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    from devstack.stack import LocalStack

    catalog = {
        "standin_200ms": Variant("standin_200ms", "stand-in 200 ms", "standin", args.requests, 0.2),
        "standin_200ms_prefetch6": Variant("standin_200ms_prefetch6", "200 ms, prefetch=6", "standin",
                                           args.requests_p6, 0.2, prefetch=6),
        "standin_1s": Variant("standin_1s", "stand-in 1 s", "standin", args.requests_1s, 1.0),
        "indextts2_tiny_cpu": Variant("indextts2_tiny_cpu", "IndexTTS2 tiny (CPU)", "indextts2",
                                      args.requests_real),
        # Jobs shorter than an upload: outcomes overlap, so transactions carry several (batching under load).
        "standin_10ms": Variant("standin_10ms", "stand-in 10 ms", "standin", args.requests_short, 0.01),
        # The comparison column (benchmarks/naive_loop.py) and the light-load (idle worker) columns.
        "naive_200ms": Variant("naive_200ms", "naive loop 200 ms", "standin", args.requests, 0.2, worker="naive"),
        "naive_1s": Variant("naive_1s", "naive loop 1 s", "standin", args.requests_1s, 1.0, worker="naive"),
        "light_200ms": Variant("light_200ms", "light 1/s, 200 ms", "standin", args.requests_light, 0.2,
                               load="light"),
        "naive_light_200ms": Variant("naive_light_200ms", "naive light 1/s, 200 ms", "standin",
                                     args.requests_light, 0.2, worker="naive", load="light"),
        # The same stand-in jobs with the finish stage doing real work: 48 kHz, loudness to -16 LUFS, then
        # Opus or MP3 (10 s of audio per 1 s job at --rtf 0.1). The GPU should stay as busy as with WAV.
        "standin_1s_opus48k_loud": Variant("standin_1s_opus48k_loud", "1 s, Opus 48k -16 LUFS", "standin",
                                           args.requests_1s, 1.0,
                                           output={"output_format": "opus", "sample_rate": 48000, "loudness": -16.0}),
        "standin_1s_mp3_48k_loud": Variant("standin_1s_mp3_48k_loud", "1 s, MP3 48k -16 LUFS", "standin",
                                           args.requests_1s, 1.0,
                                           output={"output_format": "mp3", "sample_rate": 48000, "loudness": -16.0}),
        # Listen while it renders on top: every segment is also rendered, stored and announced by the
        # segment thread (the stand-in returns one segment, so each request stores its audio twice).
        "standin_1s_mp3_48k_stream": Variant("standin_1s_mp3_48k_stream", "1 s, MP3 48k -16, streamed", "standin",
                                             args.requests_1s, 1.0,
                                             output={"output_format": "mp3", "sample_rate": 48000, "loudness": -16.0,
                                                     "stream_segments": True}),
        "standin_200ms_mp3_48k_loud": Variant("standin_200ms_mp3_48k_loud", "200 ms, MP3 48k -16 LUFS", "standin",
                                              args.requests, 0.2,
                                              output={"output_format": "mp3", "sample_rate": 48000,
                                                      "loudness": -16.0}),
    }
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in catalog]
    if unknown:
        print(f"unknown variants {unknown}; choose from {list(catalog)}", file=sys.stderr)
        return 2
    out_path = args.out if args.out.is_absolute() else Path.cwd() / args.out
    out_path.parent.mkdir(parents=True, exist_ok=True)
    logs_dir = out_path.parent / "logs"
    logs_dir.mkdir(exist_ok=True)

    started = datetime.now(UTC)
    result: dict[str, Any] = {
        "benchmark": "pipeline_overhead",
        "schema_version": 1,
        "date": started.isoformat(timespec="seconds"),
        "command": "uv run python -m benchmarks.pipeline_overhead " + " ".join(argv if argv is not None
                                                                                else sys.argv[1:]),
        "git": git_info(),
        "machine": machine_info(),
        "settings": {"partitions": args.partitions, "prefetch": args.prefetch, "max_batch": args.max_batch,
                     "transactions": True,
                     "consumer_extra": args.consumer_extra, "standin_mode": "sleep", "standin_rtf": args.rtf,
                     "standin_sample_rate": 22050,
                     "real_engine": "processor.engine.loader:indextts2 (tiny random model, device=cpu, offline)"},
        "definitions": {
            "duty_cycle": "sum(engine_end - engine_start) / (last committed - first polled)",
            "gpu_idle_gap": "jobs sorted by engine_start; engine_start[i] - engine_end[i-1] for i >= 1 "
                            "(request topic pre-filled, so the GPU thread is never short of demand)",
            "overhead_ms_per_request_amortized": "(wall - sum(engine)) / requests: gaps plus fill and drain",
            "e2e_latency": "committed - polled per job (includes queueing behind the GPU)",
            "stage_ms": "Job.stage_seconds as recorded by processor/pipeline.py",
            "rss_mb.peak_run": "VmHWM of the variant process, reset (clear_refs 5) right before Processor.run",
            "cpu.processor_ms_per_request": "user+sys CPU of the variant process from run start to last commit "
                                            "/ requests (includes the engine's own CPU for the real engine)",
            "cpu.after_first_ms_per_request": "the same from the first request's commit to the last one's / "
                                              "(requests - 1): without start-up and first-use costs",
        },
        "variants": {},
    }
    t_start = time.monotonic()
    try:
        with LocalStack() as stack:
            import confluent_kafka

            from devstack import stack as devstack_stack

            result["stack"] = {"kafka": stack.kafka.kind, "s3": stack.s3.kind,
                               "kafka_version": devstack_stack.KAFKA_VERSION,
                               "s3proxy_version": devstack_stack.S3PROXY_VERSION,
                               "confluent_kafka": str(confluent_kafka.version()),
                               "librdkafka": confluent_kafka.libversion()[0],
                               "startup_seconds": {k: round(v, 1) for k, v in stack.startup_seconds.items()},
                               "kafka_heap_mb": stack.kafka_heap_mb}
            bucket = f"bench-{started.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
            stack.create_bucket(bucket)
            stack.s3_client().put_object(Bucket=bucket, Key="voices/bench.wav", Body=voice_clip(seconds=3.0, seed=7))
            voice_uri = f"s3://{bucket}/voices/bench.wav"
            result["rounds"] = []
            for round_no in range(1, args.rounds + 1):
                this_round: dict[str, Any] = {}
                result["rounds"].append(this_round)
                for name in names:
                    variant = catalog[name]
                    log.info("round %d/%d, variant %s: %d requests", round_no, args.rounds, name,
                             variant.requests)
                    model = None
                    if variant.engine == "indextts2":
                        try:
                            # Are the engine and its factory there at all? (ImportError: column marked n/a)
                            for module in ("processor.engine.indextts2", "processor.engine.loader"):
                                importlib.import_module(module)

                            model = ensure_tiny_model(args.model_dir, logs_dir / "tiny_model.log")
                        except Exception as exc:  # the column stays, marked unavailable, with the reason  # noqa: BLE001
                            this_round[name] = result["variants"][name] = {
                                "label": variant.label, "available": False, "reason": f"{type(exc).__name__}: {exc}"}
                            log.warning("variant %s not run: %s", name, exc)
                            continue
                    try:
                        res = run_variant(stack, variant, args, bucket, voice_uri, logs_dir, model)
                    except RuntimeError as exc:
                        this_round[name] = result["variants"][name] = {
                            "label": variant.label, "available": False, "reason": str(exc)}
                        log.error("%s", exc)
                        continue
                    res["available"] = True
                    this_round[name] = result["variants"][name] = res
                    log.info("variant %s: duty %.4f, gap p50 %s ms", name, res.get("duty_cycle") or 0,
                             res.get("gpu_idle_gap_ms", {}).get("p50"))
                    if res["raw_jobs"] is None:
                        del res["raw_jobs"]
    finally:
        time.sleep(0.2)
        leftovers = [f"{pid} {cmd}" for pid, cmd in _children_of(os.getpid())]
        result["leftover_processes"] = leftovers
        result["total_seconds"] = round(time.monotonic() - t_start, 1)
        if result["variants"]:
            out_path.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    if args.rounds > 1:
        print(f"\nover {args.rounds} interleaved rounds, median (min-max):")
        print(rounds_table(result))
    print(f"\nwritten: {out_path}  (variant logs: {logs_dir})")
    if leftovers:
        print(f"WARNING: processes left behind: {leftovers}", file=sys.stderr)
        return 1
    failed = [n for r in result.get("rounds") or [result["variants"]] for n, v in r.items() if v.get("available")
              and (v.get("succeeded") != v.get("requests") or v.get("timed_out"))]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
