"""Strict chaos harness: worker processes on the real Kafka + S3, a stream of requests, SIGKILLs (some
inside the commit window), a broker restart and an S3 brown-out where S3 HANGS; then an audit of every
committed result.

The run FAILS (``ChaosReport.failures()``) on any of:
- a worker exit the harness did not cause (a crash is recorded, never restarted as if it were a kill);
- a request with no committed result, or with more than one (read with read_committed to the end
  offsets of the result topic after every worker stopped, so a late duplicate cannot hide);
- a success count or a per-code error count other than the plan's (every request is valid except the
  ones planned to fail with a given code, so 200 ``storage_error`` results cannot pass);
- a result whose stored object's sha256 is not the one the result states. The stand-in engine renders
  other bytes on every attempt (``TONE_ENGINE_VARY``), so an object overwritten by a late attempt shows;
- a dead letter; a stall (no new result for ``stall_seconds`` while requests are outstanding); a worker
  whose ``/livez`` failed for as long as the chart's liveness probe allows;
- fewer kills, kills inside transactions, broker restarts or S3 hangs than planned.

Kills inside the commit window use the worker's test-only hook ``TTS_TEST_PARK_IN_TXN_SECONDS``: every
transaction is held open that long after the offsets were sent; the harness waits for the worker's
"parked inside a transaction" log line and kills it at once.

The S3 brown-out goes through ``tests.support.stall_proxy``: workers reach S3 through a loopback proxy
that, during the hang, accepts connections and forwards nothing. The harness's own S3 client talks
to S3 directly.

CI runs a short variant (tests/chaos/test_chaos.py). The long variant runs on demand, on a private stack
(it restarts the broker, so never against a shared one):

    env -u KAFKA_BOOTSTRAP_SERVERS -u S3_ENDPOINT_URL uv run python -m tests.chaos.harness \\
        --requests 1000 --kills 12 --kills-in-txn 4 --s3-hang-seconds 40 --out artifacts/chaos.json
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import hashlib
import json
import random
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from processor.wire import Codec
from processor.worker import EXIT_FATAL
from tests.support.audio import voice_clip
from tests.support.stall_proxy import StallProxy
from tests.support.workers import Topics, WorkerProcess, produce, request, worker_env

PARK_LINE = b"parked inside a transaction"
# The chart's liveness probe: 6 failures 10 s apart restart the pod.
LIVENESS_FAILURE_SECONDS = 60.0
REPLACEMENT_LINE = "replacing the transactional producer; nothing is committed"


@dataclass
class ChaosPlan:
    requests: int = 200
    workers: int = 3
    kills: int = 4  # in all, including the ones inside transactions
    kills_in_txn: int = 2
    broker_restart: bool = True
    s3_hang_seconds: float = 10.0
    job_seconds: float = 0.25
    park_in_txn_seconds: float = 0.4
    partitions: int = 6
    engine_fail_every: int = 50  # request i with i % n == n - 1 asks the engine to fail: engine_error
    invalid_every: int = 67  # ... carries an out-of-range top_p: invalid_request
    stall_seconds: float = 60.0
    seed: int = 7
    timeout: float = 900.0
    extra_env: dict[str, str] = field(default_factory=dict)  # e.g. {"KAFKA_EXTRA": '{"debug": "eos"}'}
    # Off by default: every exit the harness did not cause fails the run. On, an exit with the
    # processor's designed "restart me" code (EXIT_FATAL: a transaction that could neither commit nor
    # abort in its budget, docs/chaos.md finding 3) is counted in fatal_restarts and restarted as
    # Kubernetes would; any other exit code, and every delivery check, stays strict.
    restart_fatal_exits: bool = False

    def expected_errors(self) -> dict[str, int]:
        codes = Counter(code for i in range(self.requests) if (code := self.planned_error(i)))
        return dict(codes)

    def planned_error(self, i: int) -> str:
        if self.invalid_every and i % self.invalid_every == self.invalid_every - 1:
            return "invalid_request"
        if self.engine_fail_every and i % self.engine_fail_every == self.engine_fail_every - 1:
            return "engine_error"
        return ""


@dataclass
class ChaosReport:
    requests: int
    workers: int
    kills: int = 0
    kills_in_txn: int = 0
    broker_restarts: int = 0
    s3_hangs: int = 0
    s3_hang_seconds: float = 0.0
    s3_connections_held: int = 0
    results: int = 0
    successes: int = 0
    expected_successes: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    expected_errors: dict[str, int] = field(default_factory=dict)
    dead_letters: int = 0
    duplicates: int = 0
    lost: int = 0
    wav_checked: int = 0
    sha256_mismatches: int = 0
    orphans: int = 0
    unexpected_exits: list[str] = field(default_factory=list)
    fatal_restarts: list[str] = field(default_factory=list)  # only with ChaosPlan.restart_fatal_exits
    producer_replacements: int = 0
    stalls: int = 0
    max_result_gap_seconds: float = 0.0
    liveness_failures: int = 0
    liveness_notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    planned: dict[str, Any] = field(default_factory=dict)
    calm_since: float = 0.0  # monotonic time the last disruption ended (not reported)

    def failures(self) -> list[str]:
        p = self.planned
        bad = [f"unexpected worker exit: {e}" for e in self.unexpected_exits] + self.liveness_notes
        checks = [
            (self.lost == 0, f"lost={self.lost}"),
            (self.duplicates == 0, f"duplicates={self.duplicates}"),
            (self.sha256_mismatches == 0, f"sha256_mismatches={self.sha256_mismatches}"),
            (self.wav_checked == self.successes, f"wav_checked={self.wav_checked} of {self.successes}"),
            (self.successes == self.expected_successes,
             f"successes={self.successes}, expected {self.expected_successes}"),
            (self.errors == self.expected_errors, f"errors={self.errors}, expected {self.expected_errors}"),
            (self.dead_letters == 0, f"dead_letters={self.dead_letters}"),
            (self.stalls == 0, f"stalls={self.stalls} (max gap {self.max_result_gap_seconds:.0f}s)"),
            (self.kills >= p.get("kills", 0), f"kills={self.kills}, planned {p.get('kills')}"),
            (self.kills_in_txn >= p.get("kills_in_txn", 0),
             f"kills_in_txn={self.kills_in_txn}, planned {p.get('kills_in_txn')}"),
            (self.broker_restarts >= int(p.get("broker_restart", False)), f"broker_restarts={self.broker_restarts}"),
            (self.s3_hangs >= int(p.get("s3_hang_seconds", 0) > 0), f"s3_hangs={self.s3_hangs}"),
        ]
        return bad + [msg for ok, msg in checks if not ok]

    def line(self) -> str:
        return (f"chaos: requests={self.requests} workers={self.workers} kills={self.kills} "
                f"kills_in_txn={self.kills_in_txn} broker_restarts={self.broker_restarts} "
                f"s3_hang={self.s3_hang_seconds:.0f}s held={self.s3_connections_held} results={self.results} "
                f"successes={self.successes} errors={self.errors} dead_letters={self.dead_letters} "
                f"duplicates={self.duplicates} lost={self.lost} sha256_mismatches={self.sha256_mismatches} "
                f"orphans={self.orphans} unexpected_exits={len(self.unexpected_exits)} "
                f"fatal_restarts={len(self.fatal_restarts)} producer_replacements={self.producer_replacements} "
                f"stalls={self.stalls} "
                f"max_gap={self.max_result_gap_seconds:.0f}s liveness_failures={self.liveness_failures} "
                f"seconds={self.seconds:.0f}")


class Worker:
    """One worker process under the harness: every exit is either caused by the harness or a failure."""

    def __init__(self, proc: WorkerProcess, report: ChaosReport, *, restart_fatal: bool = False) -> None:
        self.proc = proc
        self.report = report
        self.restart_fatal = restart_fatal
        self.lock = threading.Lock()
        self.expect_exit = False  # set before the harness signals the process
        self.crashed = False
        self.live_fail_since: float | None = None

    @property
    def name(self) -> str:
        return self.proc.worker_id

    def start(self) -> None:
        with self.lock:
            self.expect_exit = False
            self.proc.start()

    def kill(self) -> None:
        with self.lock:
            self.expect_exit = True
            self.proc.kill()

    def terminate(self, timeout: float) -> None:
        with self.lock:
            if self.crashed or not self.proc.alive:
                return
            self.expect_exit = True
            self.proc.terminate()
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.dump_stacks()
            self._unexpected(f"did not stop within {timeout:.0f}s of SIGTERM (thread stacks in its log)")
            return
        if code != 0:
            self._unexpected(f"exited {code} after SIGTERM")

    def dump_stacks(self) -> None:
        """End the process with SIGABRT: faulthandler (PYTHONFAULTHANDLER) writes every thread's stack
        to its log first, so a stuck worker says where it was stuck."""
        with self.lock:
            self.expect_exit = True
            p = self.proc.proc
            if p is None or p.poll() is not None:
                return
            p.send_signal(signal.SIGABRT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(10)
            self.proc.kill()

    def check(self) -> None:
        """Record an exit the harness did not cause (called by the monitor, often)."""
        with self.lock:
            p = self.proc.proc
            if self.expect_exit or self.crashed or p is None or p.poll() is None:
                return
            if not (self.restart_fatal and p.returncode == EXIT_FATAL):
                self.crashed = True
        if self.crashed:
            self._unexpected(f"exited {p.returncode} on its own")
            return
        tail = self.proc.logs()[-400:].replace("\n", " | ")
        self.report.fatal_restarts.append(f"{self.name} exited {EXIT_FATAL} (fatal, restarted): ...{tail}")
        self.start()
        self.report.calm_since = max(self.report.calm_since, time.monotonic())

    def _unexpected(self, what: str) -> None:
        tail = self.proc.logs()[-1500:].replace("\n", "\n    ")
        self.report.unexpected_exits.append(f"{self.name} {what}; log tail:\n    {tail}")

    def log_size(self) -> int:
        try:
            return self.proc.log_path.stat().st_size
        except OSError:
            return 0

    def log_contains(self, needle: bytes, after: int) -> bool:
        """Whether the log has ``needle`` past byte ``after``."""
        with self.proc.log_path.open("rb") as f:
            f.seek(after)
            return needle in f.read()


class ResultWatch(threading.Thread):
    """Reads the result topic (read_committed) as results arrive: progress and stall detection only;
    the audit reads the topic again from the start."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True, name="result-watch")
        self.bootstrap, self.topic = bootstrap, topic
        self.seen: set[str] = set()
        self.last_new = time.monotonic()
        self.stop = threading.Event()

    def run(self) -> None:
        codec = Codec("TtsResult")
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"watch-{uuid.uuid4().hex[:8]}",
                      "log_level": 2, "auto.offset.reset": "earliest", "enable.auto.commit": False,
                      "isolation.level": "read_committed"})
        c.subscribe([self.topic])
        try:
            while not self.stop.is_set():
                msg = c.poll(0.2)
                if msg is not None and not msg.error():
                    rid = codec.decode(msg.value())["request_id"]
                    if rid not in self.seen:
                        self.seen.add(rid)
                        self.last_new = time.monotonic()
        finally:
            c.close()


def read_to_end(bootstrap: str, topic: str, timeout: float = 120.0) -> list[Any]:
    """Every committed record of ``topic``: read with read_committed until the consumer's position
    reaches the end offset each partition had when the read began. Call it once no producer is left:
    an open transaction holds the read back until it is resolved (that is the point)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"audit-{uuid.uuid4().hex[:8]}", "log_level": 2,
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "isolation.level": "read_committed", "enable.partition.eof": True})
    try:
        md = c.list_topics(topic, timeout=30)
        parts = sorted(md.topics[topic].partitions)
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in parts}
        c.assign([TopicPartition(topic, p, 0) for p in parts])
        pos = {p: 0 for p in parts}
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        while any(pos[p] < ends[p] for p in parts):
            if time.monotonic() > deadline:
                raise AssertionError(f"{topic}: read_committed did not reach the end offsets {ends} "
                                     f"in {timeout:.0f}s (at {pos}): a transaction left open?")
            msg = c.poll(0.2)
            if msg is None:
                continue
            p, off = msg.partition(), msg.offset()
            assert p is not None
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF and off is not None:
                    pos[p] = max(pos[p], off)
                continue
            assert off is not None
            out.append(msg.value())
            pos[p] = max(pos[p], off + 1)
        return out
    finally:
        c.close()


def run_chaos(stack: Any, tmp: Path, plan: ChaosPlan | None = None) -> ChaosReport:
    plan = plan or ChaosPlan()
    rng = random.Random(plan.seed)
    prefix = f"chaos-{time.strftime('%H%M%S')}-{rng.randrange(10**6)}"
    topics = Topics.create(stack, prefix, partitions=plan.partitions)
    bucket = prefix
    stack.create_bucket(bucket)
    s3 = stack.s3_client()
    s3.put_object(Bucket=bucket, Key="voice.wav", Body=voice_clip())
    report = ChaosReport(requests=plan.requests, workers=plan.workers, planned=asdict(plan),
                         expected_errors=plan.expected_errors())
    report.expected_successes = plan.requests - sum(report.expected_errors.values())
    proxy = StallProxy.for_url(stack.s3_endpoint).start()
    env = worker_env(stack, topics, bucket, f"{prefix}-group", tmp, TONE_ENGINE_SECONDS=str(plan.job_seconds),
                     TONE_ENGINE_VARY="1", S3_ENDPOINT_URL=proxy.endpoint, PYTHONFAULTHANDLER="1",
                     TTS_TEST_PARK_IN_TXN_SECONDS=str(plan.park_in_txn_seconds),
                     KAFKA_SESSION_TIMEOUT_MS="6000", KAFKA_TRANSACTION_TIMEOUT_MS="15000",
                     WORKER_SHUTDOWN_GRACE_SECONDS="5", WORKER_MAX_ATTEMPTS="10", **plan.extra_env)
    # Stable ids, as a StatefulSet gives: a restarted worker fences its predecessor's open transaction.
    pool = [Worker(WorkerProcess(env, tmp / f"w{i}.log", worker_id=f"{prefix}-w{i}"), report,
                   restart_fatal=plan.restart_fatal_exits)
            for i in range(plan.workers)]
    t_start = time.monotonic()
    done = threading.Event()
    try:
        for w in pool:
            w.start()
        for w in pool:
            w.proc.wait_ready()
        watch = ResultWatch(stack.kafka_bootstrap, topics.results)
        watch.start()
        monitor = threading.Thread(target=_monitor, args=(pool, watch, plan, report, done), daemon=True)
        monitor.start()
        feeder = threading.Thread(target=_feed, args=(stack, topics, bucket, plan), daemon=True)
        feeder.start()
        _inflict(stack, pool, proxy, plan, report, rng, watch)

        deadline = time.monotonic() + plan.timeout
        # A run that has failed already (crash, stall, liveness) ends here rather than at the timeout.
        while (len(watch.seen) < plan.requests and time.monotonic() < deadline and not report.unexpected_exits
               and not report.stalls and not report.liveness_failures):
            time.sleep(0.2)
        if len(watch.seen) < plan.requests and time.monotonic() >= deadline:
            report.stalls += 1  # still outstanding at the timeout
        feeder.join(60)
        done.set()
        monitor.join(10)
        for w in pool:
            w.terminate(timeout=30)
        watch.stop.set()
        watch.join(10)
    finally:
        done.set()
        for w in pool:
            if w.proc.alive:
                w.kill()
        report.s3_connections_held = proxy.held
        proxy.close()
        # Each in-place producer replacement (a stuck transactional call, docs/chaos.md finding 3)
        # is logged once by the session: counted here so a run shows how often the worker survived one.
        report.producer_replacements = sum(w.proc.logs().count(REPLACEMENT_LINE) for w in pool)

    _audit(stack, s3, topics, bucket, plan, report)
    report.seconds = time.monotonic() - t_start
    return report


def _feed(stack: Any, topics: Topics, bucket: str, plan: ChaosPlan) -> None:
    """A stream, not one burst: the chaos lands while requests keep arriving."""
    rng = random.Random(plan.seed + 1)
    texts = ["short one", "a somewhat longer sentence with words", "one two three four five six seven eight"]
    # Fed at ~80% of what the workers can do, so work flows through the whole run and every
    # disruption (placed by the share of requests answered) meets requests in flight.
    rate = 0.8 * plan.workers / max(plan.job_seconds, 0.01)
    t0 = time.monotonic()
    for start in range(0, plan.requests, 10):
        while time.monotonic() < t0 + start / rate:
            time.sleep(0.02)
        batch = []
        for i in range(start, min(start + 10, plan.requests)):
            fields: dict[str, Any] = {"text": rng.choice(texts), "max_text_tokens_per_segment": 20}
            code = plan.planned_error(i)
            if code == "engine_error":
                fields["text"] = "please ENGINE_FAIL now"
            elif code == "invalid_request":
                fields["top_p"] = 5.0
            batch.append(request(f"c{i:05d}", f"s3://{bucket}/voice.wav", **fields))
        produce(stack.kafka_bootstrap, topics.requests, batch)


def _monitor(pool: list[Worker], watch: ResultWatch, plan: ChaosPlan, report: ChaosReport,
             done: threading.Event) -> None:
    """Unexpected exits, stalls and liveness, checked every 0.2 s while the chaos runs."""
    in_gap = False
    next_live = 0.0
    while not done.wait(0.2):
        for w in pool:
            w.check()
        now = time.monotonic()
        if len(watch.seen) < plan.requests:
            # Measured from the last result or the end of the last disruption, whichever is later: a
            # broker that takes 40 s to come back on a busy machine is not a stall of the workers.
            gap = now - max(watch.last_new, report.calm_since)
            report.max_result_gap_seconds = max(report.max_result_gap_seconds, gap, 0.0)
            if gap >= plan.stall_seconds and not in_gap:
                report.stalls += 1
                in_gap = True
            elif gap < plan.stall_seconds:
                in_gap = False
        if now >= next_live:
            next_live = now + 2.0
            for w in pool:
                _check_live(w, now, report)


def _check_live(w: Worker, now: float, report: ChaosReport) -> None:
    if w.expect_exit or w.crashed or not w.proc.alive:
        w.live_fail_since = None
        return
    try:
        ok = w.proc.http("/livez")[0] == 200
    except OSError:
        ok = False
    if ok:
        w.live_fail_since = None
    elif w.live_fail_since is None:
        w.live_fail_since = now
    elif now - w.live_fail_since >= LIVENESS_FAILURE_SECONDS:
        # What Kubernetes would do: restart the pod (after its stacks went to the log).
        report.liveness_failures += 1
        log_tail = w.proc.logs()[-300:].replace("\n", " | ")
        report.liveness_notes.append(f"{w.name} failed /livez for {LIVENESS_FAILURE_SECONDS:.0f}s; restarted "
                                     f"after a stack dump (see its log): ...{log_tail}")
        w.dump_stacks()
        w.live_fail_since = None
        w.start()


def _inflict(stack: Any, pool: list[Worker], proxy: StallProxy, plan: ChaosPlan, report: ChaosReport,
             rng: random.Random, watch: ResultWatch) -> None:
    """Kills (some inside the commit window), the broker restart and the S3 hang, each placed at a
    share of the requests answered, so every one lands while work is flowing (on a busy machine a
    broker takes 10-40 s to come back, which would squeeze wall-clock slots together)."""
    in_txn = min(plan.kills_in_txn, plan.kills)
    events: list[tuple[float, str]] = [(rng.uniform(0.05, 0.5), "kill_in_txn") for _ in range(in_txn)]
    events += [(rng.uniform(0.05, 0.85), "kill") for _ in range(plan.kills - in_txn)]
    if plan.broker_restart:
        events.append((0.3, "broker"))
    if plan.s3_hang_seconds > 0:
        events.append((0.6, "s3_hang"))
    events.sort()
    hang: tuple[float, float] | None = None  # (started, until) while S3 hangs
    for at, kind in events:
        if report.unexpected_exits or report.stalls or report.liveness_failures:
            break  # the run has failed: inflict nothing more, so the figures say what happened
        while (len(watch.seen) < at * plan.requests and not report.unexpected_exits and not report.stalls
               and not report.liveness_failures):
            time.sleep(0.05)
            if hang is not None and time.monotonic() >= hang[1]:
                _end_hang(proxy, hang, report)
                hang = None
        if hang is not None and (kind == "kill_in_txn" or time.monotonic() >= hang[1]):
            # Transactions happen only while results flow: an in-transaction kill waits out the hang.
            _end_hang(proxy, hang, report)
            hang = None
        if kind == "s3_hang":
            proxy.stall()
            report.s3_hangs += 1
            hang = (time.monotonic(), time.monotonic() + plan.s3_hang_seconds)
            report.calm_since = hang[1]
        elif kind == "broker":
            report.calm_since = float("inf")
            stack.kafka.restart(hard=True, down_for=3.0)
            report.broker_restarts += 1
            report.calm_since = time.monotonic()
        else:
            alive = [w for w in pool if w.proc.alive and not w.crashed]
            if not alive:
                continue
            victim = rng.choice(alive)
            if kind == "kill_in_txn":
                parked = _kill_in_txn(alive)
                if parked is None:
                    continue  # not counted; the run fails if too few land inside
                victim = parked
                report.kills_in_txn += 1
            else:
                victim.kill()
            report.kills += 1
            time.sleep(rng.uniform(0.5, 3.0))
            victim.start()  # same id: fences the dead worker's open transaction at init
            report.calm_since = max(report.calm_since, time.monotonic())
    if hang is not None:
        _end_hang(proxy, hang, report)


def _end_hang(proxy: StallProxy, hang: tuple[float, float], report: ChaosReport) -> None:
    while time.monotonic() < hang[1]:
        time.sleep(0.05)
    proxy.flow()
    report.s3_hang_seconds += time.monotonic() - hang[0]
    report.calm_since = max(report.calm_since, time.monotonic())


def _kill_in_txn(candidates: list[Worker]) -> Worker | None:
    """SIGKILL the first of ``candidates`` seen holding a transaction open: the park hook logs its
    line just before it parks (``park_in_txn_seconds``, far longer than the 10 ms between looks at
    the logs), so the kill lands after the offsets were sent and before the commit."""
    marks = {w.name: w.log_size() for w in candidates}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for w in candidates:
            if w.proc.alive and w.log_contains(PARK_LINE, marks[w.name]):
                w.kill()
                return w
        time.sleep(0.01)
    return None


def _audit(stack: Any, s3: Any, topics: Topics, bucket: str, plan: ChaosPlan, report: ChaosReport) -> None:
    codec = Codec("TtsResult")
    results = [codec.decode(v) for v in read_to_end(stack.kafka_bootstrap, topics.results)]
    report.dead_letters = len(read_to_end(stack.kafka_bootstrap, topics.dlq))
    ids = {f"c{i:05d}" for i in range(plan.requests)}
    counts = Counter(r["request_id"] for r in results)
    report.results = len(results)
    report.duplicates = sum(v - 1 for v in counts.values() if v > 1)
    report.lost = len(ids - set(counts))
    successes = [r for r in results if r["status"] == "success"]
    report.successes = len(successes)
    report.errors = dict(Counter(r["error_code"] for r in results if r["status"] != "success"))

    def matches(r: dict[str, Any]) -> bool:
        body = s3.get_object(Bucket=r["output_bucket"], Key=r["output_key"])["Body"].read()
        return bool(hashlib.sha256(body).hexdigest() == r["sha256"])

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        checked = list(pool.map(matches, successes))
    report.wav_checked = len(checked)
    report.sha256_mismatches = checked.count(False)
    named = {r["output_key"] for r in successes}
    stored = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="tts/")
              for o in page.get("Contents", [])]
    report.orphans = len(set(stored) - named)


def main() -> None:
    from devstack.stack import LocalStack

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = ChaosPlan()
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=d.workers)
    ap.add_argument("--kills", type=int, default=12)
    ap.add_argument("--kills-in-txn", type=int, default=4)
    ap.add_argument("--s3-hang-seconds", type=float, default=40.0)
    ap.add_argument("--no-broker-restart", action="store_true")
    ap.add_argument("--job-seconds", type=float, default=d.job_seconds)
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--logs", default="artifacts/chaos-logs", help="worker logs are kept here")
    args = ap.parse_args()
    logs = Path(args.logs)
    logs.mkdir(parents=True, exist_ok=True)
    plan = ChaosPlan(requests=args.requests, workers=args.workers, kills=args.kills, kills_in_txn=args.kills_in_txn,
                     broker_restart=not args.no_broker_restart, s3_hang_seconds=args.s3_hang_seconds,
                     job_seconds=args.job_seconds, seed=args.seed, timeout=3600)
    with LocalStack() as stack:
        if not (stack.kafka.managed and stack.s3.managed):
            raise SystemExit("the chaos run restarts the broker: run it on a private stack "
                             "(unset KAFKA_BOOTSTRAP_SERVERS and S3_ENDPOINT_URL)")
        report = run_chaos(stack, logs, plan)
    print(report.line())
    failures = report.failures()
    for f in failures:
        print("FAIL:", f)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        figures = {k: v for k, v in asdict(report).items() if k != "calm_since"}
        args.out.write_text(json.dumps({**figures, "failures": failures}, indent=2))
    raise SystemExit(1 if failures else 0)


if __name__ == "__main__":
    main()
