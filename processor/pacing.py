"""When the poll loop takes work, commits, and wakes: the timing policy, as plain arithmetic.

Three decisions, each a pure function of what the poll thread can see (the ledger's states, the job
on the GPU, a clock), so a test drives them with numbers instead of sleeps:

- **Intake, just in time.** A request is taken ahead of the GPU only when the job on the GPU is
  expected to end within ``lead`` seconds (or its length is unknown, or the GPU is idle), and at most
  ``prefetch`` of them. The lead covers what happens between resume() and the next job being ready
  for the GPU: the next record (usually fetched already and held by the session, ``KafkaSession.pause``;
  after a real pause a re-fetch, ~1 ms since ``kafka_io.resume_fetching`` wakes librdkafka's fetcher),
  decode, and the prepare step. So a request waits behind at most one job, and the GPU still never waits for intake.
- **Commit as soon as nothing else is worth waiting for.** Finished outcomes wait for company in one
  transaction only while more are about to be ready (a record was just taken and more may be queued
  behind it, or an upload is under way), and never longer than the batch window. A lone result
  commits at once; under load results still share transactions.
- **Sleep until something is due.** The poll loop blocks in ``poll()`` (which returns at once when a
  request arrives) for as long as nothing else can happen: short steps only while a prepare step runs,
  an upload is due to end (from the average encode + upload time) or a job is due to leave the GPU
  with nothing queued behind it (with one queued, the GPU takes it by itself, and the loop sleeps on
  until the leaving job is due to be stored), long ones otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Between resume() and a prepared job: the next record, decode, the reference check. Generous: a record
# that was not fetched yet can wait behind a fetch the broker holds for partitions with nothing new.
INTAKE_LEAD_SECONDS = 0.12
# The most requests ever held ahead of the GPU (very short jobs).
MAX_AHEAD = 16
# Finished outcomes wait at most this long for company in one transaction.
BATCH_WINDOW_SECONDS = 0.05
# Poll timeouts: while a short stage runs or a job is about to leave the GPU; at most while a job is on
# the GPU with time to go; with nothing in flight (the liveness tick and health snapshot still run).
SHORT_POLL_SECONDS = 0.002
# Each turn costs ~0.4 ms of CPU (measured: ~0.1 ms in poll() itself, the rest the turn's bookkeeping),
# so the two long waits are 1 s, not 0.5: at one request a second or at 1 s jobs that is one turn per
# request less. Rebalance callbacks and arriving requests end a wait at once either way; the health
# events have their own thread; the poll loop waits at most a quarter of the liveness limit (60 s).
BUSY_POLL_MAX_SECONDS = 1.0
IDLE_POLL_SECONDS = 1.0
# A job that runs past its expected end is polled for at SHORT steps this long, then at OVERRUN steps:
# a job that is merely a little slower than average is still noticed within milliseconds, one that is
# much longer (longer text) costs no busy polling.
OVERRUN_GRACE_SECONDS = 0.05
OVERRUN_POLL_SECONDS = 0.02
# How far past the intake boundary the loop wakes for it (poll() rounds its timeout down to a millisecond).
BOUNDARY_MARGIN_SECONDS = 0.0015


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
    finish_expected: float | None = None  # what encode + upload take lately, low-biased (None: unknown)
    build_expected: float | None = None  # from leaving the GPU to its result built (encode), likewise

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
        elif intake_paused and f.ahead < prefetch and remaining > lead:
            # Intake resumes then (not paused, a record wakes poll() by itself when it comes). poll()
            # takes whole milliseconds and can return up to one early, when the flow control after it
            # would still see the job outside the lead and resume nothing (then the branch below polls
            # short once more): wake just past the boundary instead.
            wake = min(wake, remaining - lead + BOUNDARY_MARGIN_SECONDS)
        elif intake_paused and f.ahead < ahead_wanted(f, prefetch, lead):
            # Intake is due but still paused: this turn's flow control ran a hair before the boundary
            # (poll() returns up to a millisecond early). Sleeping to the job's end here made the GPU
            # wait for the next request in one 1 s job in three; a short poll lets the flow control
            # that follows it resume intake now. (Resumed, a record wakes poll() by itself.)
            wake = SHORT_POLL_SECONDS
        elif f.ahead and f.finish_expected is not None:
            # The GPU takes the next job by itself, and with one queued no early transaction opens
            # (``Processor._begin_early``): nothing is due when this job leaves the GPU, only its
            # commit once stored. Waking at the job's end as well was one turn per request for nothing.
            wake = min(wake, remaining + f.finish_expected)
        else:
            # Alone: when it leaves the GPU its result is built (encode) and then goes into an early
            # transaction (``Processor._begin_early``). Waking once it is built, not at the job's end
            # and again a short poll later, is one turn per request less.
            wake = min(wake, remaining + (f.build_expected or 0.0))
    return max(SHORT_POLL_SECONDS, wake)
