"""Delivery guarantees with real worker processes: long jobs, joins, revocation, both group protocols,
graceful shutdown, per-request time limits. Every check reads results with read_committed."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.audio import voice_clip
from tests.support.workers import Topics, WorkerProcess, produce, read_all, request, worker_env


class Scenario:
    def __init__(self, stack: Any, names: Any, tmp: Path, partitions: int = 4) -> None:
        self.stack = stack
        self.tmp = tmp
        self.topics = Topics.create(stack, names.prefix, partitions=partitions)
        self.bucket = names.bucket
        stack.create_bucket(self.bucket)
        stack.s3_client().put_object(Bucket=self.bucket, Key="voice.wav", Body=voice_clip())
        self.group = names.group()
        self.workers: list[WorkerProcess] = []

    @property
    def voice(self) -> str:
        return f"s3://{self.bucket}/voice.wav"

    def worker(self, **env: str) -> WorkerProcess:
        w = WorkerProcess(worker_env(self.stack, self.topics, self.bucket, self.group, self.tmp, **env),
                          self.tmp / f"worker-{len(self.workers)}.log")
        self.workers.append(w)
        return w.start()

    def submit(self, ids: list[str], **fields: Any) -> None:
        produce(self.stack.kafka_bootstrap, self.topics.requests, [request(i, self.voice, **fields) for i in ids],
                partition_by_index=4)

    def results(self, n: int, timeout: float = 120) -> list[dict[str, Any]]:
        return [r for r, _ in read_all(self.stack.kafka_bootstrap, self.topics.results, "TtsResult", until=n,
                                       timeout=timeout, settle=3)]

    def close(self) -> None:
        for w in self.workers:
            w.kill()


@pytest.fixture
def scenario(stack: Any, names: Any, tmp_path: Path) -> Iterator[Scenario]:
    s = Scenario(stack, names, tmp_path)
    yield s
    s.close()


def metric(worker: WorkerProcess, name: str, **labels: str) -> float:
    _, text = worker.http("/metrics")
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (not want or want in line):
            total += float(line.rsplit(" ", 1)[1])
    return total


def assert_exactly_once(results: list[dict[str, Any]], ids: list[str]) -> None:
    counts = Counter(r["request_id"] for r in results)
    missing = set(ids) - set(counts)
    dups = {k: v for k, v in counts.items() if v > 1}
    assert not missing, f"lost: {sorted(missing)}"
    assert not dups, f"duplicates: {dups}"


def test_job_longer_than_max_poll_interval_completes_once_without_rebalance(scenario: Scenario) -> None:
    w = scenario.worker(TONE_ENGINE_SECONDS="14", KAFKA_MAX_POLL_INTERVAL_MS="10000",
                        KAFKA_SESSION_TIMEOUT_MS="6000").wait_ready()
    scenario.submit(["long-1"], text="one two three four five six seven eight", max_text_tokens_per_segment=20)
    results = scenario.results(1, timeout=90)
    assert_exactly_once(results, ["long-1"])
    assert results[0]["status"] == "success" and results[0]["segments"] == 2
    assert results[0]["synthesis_seconds"] > 10.0  # it really outlived max.poll.interval.ms
    assert metric(w, "tts_rebalances_total", kind="revoke") == 0
    assert metric(w, "tts_rebalances_total", kind="lost") == 0
    assert "revoked" not in w.logs() and "lost" not in w.logs()
    progress = [r for r, _ in read_all(scenario.stack.kafka_bootstrap, scenario.topics.progress, "TtsProgress",
                                       until=2, timeout=20)]
    assert [(p["segment"], p["segments"]) for p in progress if p["request_id"] == "long-1"] == [(1, 2), (2, 2)]


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_second_worker_joining_mid_job_causes_no_duplicate(scenario: Scenario, protocol: str) -> None:
    """A joins and works on long jobs; B joins mid-job, taking partitions (revoking some of A's mid-job).
    Every request still has exactly one result; both group protocols (classic and KIP-848)."""
    # Enough work (~30 s for A alone) that B's start-up, seconds on a loaded CI machine, ends mid-run.
    env = {"TONE_ENGINE_SECONDS": "3", "KAFKA_GROUP_PROTOCOL": protocol}
    a = scenario.worker(**env).wait_ready()
    ids = [f"join-{protocol}-{i}" for i in range(10)]
    scenario.submit(ids)
    deadline = time.monotonic() + 30
    while metric(a, "tts_inflight_job_age_seconds") <= 0.2 and time.monotonic() < deadline:
        time.sleep(0.1)
    b = scenario.worker(**env).wait_ready()
    results = scenario.results(len(ids))
    assert_exactly_once(results, ids)
    assert all(r["status"] == "success" for r in results)
    by_worker = Counter(r["worker_id"] for r in results)
    assert set(by_worker) == {a.worker_id, b.worker_id}, by_worker  # B really took over partitions
    assert metric(a, "tts_rebalances_total", kind="revoke") >= 1


def test_sigterm_mid_job_drains_within_grace_and_loses_nothing(scenario: Scenario) -> None:
    a = scenario.worker(TONE_ENGINE_SECONDS="3", WORKER_SHUTDOWN_GRACE_SECONDS="10").wait_ready()
    ids = [f"term-{i}" for i in range(4)]
    scenario.submit(ids)
    deadline = time.monotonic() + 30
    while metric(a, "tts_inflight_job_age_seconds") <= 0.5 and time.monotonic() < deadline:
        time.sleep(0.1)
    t0 = time.monotonic()
    a.terminate()
    assert a.wait(20) == 0
    assert time.monotonic() - t0 < 10 + 3  # within the grace period (+ process teardown)
    assert "draining" in a.logs()
    # The job on the GPU when SIGTERM came was finished and committed by A.
    first = scenario.results(1, timeout=20)
    assert first and first[0]["worker_id"] == a.worker_id
    scenario.worker(TONE_ENGINE_SECONDS="0.2").wait_ready()
    results = scenario.results(len(ids))
    assert_exactly_once(results, ids)


def test_job_over_its_time_limit_gets_timeout(scenario: Scenario) -> None:
    scenario.worker(TONE_ENGINE_SECONDS="6", WORKER_JOB_TIMEOUT_SECONDS="1").wait_ready()
    scenario.submit(["slow-1"], text=" ".join(["word"] * 40), max_text_tokens_per_segment=20)
    scenario.submit(["after-slow"], text="short")
    results = scenario.results(2, timeout=60)
    assert_exactly_once(results, ["slow-1", "after-slow"])
    by_id = {r["request_id"]: r for r in results}
    assert by_id["slow-1"]["error_code"] == "timeout"
    assert by_id["after-slow"]["error_code"] == "timeout" or by_id["after-slow"]["status"] == "success"
