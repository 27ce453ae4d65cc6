"""What the finish stage spends per second of audio for each output: resample, loudness, encode.

    uv run python -m benchmarks.encode_cost [--seconds 20] [--repeat 5] [--out artifacts/bench/encode.json]

Renders ``--seconds`` of speech-like audio at IndexTTS2's 22.05 kHz (``audio.speech_like_pcm``)
through ``processor.audio.render`` exactly as the finish stage does, for every format at the rates
people ask for, with and without loudness normalization, and reports the best of ``--repeat`` runs
as milliseconds of CPU time per second of audio (one thread: the finish thread), plus the bytes per
second of audio. The best run is the cost; the others measure the machine's other tenants.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

from processor.audio import OutputSpec, encoder_problems, render, speech_like_pcm

ENGINE_RATE = 22050
CASES: list[tuple[str, OutputSpec]] = [
    ("wav 22.05k (default)", OutputSpec()),
    ("wav 48k", OutputSpec("wav", 48000)),
    ("wav 16k", OutputSpec("wav", 16000)),
    ("flac 22.05k", OutputSpec("flac")),
    ("flac 48k", OutputSpec("flac", 48000)),
    ("opus 48k 32k", OutputSpec("opus", 48000)),
    ("opus 16k 32k", OutputSpec("opus", 16000)),
    ("opus 24k 24k", OutputSpec("opus", 24000, bitrate_kbps=24)),
    ("mp3 48k 64k", OutputSpec("mp3", 48000)),
    ("mp3 44.1k 128k", OutputSpec("mp3", 44100, bitrate_kbps=128)),
    ("mp3 22.05k 64k", OutputSpec("mp3")),
    ("mp3 8k 24k", OutputSpec("mp3", 8000, bitrate_kbps=24)),
    ("wav 48k, -16 LUFS", OutputSpec("wav", 48000, loudness_lufs=-16.0)),
    ("opus 48k, -16 LUFS", OutputSpec("opus", 48000, loudness_lufs=-16.0)),
    ("mp3 48k, -16 LUFS", OutputSpec("mp3", 48000, loudness_lufs=-16.0)),
    ("mp3 48k, -16 LUFS, stereo", OutputSpec("mp3", 48000, channels=2, loudness_lufs=-16.0)),
    ("loudness only (wav 22.05k, -23 LUFS)", OutputSpec(loudness_lufs=-23.0)),
]


def measure(seconds: float, repeat: int) -> list[dict[str, Any]]:
    pcm = speech_like_pcm(seconds, sample_rate=ENGINE_RATE, seed=7)
    rows = []
    for label, spec in CASES:
        cpu, wall = [], []
        size = 0
        for _ in range(repeat):
            c0, w0 = time.thread_time(), time.perf_counter()
            out = render(pcm, ENGINE_RATE, spec)
            cpu.append(time.thread_time() - c0)
            wall.append(time.perf_counter() - w0)
            size = out.size
        rows.append({
            "case": label, "format": spec.format, "sample_rate": out.sample_rate, "bitrate_kbps": out.bitrate_kbps,
            "loudness": spec.loudness_lufs, "channels": spec.channels,
            "cpu_ms_per_audio_second": round(min(cpu) * 1000 / seconds, 2),
            "wall_ms_per_audio_second_best": round(min(wall) * 1000 / seconds, 2),
            "wall_ms_per_audio_second_median": round(sorted(wall)[len(wall) // 2] * 1000 / seconds, 2),
            "bytes_per_audio_second": round(size / seconds),
        })
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--out", type=Path, default=Path("artifacts/bench/encode.json"))
    args = p.parse_args(argv)
    if bad := encoder_problems():
        raise SystemExit(f"this build cannot encode: {bad}")
    render(speech_like_pcm(1.0), ENGINE_RATE, OutputSpec("mp3", 48000, loudness_lufs=-16.0))  # imports, caches
    rows = measure(args.seconds, args.repeat)
    import soundfile
    import soxr

    result = {"seconds": args.seconds, "repeat": args.repeat, "machine": platform.machine(),
              "cpus": __import__("os").cpu_count(), "libsndfile": soundfile.__libsndfile_version__,
              "soxr": soxr.__version__, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"{'case':<38} {'CPU ms/s':>9} {'wall ms/s':>10} {'KiB/s':>7}")
    for r in rows:
        print(f"{r['case']:<38} {r['cpu_ms_per_audio_second']:>9.1f} {r['wall_ms_per_audio_second_median']:>10.1f} "
              f"{r['bytes_per_audio_second'] / 1024:>7.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
