"""CI variant of the chaos test: 200 requests, 3 worker processes, repeated SIGKILLs, a broker restart
and an S3 outage, on the real local stack. Every request must have exactly one committed result."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.chaos.harness import run_chaos


def test_chaos_exactly_one_result_per_request(stack: Any, tmp_path: Path) -> None:
    if not (stack.kafka.managed and stack.s3.managed):
        import pytest

        pytest.skip("needs a stack this test may restart (not external servers)")
    report = run_chaos(stack, tmp_path, requests=200, workers=3, kills=4, job_seconds=0.25,
                       broker_restart=True, s3_outage_seconds=15.0)
    print(report.line())
    assert report.kills >= 3 and report.broker_restarts == 1 and report.s3_outages == 1
    assert report.duplicates == 0
    assert report.lost == 0
    assert report.wav_bad == 0 and report.wav_checked == report.successes
    assert report.results == 200
