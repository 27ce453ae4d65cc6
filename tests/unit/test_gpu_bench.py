"""The GPU benchmark's own arithmetic and bookkeeping (the measuring itself runs on a GPU machine)."""

from __future__ import annotations

import subprocess
import sys
import time
import tomllib
from pathlib import Path

from benchmarks import gpu_engine

ROOT = Path(__file__).resolve().parents[2]


def _request(start: float, seconds: float, audio: float) -> dict[str, float]:
    return {"started_at": start, "ended_at": start + seconds, "audio_s": audio, "rtf": seconds / audio}


def test_streams_round_aggregates_speech_over_the_rounds_wall_time() -> None:
    done = [
        {"requests": [_request(100.0, 2.0, 10.0), _request(102.0, 2.0, 10.0)], "peak_rss_mib": 900.0},
        {"requests": [_request(100.5, 3.0, 10.0), _request(103.5, 3.0, 10.0)], "peak_rss_mib": 950.0},
    ]
    summary = gpu_engine._round_summary(2, done)
    assert summary["wall_s"] == 6.5  # first start (100.0) to last end (106.5), across both streams
    assert summary["audio_s"] == 40.0
    assert summary["speech_s_per_wall_s"] == round(40.0 / 6.5, 3)
    assert summary["rtf_p50"] == 0.25 and summary["rtf_max"] == 0.3
    assert summary["peak_rss_mib_per_process"] == 950.0


def test_every_carried_wheel_has_a_version() -> None:
    lock = {p["name"] for p in tomllib.loads((ROOT / "uv.lock").read_text())["package"]}
    for line in (ROOT / "benchmarks" / "gpu_wheels.txt").read_text().splitlines():
        spec = line.split("#")[0].strip()
        if spec:
            assert "==" in spec or spec in lock, f"{spec}: pin it or lock it"


def test_package_check_flags_what_neither_the_image_nor_the_wheels_provide() -> None:
    variants = [{"imported_distributions": ["torch", "librosa", "boto3", "nemo-text-processing"]}]
    check = gpu_engine.gpu_package_check(variants)
    assert check["carried"] == ["librosa"]
    assert "boto3" in check["imported_here_only"]
    assert check["missing_on_gpu"] == ["nemo-text-processing"]


def test_protocol_lines_are_found_among_other_output() -> None:
    script = (
        "import sys, time; print('noise'); sys.stdout.flush(); time.sleep(0.05);"
        f"print({gpu_engine.PROTOCOL!r} + '{{\"kind\": \"ready\"}}'); print('more')"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        assert gpu_engine._Lines(proc).message(time.monotonic() + 10) == {"kind": "ready"}
    finally:
        proc.wait(timeout=10)


def test_table_shows_every_part_including_what_did_not_run() -> None:
    report = {
        "when": "2026-11-29T00:00:00+00:00",
        "environment": {"gpu": None},
        "settings": {"size": "full", "tokens": 500, "text_tokens": 60, "num_beams": 3, "reference_seconds": 10.0},
        "variants": [
            {
                "variant": "fp16",
                "status": "ok",
                "load_s": 9.0,
                "warm_up_s": 2.0,
                "first": {"stages": {"conditioning": 0.4}},
                "steady": {"gpt_s": 3.0, "s2mel_s": 0.5, "vocoder_s": 0.1, "total_s": 3.7, "audio_s": 10, "rtf": 0.37},
                "latency": {"first_segment_s": 1.1},
                "peak_gpu_mib": 4000.0,
            },
            {"variant": "fp16+accel", "status": "unavailable", "reason": "not installed: flash_attn"},
        ],
        "streams": {
            "variant": "fp16",
            "requests_per_stream": 2,
            "status": "partial",
            "rounds": [
                {"streams": 1, "status": "ok", "wall_s": 7.4, "speech_s_per_wall_s": 2.7, "rtf_p50": 0.37},
                {"streams": 8, "status": "skipped", "reason": "time guard"},
            ],
        },
    }
    text = gpu_engine.table(report)
    assert "10.0 s" in text and "0.370" in text and "1.10" in text
    assert "unavailable not installed: flash_attn" in text
    assert "      8 skipped" in text
