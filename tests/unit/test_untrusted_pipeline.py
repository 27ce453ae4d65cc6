"""Issue 11 through the real Processor on the in-memory broker and storage (tests/support/rig.py):
outcomes that cannot be produced, claim checks, the write allowlist before the GPU, liveness.
The bad-input corpus (tests/integration/test_bad_input.py) checks the same against the real stack."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from processor.errors import ErrorCode
from processor.health import WorkerState
from processor.request import outcome_id
from tests.support.rig import BUCKET, ManualClock, Rig


def test_issue11_defect1_an_outcome_the_broker_refuses_is_replaced_not_retried_forever(tmp_path: Path) -> None:
    """The old worker aborted, rewound and retried the same too-large outcome without end, throwing
    away every partition's work each time. Now the refused outcome alone gets a small stand-in."""
    rig = Rig(tmp_path)
    rig.broker.max_record_bytes["res"] = 900  # smaller than a success result, larger than an error result
    rig.submit(["big-1"], workflow_id="w" * 256, stage_name="s" * 256)
    rig.submit(["small-1"], text="")  # an error result: fits
    rig.start()
    rig.step_until(lambda: rig.committed(0) == 2, timeout=60)  # the first render imports scipy
    rig.stop()
    results = {r["request_id"]: r for r in rig.results()}
    assert results["big-1"]["status"] == "error" and results["big-1"]["error_code"] == "outcome_too_large"
    assert results["small-1"]["error_code"] == "invalid_request"
    assert rig.answered() == {"big-1": 1, "small-1": 1}
    assert rig.engine.calls == 1  # nothing was redone


def test_a_dead_letter_too_large_for_the_dlq_goes_by_claim_check(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    original = b"\x07" * 1_100_000
    rig.submit(raw=original)
    rig.start()
    rig.step_until(lambda: rig.committed(0) == 1, timeout=60)  # the first render imports scipy
    rig.stop()
    (dl,) = rig.dead_letters()
    assert dl["original_value"] is None and dl["original_size_bytes"] == len(original) + len(b"raw")
    bucket, _, key = dl["claim_check_uri"][5:].partition("/")
    assert bucket == BUCKET and key.startswith("dead-letters/req/0/0-")
    from processor.wire import Codec

    assert Codec("DeadLetter").decode(rig.storage.objects[(bucket, key)][0])["original_value"] == original


def test_issue11_defect3_the_write_allowlist_is_checked_before_any_download_or_gpu(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.submit(["reference"], output_key_prefix="voices/narrator")
    rig.submit(["elsewhere"], output_key_prefix="somewhere/else")
    rig.start()
    rig.step_until(lambda: rig.committed(0) == 2, timeout=60)  # the first render imports scipy
    rig.stop()
    codes = {r["request_id"]: r["error_code"] for r in rig.results()}
    assert codes == {"reference": "output_not_allowed", "elsewhere": "output_not_allowed"}
    assert rig.engine.calls == 0 and rig.storage.puts == []


def test_invalid_ids_are_answered_under_a_short_stand_in(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.submit(["x" * 600_000])
    rig.start()
    rig.step_until(lambda: rig.committed(0) == 1, timeout=60)  # the first render imports scipy
    rig.stop()
    (r,) = rig.results()
    assert r["request_id"] == outcome_id("x" * 600_000, "req-0-0") and r["error_code"] == "invalid_request"


def test_issue11_defect6_liveness_sees_work_that_never_commits(tmp_path: Path) -> None:
    """Every transaction aborts (the old endless loop): the worker is busy all along yet commits
    nothing, so liveness fails once that lasts past WORKER_LIVENESS_COMMIT_SECONDS; the first
    commit makes it live again. The clock is the test's: three seconds pass in as many loop turns."""
    clock = ManualClock()
    rig = Rig(tmp_path, clock=clock)
    state = WorkerState(stall_seconds=30, job_timeout_seconds=60, commit_stall_seconds=2)
    state.processor = rig.processor
    rig.submit(["a", "b"])
    rig.start()
    t0 = clock()
    for _ in range(30):
        rig.session.faults.append("abort")
    while rig.session.faults:
        rig.processor.run_once()
        clock.advance(0.1)
    assert clock() - t0 >= 3 and rig.committed(0) == 0
    rig.processor.run_once()
    snap = rig.processor.snapshot
    assert snap.progress_at is not None and snap.progress_at <= t0 + 0.2  # busy all along, nothing committed
    live, why = state.live()
    assert not live and "committed nothing" in why
    rig.step_until(lambda: rig.committed(0) == 2, timeout=60)  # the first render imports scipy
    rig.processor.run_once()
    assert rig.processor.snapshot.progress_at is not None and rig.processor.snapshot.progress_at > t0 + 0.2
    assert state.live() == (True, "ok")
    rig.stop()


def test_outcomes_refused_together_as_one_batch_replace_only_the_one_too_large(tmp_path: Path) -> None:
    """A broker refuses a produce batch as a whole when it outgrows the topic's max.message.bytes: an
    outcome that fits goes down with one that does not. Only the largest is replaced by a stand-in;
    the other commits as it was (it used to be replaced too, and lost its request id)."""
    rig = Rig(tmp_path)
    limit = 1400

    def refused_as_a_batch(records: Any) -> dict[int, str]:
        total = sum(len(r.value) for r in records)
        return {i: "MSG_SIZE_TOO_LARGE" for i in range(len(records))} if total > limit else {}

    rig.session._refused = refused_as_a_batch  # type: ignore[method-assign]
    rig.submit(["big"], workflow_id="w" * 256, stage_name="s" * 256, emotion_text="x" * 1000)
    rig.submit(["small"], text="")
    rig.start()
    rig.step_until(lambda: rig.committed(0) == 2, timeout=60)
    rig.stop()
    codes = {r["request_id"]: r["error_code"] for r in rig.results()}
    assert codes == {"big": ErrorCode.OUTCOME_TOO_LARGE.value, "small": ErrorCode.INVALID_REQUEST.value}
