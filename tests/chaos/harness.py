"""Chaos harness: several worker processes, a stream of requests, SIGKILLs at random moments, a broker
restart and an S3 outage — then an audit of the result topic read with read_committed.

CI runs a short variant (tests/chaos/test_chaos.py). The long variant runs on demand:

    uv run python -m tests.chaos.harness --requests 1000 --workers 3 --kills 12 --out artifacts/chaos.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import subprocess
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.support.audio import voice_clip
from tests.support.workers import Topics, WorkerProcess, produce, read_all, request, worker_env


@dataclass
class ChaosReport:
    requests: int
    workers: int
    kills: int = 0
    broker_restarts: int = 0
    s3_outages: int = 0
    s3_outage_seconds: float = 0.0
    results: int = 0
    successes: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    lost: int = 0
    wav_checked: int = 0
    wav_bad: int = 0
    seconds: float = 0.0
    worker_exits: list[int] = field(default_factory=list)

    def line(self) -> str:
        return (f"chaos: requests={self.requests} workers={self.workers} kills={self.kills} "
                f"broker_restarts={self.broker_restarts} s3_outages={self.s3_outages} results={self.results} "
                f"successes={self.successes} errors={sum(self.errors.values())} duplicates={self.duplicates} "
                f"lost={self.lost} wav_bad={self.wav_bad} seconds={self.seconds:.0f}")


class ResultReader(threading.Thread):
    """Reads the result topic continuously so the audit sees everything, across the broker restart."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic = bootstrap, topic
        self.records: list[dict[str, Any]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        from confluent_kafka import Consumer

        from processor.wire import Codec

        codec = Codec("TtsResult")
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"audit-{time.time_ns()}", "log_level": 2,
                      "auto.offset.reset": "earliest", "enable.auto.commit": False,
                      "isolation.level": "read_committed"})
        c.subscribe([self.topic])
        while not self.stop.is_set():
            msg = c.poll(0.2)
            if msg is not None and not msg.error():
                self.records.append(codec.decode(msg.value()))
        c.close()


def run_chaos(stack: Any, tmp: Path, *, requests: int = 200, workers: int = 3, kills: int = 4,
              job_seconds: float = 0.25, broker_restart: bool = True, s3_outage_seconds: float = 15.0,
              partitions: int = 6, seed: int = 7, timeout: float = 900.0) -> ChaosReport:
    rng = random.Random(seed)
    prefix = f"chaos-{time.strftime('%H%M%S')}-{rng.randrange(10**6)}"
    topics = Topics.create(stack, prefix, partitions=partitions)
    bucket = prefix
    stack.create_bucket(bucket)
    s3 = stack.s3_client()
    s3.put_object(Bucket=bucket, Key="voice.wav", Body=voice_clip())
    env = worker_env(stack, topics, bucket, f"{prefix}-group", tmp, TONE_ENGINE_SECONDS=str(job_seconds),
                     KAFKA_SESSION_TIMEOUT_MS="6000", KAFKA_TRANSACTION_TIMEOUT_MS="15000",
                     WORKER_SHUTDOWN_GRACE_SECONDS="5", WORKER_MAX_ATTEMPTS="10")
    # Stable ids, as a StatefulSet gives: a restarted worker fences its predecessor's open transaction.
    pool = [WorkerProcess(env, tmp / f"w{i}.log", worker_id=f"{prefix}-w{i}") for i in range(workers)]
    report = ChaosReport(requests=requests, workers=workers)
    t_start = time.monotonic()
    for w in pool:
        w.start()
    for w in pool:
        w.wait_ready()
    reader = ResultReader(stack.kafka_bootstrap, topics.results)
    reader.start()

    ids = [f"c{i:05d}" for i in range(requests)]
    texts = ["short one", "a somewhat longer sentence with words", "one two three four five six seven eight"]

    def feed() -> None:  # a stream, not one burst: chaos lands while requests keep arriving
        for start in range(0, requests, 20):
            batch = [request(i, f"s3://{bucket}/voice.wav", text=rng.choice(texts), max_text_tokens_per_segment=20)
                     for i in ids[start:start + 20]]
            produce(stack.kafka_bootstrap, topics.requests, batch)
            time.sleep(0.3)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()

    def seen() -> set[str]:
        return {r["request_id"] for r in list(reader.records)}

    # Spread the events over the expected busy period.
    busy = requests * job_seconds / workers
    events: list[tuple[float, str]] = [(rng.uniform(0.05, 0.9) * busy + 2, "kill") for _ in range(kills)]
    if broker_restart:
        events.append((0.4 * busy + 2, "broker"))
    if s3_outage_seconds > 0:
        events.append((0.65 * busy + 2, "s3"))
    events.sort()
    t0 = time.monotonic()
    for at, kind in events:
        while time.monotonic() - t0 < at:
            time.sleep(0.05)
        if kind == "kill":
            victim = rng.choice([w for w in pool if w.alive] or pool)
            victim.kill()
            report.kills += 1
            time.sleep(rng.uniform(0.5, 3.0))
            victim.start()  # same id: fences the zombie's transaction at init
        elif kind == "broker":
            stack.kafka.restart(hard=True, down_for=3.0)
            report.broker_restarts += 1
        else:
            stack.s3.stop()
            time.sleep(s3_outage_seconds)
            stack.s3.start()
            report.s3_outages += 1
            report.s3_outage_seconds = s3_outage_seconds
        for w in pool:  # a worker that died on its own (fatal error → exit 3) is restarted like k8s would
            if not w.alive and w.proc is not None and w.proc.returncode not in (None, -9):
                report.worker_exits.append(int(w.proc.returncode))
                w.start()

    deadline = time.monotonic() + timeout
    while len(seen()) < requests and time.monotonic() < deadline:
        for w in pool:
            if not w.alive and w.proc is not None and w.proc.returncode not in (None, -9):
                report.worker_exits.append(int(w.proc.returncode))
                w.start()
        time.sleep(0.5)
    time.sleep(5)  # anything late (a duplicate) has time to show up
    for w in pool:
        w.terminate()
    for w in pool:
        try:
            w.wait(30)
        except subprocess.TimeoutExpired:
            w.kill()
    reader.stop.set()
    reader.join(10)
    # A final independent read of the whole topic, not just what the live reader saw.
    final = [r for r, _ in read_all(stack.kafka_bootstrap, topics.results, "TtsResult", until=requests,
                                    timeout=120, settle=3)]
    counts = Counter(r["request_id"] for r in final)
    report.results = len(final)
    report.duplicates = sum(v - 1 for v in counts.values() if v > 1)
    report.lost = len(set(ids) - set(counts))
    for r in final:
        if r["status"] == "success":
            report.successes += 1
            body = s3.get_object(Bucket=r["output_bucket"], Key=r["output_key"])["Body"].read()
            report.wav_checked += 1
            if hashlib.sha256(body).hexdigest() != r["sha256"]:
                report.wav_bad += 1
        else:
            report.errors[r["error_code"]] = report.errors.get(r["error_code"], 0) + 1
    report.seconds = time.monotonic() - t_start
    return report


def main() -> None:
    from devstack.stack import LocalStack

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--kills", type=int, default=12)
    ap.add_argument("--job-seconds", type=float, default=0.25)
    ap.add_argument("--s3-outage-seconds", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--logs", default="artifacts/chaos-logs", help="worker logs are kept here")
    args = ap.parse_args()
    logs = Path(args.logs)
    logs.mkdir(parents=True, exist_ok=True)
    with LocalStack() as stack:
        report = run_chaos(stack, logs, requests=args.requests, workers=args.workers, kills=args.kills,
                           job_seconds=args.job_seconds, s3_outage_seconds=args.s3_outage_seconds, seed=args.seed,
                           timeout=3600)
    print(report.line())
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(asdict(report), indent=2))
    raise SystemExit(0 if report.duplicates == 0 and report.lost == 0 and report.wav_bad == 0 else 1)


if __name__ == "__main__":
    main()
