"""What the speaker-conditioning cache saves: the same voice twice vs two different voices.

    uv run python -m benchmarks.speaker_cache [--out artifacts/bench/speaker_cache.json]

Runs the product engine (``IndexTTS2Engine``) on the tiny random IndexTTS2 from
``devstack.tiny_model`` (built into ``--model-dir`` on first use), on the CPU, in one process with
the model loaded once. Every round uses three fresh reference clips (new content hashes, so the
first use of each is a real miss):

- different voices: synthesize with voice B, then voice C; the timed request is C (a miss: w2v-BERT,
  semantic codec, CAMPPlus and the length regulator run on the reference);
- same voice twice: synthesize with voice A, then A again; the timed request is the repeat (a hit:
  the conditioning comes from the LRU).

Both timed requests have the same text, settings and seed, so the only difference is the
conditioning. Reported: per-round times, medians, ratio = different / same (goal >= 1.5),
the engine's own stage split, and the cache counters. The conditioning share, and so the ratio,
grows with the reference length (``--reference-seconds``; IndexTTS2 reads at most 15 s) and
shrinks with the generated length (``--max-mel-tokens``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GOAL = 1.5


def ensure_tiny_model(model_dir: Path) -> Path:
    """Build it in a child process: this one must not import huggingface_hub before the engine."""
    proc = subprocess.run(
        [sys.executable, "-m", "devstack.tiny_model", str(model_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"devstack.tiny_model failed:\n{proc.stdout}\n{proc.stderr}")
    return model_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "artifacts" / "bench" / "speaker_cache.json")
    parser.add_argument("--model-dir", type=Path, default=ROOT / ".cache" / "tiny-model")
    parser.add_argument("--hf-home", type=Path, default=None, help="default: MODEL_DIR/hf")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reference-seconds", type=float, default=10.0)
    parser.add_argument("--max-mel-tokens", type=int, default=30)
    parser.add_argument("--num-beams", type=int, default=1)
    parser.add_argument("--text", default="The quick brown fox jumps over the lazy dog.")
    args = parser.parse_args(argv)

    built = time.perf_counter()
    model_dir = ensure_tiny_model(args.model_dir)
    build_s = time.perf_counter() - built
    hf_home = args.hf_home or model_dir / "hf"

    from processor.engine.base import GenerationSettings, LocalAudio, SynthesisSpec, Synthesized
    from processor.engine.indextts2 import IndexTTS2Engine, write_harmonic_wav

    engine = IndexTTS2Engine(model_dir, device=args.device, hf_home=hf_home)
    warm = time.perf_counter()
    engine.warm_up()
    warm_up_s = time.perf_counter() - warm
    settings = GenerationSettings(max_mel_tokens=args.max_mel_tokens, num_beams=args.num_beams)

    def run(voice: LocalAudio) -> tuple[float, Synthesized]:
        spec = SynthesisSpec(request_id="bench", text=args.text, voice=voice, generation=settings, seed=7)
        started = time.perf_counter()
        result = engine.synthesize(spec)
        return time.perf_counter() - started, result

    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="speaker-cache-") as tmp:
        for index in range(args.rounds):
            voices = []
            for k in range(3):
                path = Path(tmp) / f"r{index}-v{k}.wav"
                write_harmonic_wav(
                    path, seconds=args.reference_seconds, f0=100.0 + 37.0 * k + 3.0 * index, seed=index * 3 + k
                )
                voices.append(LocalAudio(path=path, sha256=hashlib.sha256(path.read_bytes()).hexdigest()))
            a, b, c = voices
            # Order alternates so slow drift on a shared machine does not favour one side.
            if index % 2 == 0:
                run(b)
                different_s, different = run(c)
                run(a)
                same_s, same = run(a)
            else:
                run(a)
                same_s, same = run(a)
                run(b)
                different_s, different = run(c)
            rounds.append(
                {
                    "different_voice_s": round(different_s, 4),
                    "same_voice_repeat_s": round(same_s, 4),
                    "ratio": round(different_s / same_s, 3),
                    "different_stages": different.stage_seconds,
                    "same_stages": same.stage_seconds,
                    "audio_seconds": round(same.duration_seconds, 3),
                }
            )
            print(
                f"round {index + 1}/{args.rounds}: different voices {different_s:.2f}s, "
                f"same voice repeat {same_s:.2f}s, ratio {different_s / same_s:.2f}",
                flush=True,
            )

    different_med = statistics.median(r["different_voice_s"] for r in rounds)
    same_med = statistics.median(r["same_voice_repeat_s"] for r in rounds)
    conditioning_med = statistics.median(r["different_stages"].get("conditioning", 0.0) for r in rounds)
    ratio = different_med / same_med
    report = {
        "benchmark": "speaker_cache",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "model": {
            "dir": str(model_dir),
            "type": engine.info.model_type,
            "version": engine.info.model_version,
            "device": engine.info.device,
            "precision": engine.info.precision,
            "load_seconds": round(engine.info.load_seconds, 3),
            "build_or_check_seconds": round(build_s, 3),
            "warm_up_seconds": round(warm_up_s, 3),
        },
        "settings": {
            "rounds": args.rounds,
            "reference_seconds": args.reference_seconds,
            "max_mel_tokens": args.max_mel_tokens,
            "num_beams": args.num_beams,
            "text": args.text,
        },
        "rounds": rounds,
        "median_different_voice_s": round(different_med, 4),
        "median_same_voice_repeat_s": round(same_med, 4),
        "median_conditioning_s": round(conditioning_med, 4),
        "ratio": round(ratio, 3),
        "goal_ratio": GOAL,
        "meets_goal": ratio >= GOAL,
        "cache": engine.cache.stats(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"median: different voices {different_med:.2f}s, same voice repeat {same_med:.2f}s "
        f"(conditioning {conditioning_med:.2f}s) -> {ratio:.2f}x "
        f"({'meets' if ratio >= GOAL else 'MISSES'} the {GOAL}x goal); wrote {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
