"""When the poll loop takes work, commits, and wakes: the timing policy, as plain arithmetic.

Three decisions, each a pure function of what the poll thread can see (the ledger's states, the job
on the GPU, a clock), so a test drives them with numbers instead of sleeps:

- **Intake, just in time.** A request is taken ahead of the GPU only when the job on the GPU is
  expected to end within ``lead`` seconds (or its length is unknown, or the GPU is idle), and at most
  ``prefetch`` of them. The lead covers what happens between resume() and the next job being ready
  for the GPU: the re-fetch (~1 ms since ``kafka_io.resume_fetching`` wakes librdkafka's fetcher; up
  to ``fetch.wait.max.ms`` when a fetch for an empty partition is still in flight), decode, and the
  prepare step. So a request waits behind at most one job, and the GPU still never waits for intake.
- **Commit as soon as nothing else is worth waiting for.** Finished outcomes wait for company in one
  transaction only while more are about to be ready (a record was just taken and more may be queued
  behind it, or an upload is under way), and never longer than the batch window. A lone result
  commits at once; under load results still share transactions.
- **Sleep until something is due, and be woken by what cannot be timed.** ``poll()`` returns at once
  when a request arrives, but nothing else can wake it (confluent-kafka exposes no wake-up). So while
  no request can arrive (intake paused) or none is worth taking before the outcome in hand (intake
  open, nothing ahead of the GPU, an upload or the job's last milliseconds under way), the loop waits
  on the stage threads' signal instead and serves Kafka with ``poll(0)`` after it (``plan_wait``);
  otherwise it blocks in ``poll()`` with short steps only while a prepare step runs, an upload is due
  to end or a job is due to leave the GPU, long ones otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Between resume() and a prepared job: the re-fetch, decode, the reference check. Generous, so that a
# fetch still held by the broker for an empty partition (fetch.wait.max.ms, 100 ms) rarely costs GPU time.
INTAKE_LEAD_SECONDS = 0.12
# The most requests ever held ahead of the GPU (very short jobs).
MAX_AHEAD = 16
# Finished outcomes wait at most this long for company in one transaction.
BATCH_WINDOW_SECONDS = 0.05
# Poll timeouts: while a short stage runs or a job is about to leave the GPU; at most while a job is on
# the GPU with time to go; with nothing in flight (the liveness tick, lag refresh and health snapshot
# still run: each turn costs CPU, and an idle worker's turns are charged to the requests it gets).
SHORT_POLL_SECONDS = 0.002
BUSY_POLL_MAX_SECONDS = 0.5
IDLE_POLL_SECONDS = 1.0
# A job that runs past its expected end is polled for at SHORT steps this long, then at OVERRUN steps:
# a job that is merely a little slower than average is still noticed within milliseconds, one that is
# much longer (longer text) costs no busy polling.
OVERRUN_GRACE_SECONDS = 0.05
OVERRUN_POLL_SECONDS = 0.02
# A wait on the stage threads (not in poll()) still serves Kafka this often: rebalance callbacks and
# errors are delivered by poll(), and each step of a cooperative rebalance waits for them. At 0.5 s a
# second member's join took tens of seconds in one full-suite run; 0.1 s keeps rebalances close to a
# loop that blocks in poll(), for a few cheap turns per long job (intake is paused ~0.9 s of a 1 s job).
SERVE_KAFKA_SECONDS = 0.1
# With intake open, the loop waits on the stage threads (a request arriving meanwhile waits for the
# wait's end) only this long at a time, and only for an outcome this close: an upload under way, or a
# job within this of leaving the GPU with nothing behind it.
IMMINENT_SECONDS = 0.02


@dataclass(frozen=True)
class InFlight:
    """What the poll thread sees of the requests it holds."""

    ahead: int = 0  # taken, not on the GPU yet (queued, preparing, or prepared and waiting for the GPU)
    preparing: int = 0  # of those, still being decoded or prepared
    on_gpu: bool = False
    finishing: int = 0  # synthesized; encoding and uploading
    gpu_elapsed: float = 0.0  # how long the job on the GPU has been there
    gpu_expected: float | None = None  # how long it is expected to take (None: nothing known yet)
    finish_remaining: float | None = None  # until the first finishing job is expected done (None: unknown)
    typical_job: float | None = None  # what a job has been taking lately (None: nothing known yet)

    @property
    def total(self) -> int:
        return self.ahead + int(self.on_gpu) + self.finishing

    @property
    def gpu_remaining(self) -> float | None:
        return None if not self.on_gpu or self.gpu_expected is None else self.gpu_expected - self.gpu_elapsed


class JobLength:
    """Expected duration of a step from the size of its input (characters of text): a running estimate
    of seconds per unit, updated from every finished step. It follows shorter durations quickly and
    longer ones slowly, so it sits near the low end of what the step takes: waking a little early
    costs a few short polls, waking late costs latency (one slow upload must not put the loop to
    sleep past the next ten)."""

    def __init__(self, down: float = 0.5, up: float = 0.1) -> None:
        self.down, self.up = down, up
        self.per_char: float | None = None

    def observe(self, seconds: float, chars: int) -> None:
        rate = seconds / max(1, chars)
        if self.per_char is None:
            self.per_char = rate
        else:
            self.per_char += (self.down if rate < self.per_char else self.up) * (rate - self.per_char)

    def expected(self, chars: int) -> float | None:
        return None if self.per_char is None else self.per_char * max(1, chars)


def ahead_wanted(f: InFlight, prefetch: int, lead: float = INTAKE_LEAD_SECONDS) -> int:
    """How many requests to hold ahead of the GPU right now: none while the job on the GPU has more
    than ``lead`` to go; then ``prefetch``, or for jobs shorter than the lead as many as cover it (a
    10 ms job needs a dozen queued, or the GPU waits for every re-fetch)."""
    prefetch = max(1, prefetch)
    typical = f.gpu_expected if f.on_gpu and f.gpu_expected is not None else f.typical_job
    enough = prefetch if typical is None else max(prefetch, min(MAX_AHEAD, math.ceil(lead / max(typical, 1e-3))))
    if not f.on_gpu or f.gpu_expected is None:
        return enough  # GPU idle, or nothing known yet: take work now (no start-up stall)
    return 0 if f.gpu_expected - f.gpu_elapsed > lead else enough


def intake_limit(f: InFlight, prefetch: int, lead: float = INTAKE_LEAD_SECONDS) -> int:
    """The in-flight count above which intake pauses (``Ledger.flow``: pause once more than this many
    are in flight). One more request may arrive before the pause takes effect, so the limit is one
    below the number wanted: jobs on the GPU and finishing, plus those wanted ahead."""
    return int(f.on_gpu) + f.finishing + ahead_wanted(f, prefetch, lead) - 1


def commit_now(ready: int, *, max_batch: int, waited: float, more_coming: bool, force: bool = False) -> bool:
    """Commit the ``ready`` outcomes now? ``waited``: how long the oldest has been ready."""
    if ready == 0:
        return False
    return force or ready >= max_batch or not more_coming or waited >= BATCH_WINDOW_SECONDS


@dataclass(frozen=True)
class Wait:
    """How the poll loop waits for its next turn: on the stage threads' signal, then ``poll(0)``
    (``on_stages``), or in ``poll(seconds)``."""

    seconds: float
    on_stages: bool
    # The wait is for the GPU to take the request ahead of it: the GPU thread signals that too.
    gpu_start: bool = False


def plan_wait(f: InFlight, *, prefetch: int, intake_paused: bool, outcomes_waiting: bool,
              window_left: float = 0.0, lead: float = INTAKE_LEAD_SECONDS) -> Wait:
    """How to wait: on the stage threads when no request can come (intake paused) or none is worth
    taking before the outcome at hand; in ``poll()`` otherwise. A stage signal (an outcome, an upload
    starting with the GPU idle) ends a wait on the stages at once, so such a wait is timed only for
    what no thread signals: the batch window closing, intake due to resume, a first job's length."""
    if not intake_paused and (f.ahead or not (f.finishing or _due(f, IMMINENT_SECONDS))):
        return Wait(poll_timeout(f, prefetch=prefetch, outcomes_waiting=outcomes_waiting, lead=lead), False)
    wake = BUSY_POLL_MAX_SECONDS if f.total else IDLE_POLL_SECONDS
    if outcomes_waiting:
        wake = min(wake, window_left)
    remaining = f.gpu_remaining
    if f.ahead and not f.on_gpu:
        # The GPU takes it any moment (the GPU thread signals it; this is the backstop), and intake is
        # decided anew then: the first job's request ahead, the next intake boundary.
        return Wait(max(SHORT_POLL_SECONDS, min(wake, OVERRUN_POLL_SECONDS)), True, gpu_start=True)
    if f.on_gpu and remaining is None:
        wake = min(wake, OVERRUN_POLL_SECONDS)  # a first job: its length decides when intake resumes
    elif intake_paused and remaining is not None:
        if f.ahead < ahead_wanted(f, prefetch, lead):
            wake = SHORT_POLL_SECONDS  # due already (this turn ran a hair early): the next flow control resumes
        elif f.ahead < prefetch:
            wake = min(wake, remaining - lead)  # intake resumes then
    cap = SERVE_KAFKA_SECONDS if intake_paused else IMMINENT_SECONDS
    return Wait(max(SHORT_POLL_SECONDS, min(wake, cap)), True)


def _due(f: InFlight, within: float) -> bool:
    remaining = f.gpu_remaining
    return remaining is not None and remaining <= within


def poll_timeout(f: InFlight, *, prefetch: int, outcomes_waiting: bool, intake_paused: bool = False,
                 lead: float = INTAKE_LEAD_SECONDS) -> float:
    """How long the next ``poll()`` may block. It returns early when a request arrives; a stage
    thread cannot wake it, so it wakes on its own when something is due: a short stage ending (an
    upload, a prepare step, a batch window), intake due to resume, or the job on the GPU due to end."""
    if outcomes_waiting or f.preparing or (f.ahead and not f.on_gpu):
        return SHORT_POLL_SECONDS
    wake = BUSY_POLL_MAX_SECONDS if f.total else IDLE_POLL_SECONDS
    if f.finishing:
        if f.finish_remaining is None or f.finish_remaining <= SHORT_POLL_SECONDS:
            return SHORT_POLL_SECONDS  # an upload ends any moment now
        wake = min(wake, f.finish_remaining)
    if f.on_gpu:
        remaining = f.gpu_remaining
        if remaining is None:  # the first job: nothing known about its length
            wake = min(wake, OVERRUN_POLL_SECONDS)
        elif remaining <= 0:
            wake = min(wake, SHORT_POLL_SECONDS if -remaining < OVERRUN_GRACE_SECONDS else OVERRUN_POLL_SECONDS)
        elif not f.ahead and remaining > IMMINENT_SECONDS and not intake_paused:
            wake = min(wake, remaining - IMMINENT_SECONDS)  # then the loop waits on the stages (plan_wait)
        elif f.ahead < prefetch and remaining > lead:
            wake = min(wake, remaining - lead)  # intake resumes then
        elif intake_paused and f.ahead < ahead_wanted(f, prefetch, lead):
            # Intake is due but still paused: this turn's flow control ran a hair before the boundary
            # (poll() returns up to a millisecond early). Sleeping to the job's end here made the GPU
            # wait for the next request in one 1 s job in three; a short poll lets the flow control
            # that follows it resume intake now. (Resumed, a record wakes poll() by itself.)
            wake = SHORT_POLL_SECONDS
        else:
            wake = min(wake, remaining)
    return max(SHORT_POLL_SECONDS, wake)
