"""The poll loop's timing policy (processor.pacing): intake just in time, commit at once when alone,
sleep until something is due. Plain numbers in, decisions out: no clock, no Kafka."""

from __future__ import annotations

import math

import pytest

from processor.pacing import (
    BATCH_WINDOW_SECONDS,
    BOUNDARY_MARGIN_SECONDS,
    BUSY_POLL_MAX_SECONDS,
    IDLE_POLL_SECONDS,
    INTAKE_LEAD_SECONDS,
    OVERRUN_POLL_SECONDS,
    SHORT_POLL_SECONDS,
    InFlight,
    JobLength,
    ahead_wanted,
    commit_now,
    intake_limit,
    poll_timeout,
)

LEAD = INTAKE_LEAD_SECONDS


def busy(elapsed: float, expected: float | None = 0.2, **kw: int) -> InFlight:
    return InFlight(on_gpu=True, gpu_elapsed=elapsed, gpu_expected=expected, **kw)


def test_an_idle_worker_takes_work_at_once() -> None:
    assert ahead_wanted(InFlight(), prefetch=1) == 1
    assert intake_limit(InFlight(), prefetch=1) == 0  # resumed with nothing in flight, paused at one


def test_the_first_job_of_unknown_length_gets_a_request_queued_behind_it() -> None:
    # No start-up stall: before any job length is known, one request waits ahead of the GPU.
    assert ahead_wanted(busy(0.0, expected=None), prefetch=1) == 1


def test_nothing_is_taken_ahead_until_the_job_on_the_gpu_is_about_to_end() -> None:
    assert ahead_wanted(busy(0.0), prefetch=1) == 0
    assert ahead_wanted(busy(0.2 - LEAD - 0.001), prefetch=1) == 0
    assert ahead_wanted(busy(0.2 - LEAD + 0.001), prefetch=1) == 1
    assert ahead_wanted(busy(0.5), prefetch=2) == 2  # overran its expected length: about to end


def test_intake_limit_counts_the_gpu_and_finishing_jobs_but_no_more_ahead_than_wanted() -> None:
    early = busy(0.0, finishing=1)
    assert intake_limit(early, prefetch=1) == 1  # paused while 2 are in flight (GPU + finishing)
    late = busy(0.19, finishing=1)
    assert intake_limit(late, prefetch=1) == 2  # one more may come in


@pytest.mark.parametrize(("ready", "waited", "more", "expect"), [
    (1, 0.0, False, True),    # a lone result commits at once
    (1, 0.0, True, False),    # another is about to be ready: wait for it...
    (1, BATCH_WINDOW_SECONDS, True, True),  # ...but never longer than the window
    (16, 0.0, True, True),    # a full batch goes
    (0, 1.0, False, False),   # nothing to commit
])
def test_commit_now(ready: int, waited: float, more: bool, expect: bool) -> None:
    assert commit_now(ready, max_batch=16, waited=waited, more_coming=more) is expect


def test_force_commits_whatever_is_ready() -> None:
    assert commit_now(1, max_batch=16, waited=0.0, more_coming=True, force=True)


def test_poll_sleeps_long_when_idle_and_short_while_a_short_stage_runs() -> None:
    assert poll_timeout(InFlight(), prefetch=1, outcomes_waiting=False) == IDLE_POLL_SECONDS
    assert poll_timeout(busy(0.0, finishing=1), prefetch=1, outcomes_waiting=False) == SHORT_POLL_SECONDS
    assert poll_timeout(InFlight(ahead=1, preparing=1), prefetch=1, outcomes_waiting=False) == SHORT_POLL_SECONDS
    assert poll_timeout(busy(0.0), prefetch=1, outcomes_waiting=True) == SHORT_POLL_SECONDS


def test_poll_wakes_when_intake_is_due_to_resume_and_when_the_job_is_due_to_end() -> None:
    wake = poll_timeout(busy(0.0, expected=0.2), prefetch=1, outcomes_waiting=False, intake_paused=True)
    assert wake == pytest.approx(0.2 - LEAD + BOUNDARY_MARGIN_SECONDS)
    # Intake not paused (nothing was waiting, ``Ledger.flow``): a request that comes wakes poll() by
    # itself, so the loop sleeps to the job's end.
    assert poll_timeout(busy(0.0, expected=0.2), prefetch=1, outcomes_waiting=False) == pytest.approx(0.2)
    # poll() rounds its timeout down to whole milliseconds: woken that early, intake is still due
    # (woken exactly at the boundary, the flow control after it resumed nothing, and a turn was lost).
    assert ahead_wanted(busy(math.floor(wake * 1000) / 1000, expected=0.2), prefetch=1) == 1
    # A request is already waiting ahead (prepared): wake when the job is due to end.
    assert poll_timeout(busy(0.1, expected=0.2, ahead=1), prefetch=1, outcomes_waiting=False) == pytest.approx(0.1)
    assert poll_timeout(busy(0.0, expected=5.0), prefetch=1, outcomes_waiting=False) == BUSY_POLL_MAX_SECONDS
    # A 1 s job: one sleep to its intake boundary (each turn costs CPU), not two half-second steps.
    assert poll_timeout(busy(0.0, expected=1.0), prefetch=1, outcomes_waiting=False,
                        intake_paused=True) == pytest.approx(1.0 - LEAD + BOUNDARY_MARGIN_SECONDS)


def test_with_a_job_queued_behind_it_the_loop_sleeps_through_a_jobs_end_until_it_is_due_stored() -> None:
    """The GPU takes the queued job by itself; the leaving job needs the loop only once stored (its
    commit). Alone, the loop wakes at the job's end: the worker is about to be idle and its early
    transaction opens while the upload runs."""
    queued = InFlight(on_gpu=True, gpu_elapsed=0.1, gpu_expected=0.2, ahead=1, finish_expected=0.008)
    assert poll_timeout(queued, prefetch=1, outcomes_waiting=False) == pytest.approx(0.108)
    alone = InFlight(on_gpu=True, gpu_elapsed=0.1, gpu_expected=0.2, finish_expected=0.008)
    assert poll_timeout(alone, prefetch=1, outcomes_waiting=False) == pytest.approx(0.1)
    # Its result takes a moment to build after the GPU (encode): wake once it is built, for the early
    # transaction, rather than at the job's end and again a short poll later.
    built = InFlight(on_gpu=True, gpu_elapsed=0.1, gpu_expected=0.2, finish_expected=0.008, build_expected=0.0009)
    assert poll_timeout(built, prefetch=1, outcomes_waiting=False) == pytest.approx(0.1009)
    # Nothing known yet of how long storing takes: the job's end, as before.
    assert poll_timeout(busy(0.1, expected=0.2, ahead=1), prefetch=1, outcomes_waiting=False) == pytest.approx(0.1)
    # Past its expected end it is watched as any overrunning job.
    late = InFlight(on_gpu=True, gpu_elapsed=0.21, gpu_expected=0.2, ahead=1, finish_expected=0.008)
    assert poll_timeout(late, prefetch=1, outcomes_waiting=False) == SHORT_POLL_SECONDS


def test_intake_due_but_not_taken_yet_is_polled_for_not_slept_through() -> None:
    """The loop wakes at the lead boundary, but poll() can return a hair early, so that turn's flow
    control still saw the job outside the lead and resumed nothing. The next poll must be short, so
    the flow control after it resumes intake, not sleep to the job's end (measured before the fix:
    in about one 1 s job in three the GPU then waited for the next request)."""
    just_inside = busy(1.0 - LEAD + 0.0001, expected=1.0)
    assert poll_timeout(just_inside, prefetch=1, outcomes_waiting=False, intake_paused=True) == SHORT_POLL_SECONDS
    # Resumed (a record wakes poll() when it comes), or the request taken: sleep to the job's end again.
    # Short polls there would spin through every light-load job's last 0.12 s.
    assert poll_timeout(just_inside, prefetch=1, outcomes_waiting=False) == pytest.approx(LEAD - 0.0001)
    taken = busy(1.0 - LEAD + 0.0001, expected=1.0, ahead=1)
    assert poll_timeout(taken, prefetch=1, outcomes_waiting=False, intake_paused=True) == pytest.approx(LEAD - 0.0001)


def test_a_job_past_its_expected_end_is_watched_closely_at_first_then_loosely() -> None:
    assert poll_timeout(busy(0.21), prefetch=1, outcomes_waiting=False) == SHORT_POLL_SECONDS
    assert poll_timeout(busy(0.5), prefetch=1, outcomes_waiting=False) == OVERRUN_POLL_SECONDS
    assert poll_timeout(busy(0.0, expected=None), prefetch=1, outcomes_waiting=False) == OVERRUN_POLL_SECONDS


def test_job_length_scales_with_text_length() -> None:
    length = JobLength()
    assert length.expected(40) is None
    length.observe(2.0, 100)
    assert length.expected(50) == pytest.approx(1.0)


def test_an_upload_is_polled_for_closely_only_when_it_is_due_to_end() -> None:
    uploading = InFlight(on_gpu=True, gpu_elapsed=0.0, gpu_expected=1.0, ahead=1, finishing=1, finish_remaining=0.03)
    assert poll_timeout(uploading, prefetch=1, outcomes_waiting=False) == pytest.approx(0.03)
    due = InFlight(finishing=1, finish_remaining=0.001)
    assert poll_timeout(due, prefetch=1, outcomes_waiting=False) == SHORT_POLL_SECONDS


def test_jobs_shorter_than_the_lead_get_enough_queued_to_cover_it() -> None:
    assert ahead_wanted(busy(0.0, expected=0.01), prefetch=1) == 12
    assert ahead_wanted(busy(0.0, expected=0.0001), prefetch=1) == 16  # capped


def test_short_jobs_keep_enough_queued_while_the_gpu_is_between_two_of_them() -> None:
    assert ahead_wanted(InFlight(typical_job=0.01), prefetch=1) == 12
    assert ahead_wanted(InFlight(typical_job=1.0), prefetch=1) == 1
