"""The poll loop's timing policy (processor.pacing): intake just in time, commit at once when alone,
sleep until something is due. Plain numbers in, decisions out: no clock, no Kafka."""

from __future__ import annotations

import pytest

from processor.pacing import (
    BATCH_WINDOW_SECONDS,
    BUSY_POLL_MAX_SECONDS,
    IDLE_POLL_SECONDS,
    IMMINENT_SECONDS,
    INTAKE_LEAD_SECONDS,
    OVERRUN_POLL_SECONDS,
    SERVE_KAFKA_SECONDS,
    SHORT_POLL_SECONDS,
    InFlight,
    JobLength,
    ahead_wanted,
    commit_now,
    intake_limit,
    plan_wait,
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
    assert poll_timeout(busy(0.0, expected=0.2), prefetch=1, outcomes_waiting=False,
                        intake_paused=True) == pytest.approx(0.2 - LEAD)
    # Intake open, nothing ahead (a light load): nothing happens at the lead boundary; wake when the job
    # is about to end, to wait on the stages for its upload (plan_wait).
    assert poll_timeout(busy(0.0, expected=0.2), prefetch=1,
                        outcomes_waiting=False) == pytest.approx(0.2 - IMMINENT_SECONDS)
    # A request is already waiting ahead (prepared): wake when the job is due to end.
    assert poll_timeout(busy(0.1, expected=0.2, ahead=1), prefetch=1, outcomes_waiting=False) == pytest.approx(0.1)
    assert poll_timeout(busy(0.0, expected=5.0), prefetch=1, outcomes_waiting=False) == BUSY_POLL_MAX_SECONDS


def test_intake_due_but_not_taken_yet_is_polled_for_not_slept_through() -> None:
    """The loop wakes at the lead boundary, but poll() can return a hair early, so that turn's flow
    control still saw the job outside the lead and resumed nothing. The next poll must be short, so
    the flow control after it resumes intake, not sleep to the job's end (measured before the fix:
    in about one 1 s job in three the GPU then waited for the next request)."""
    just_inside = busy(1.0 - LEAD + 0.0001, expected=1.0)
    assert poll_timeout(just_inside, prefetch=1, outcomes_waiting=False, intake_paused=True) == SHORT_POLL_SECONDS
    # Resumed (a record wakes poll() when it comes), or the request taken: sleep to the job's end again.
    # Short polls there would spin through every light-load job's last 0.12 s. (Resumed with nothing
    # ahead, it wakes for the job's last milliseconds, to wait on the stages for its upload.)
    assert poll_timeout(just_inside, prefetch=1,
                        outcomes_waiting=False) == pytest.approx(LEAD - 0.0001 - IMMINENT_SECONDS)
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


def test_with_intake_paused_the_loop_waits_on_the_stages_timed_only_for_what_no_thread_signals() -> None:
    """Paused, no request can arrive: an outcome (signalled by its stage thread) ends the wait, so a
    preparing or finishing job needs no short polls; only intake resuming is timed, and Kafka is
    still served at least every SERVE_KAFKA_SECONDS."""
    resumes_in_80ms = plan_wait(busy(0.0, expected=0.2, preparing=0, finishing=1), prefetch=1,
                                intake_paused=True, outcomes_waiting=False)
    assert resumes_in_80ms.on_stages and resumes_in_80ms.seconds == pytest.approx(0.2 - LEAD)
    long_job = plan_wait(busy(0.0, expected=5.0, ahead=1, preparing=1), prefetch=1, intake_paused=True,
                         outcomes_waiting=False)
    assert long_job.on_stages and long_job.seconds == SERVE_KAFKA_SECONDS
    batching = plan_wait(busy(0.0, expected=5.0, ahead=1), prefetch=1, intake_paused=True,
                         outcomes_waiting=True, window_left=0.03)
    assert batching.on_stages and batching.seconds == pytest.approx(0.03)
    first_job = plan_wait(busy(0.0, expected=None, ahead=1), prefetch=1, intake_paused=True, outcomes_waiting=False)
    assert first_job.on_stages and first_job.seconds == OVERRUN_POLL_SECONDS


def test_paused_with_a_request_about_to_go_on_the_idle_gpu_the_loop_looks_again_shortly() -> None:
    """Intake depends on the GPU taking a job (a first job of unknown length gets one request queued
    behind it): sleeping through it stalled start-up by a second. The GPU thread signals it."""
    for preparing in (0, 1):
        about_to_start = plan_wait(InFlight(ahead=1, preparing=preparing), prefetch=1, intake_paused=True,
                                   outcomes_waiting=False)
        assert about_to_start.on_stages and about_to_start.gpu_start
        assert about_to_start.seconds == OVERRUN_POLL_SECONDS  # a backstop: the GPU thread signals it


def test_paused_a_hair_before_the_boundary_still_wakes_at_once() -> None:
    just_inside = busy(1.0 - LEAD + 0.0001, expected=1.0)
    assert plan_wait(just_inside, prefetch=1, intake_paused=True, outcomes_waiting=False).seconds == SHORT_POLL_SECONDS


def test_with_intake_open_the_loop_waits_in_poll_unless_an_outcome_is_imminent_and_nothing_is_ahead() -> None:
    idle = plan_wait(InFlight(), prefetch=1, intake_paused=False, outcomes_waiting=False)
    assert not idle.on_stages and idle.seconds == IDLE_POLL_SECONDS
    # A light load: the job's upload is under way, no request ahead: wait for its outcome, briefly.
    uploading = plan_wait(InFlight(finishing=1, finish_remaining=0.008), prefetch=1, intake_paused=False,
                          outcomes_waiting=False)
    assert uploading.on_stages and uploading.seconds == IMMINENT_SECONDS
    ending = plan_wait(busy(0.19, expected=0.2), prefetch=1, intake_paused=False, outcomes_waiting=False)
    assert ending.on_stages and ending.seconds == IMMINENT_SECONDS
    # Mid-job with intake open: poll() blocks (a request may come) until the job is about to end.
    mid = plan_wait(busy(0.05, expected=0.2), prefetch=1, intake_paused=False, outcomes_waiting=False)
    assert not mid.on_stages and mid.seconds == pytest.approx(0.15 - IMMINENT_SECONDS)
    # A request is ahead (short jobs, a backlog): records matter, poll() it is, in short steps.
    backlog = plan_wait(busy(0.009, expected=0.01, ahead=3, finishing=1), prefetch=1, intake_paused=False,
                        outcomes_waiting=False)
    assert not backlog.on_stages
