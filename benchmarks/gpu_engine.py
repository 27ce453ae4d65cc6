"""IndexTTS2 engine cost on a GPU: load time, per-stage time, RTF and peak memory per precision/flag.

    uv run python -m benchmarks.gpu_engine [--device cuda] [--tokens 300] [--runs 3]
        [--variants fp32,fp16,fp16+cuda_kernel,...] [--out artifacts/bench/gpu_engine.json]
    uv run python -m benchmarks.gpu_engine --device cpu --tokens 20        # smoke test, no GPU

The model is a FULL-SIZE random IndexTTS2 (``devstack.tiny_model --full-size``: upstream
IndexTTS-2 dimensions for the GPT, s2mel DiT, semantic codec, w2v-BERT and BigVGAN; ~5 GB of
random fp32 weights, built once into ``--model-dir``), so the compute and memory are the real
model's while nothing is downloaded. ``--size tiny`` uses the tiny model instead (fast CPU check).

Random weights never say "stop", and the real model stops when the text is spoken; to compare
like with like every run generates exactly ``--tokens`` mel tokens (``min_new_tokens`` =
``max_mel_tokens`` = tokens, injected at the GPT call). 1 token ~ 1.72 mel frames ~ 20 ms of audio.

Each variant runs in a fresh child process (clean GPU memory, a crash or a missing optional
package such as deepspeed / flash-attn / sageattention only fails that variant) and reports:

- ``import_s``, ``load_s``: importing indextts, constructing the engine (weights to device);
- ``warm_up_s``: the engine's own warm-up synthesis (first CUDA kernels, torch.compile, graphs);
- ``first``: the first timed request (computes the reference conditioning: a cache miss);
- ``steady``: median over ``--runs`` further requests (conditioning cached), per stage
  (``gpt``, ``s2mel``, ``vocoder``), ``total``, audio seconds and RTF = total / audio;
- ``peak_gpu_mib``: torch.cuda.max_memory_allocated over the timed requests (and after load);
  on the CPU, the process's peak RSS instead;
- ``flags``: what the engine reports as active (a requested accelerator that could not start
  falls back silently upstream; this shows it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# Engine options per variant (IndexTTS2Engine keyword arguments).
VARIANTS: dict[str, dict[str, Any]] = {
    "fp32": {},
    "fp16": {"use_fp16": True},
    "fp16+cuda_kernel": {"use_fp16": True, "use_cuda_kernel": True},
    "fp16+deepspeed": {"use_fp16": True, "use_deepspeed": True},
    "fp16+accel": {"use_fp16": True, "use_accel": True},
    "fp16+flash": {"use_fp16": True, "attn_backend": "flash"},
    "fp16+sage": {"use_fp16": True, "attn_backend": "sage"},
    "fp16+compile": {"use_fp16": True, "use_torch_compile": True},
    "fp32+cuda_kernel": {"use_cuda_kernel": True},
}
GPU_DEFAULT = ["fp32", "fp16", "fp16+cuda_kernel", "fp16+deepspeed", "fp16+accel", "fp16+sage", "fp16+compile"]
TEXT = (
    "The quick brown fox jumps over the lazy dog, while the processor renders every request "
    "exactly once and uploads the audio."
)


def ensure_model(model_dir: Path, size: str) -> None:
    cmd = [sys.executable, "-m", "devstack.tiny_model", str(model_dir)]
    if size == "full":
        cmd.append("--full-size")
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"building the {size} model failed:\n{proc.stdout}\n{proc.stderr}")
    print(f"model ({size}) ready in {model_dir} [{time.perf_counter() - started:.1f}s]", flush=True)


# -- child: one variant -----------------------------------------------------------------------------


def _force_tokens(engine: Any, tokens: int, generated: list[int]) -> None:
    """Make every GPT call generate exactly ``tokens`` codes (and record how many it did)."""
    gpt = engine._tts.gpt
    inner = gpt.inference_speech
    stop = int(engine._tts.cfg.gpt.stop_mel_token)

    def fixed_length(*args: Any, **kwargs: Any) -> Any:
        kwargs["min_new_tokens"] = tokens
        kwargs["max_generate_length"] = tokens
        codes, latent = inner(*args, **kwargs)
        row = codes[0]
        hits = (row == stop).nonzero()
        generated.append(int(hits[0, 0]) if hits.numel() else int(row.shape[-1]))
        return codes, latent

    gpt.inference_speech = fixed_length


def run_child(args: argparse.Namespace) -> dict[str, Any]:
    import hashlib

    started = time.perf_counter()
    import torch

    from processor.engine.base import GenerationSettings, LocalAudio, SynthesisSpec
    from processor.engine.indextts2 import IndexTTS2Engine, write_harmonic_wav

    options = VARIANTS[args.child]
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    engine = IndexTTS2Engine(
        args.model_dir,
        device=args.device,
        hf_home=args.model_dir / "hf",
        cache_max_entries=8,
        **options,
    )
    constructed = time.perf_counter()
    info = engine.info
    result: dict[str, Any] = {
        "variant": args.child,
        "options": options,
        "flags": info.flags,
        "precision": info.precision,
        "device": info.device,
        "import_s": float(info.flags.get("import_seconds", 0.0)),
        "load_s": round(info.load_seconds, 3),
        "construct_s": round(constructed - started, 3),
    }
    if cuda:
        torch.cuda.synchronize()
        result["gpu_mib_after_load"] = round(torch.cuda.memory_allocated() / 2**20, 1)
        result["gpu_name"] = torch.cuda.get_device_name()

    generated: list[int] = []
    _force_tokens(engine, args.tokens, generated)
    warm = time.perf_counter()
    engine.warm_up()
    result["warm_up_s"] = round(time.perf_counter() - warm, 3)

    with tempfile.TemporaryDirectory(prefix="gpu-bench-") as tmp:
        ref = Path(tmp) / "reference.wav"
        write_harmonic_wav(ref, seconds=args.reference_seconds, sample_rate=engine.sample_rate, seed=5)
        voice = LocalAudio(path=ref, sha256=hashlib.sha256(ref.read_bytes()).hexdigest())
        spec = SynthesisSpec(
            request_id="bench",
            text=TEXT,
            voice=voice,
            max_text_tokens_per_segment=200,  # one segment: the timed unit is one GPT call
            generation=GenerationSettings(max_mel_tokens=args.tokens, num_beams=args.num_beams),
            seed=11,
        )
        runs: list[dict[str, Any]] = []
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        for _ in range(args.runs + 1):
            generated.clear()
            began = time.perf_counter()
            out = engine.synthesize(spec)
            wall = time.perf_counter() - began
            audio_s = out.duration_seconds
            runs.append(
                {
                    "wall_s": round(wall, 4),
                    "stages": out.stage_seconds,
                    "audio_s": round(audio_s, 3),
                    "rtf": round(out.stage_seconds["total"] / audio_s, 4),
                    "tokens": list(generated),
                    "segments": out.segments,
                }
            )
    first, steady = runs[0], runs[1:]

    def median(key: str) -> float:
        return round(statistics.median(r["stages"].get(key, 0.0) for r in steady), 4)

    result["first"] = first
    result["steady"] = {
        "gpt_s": median("gpt"),
        "s2mel_s": median("s2mel"),
        "vocoder_s": median("vocoder"),
        "total_s": median("total"),
        "audio_s": statistics.median(r["audio_s"] for r in steady),
        "rtf": round(statistics.median(r["rtf"] for r in steady), 4),
        "tokens": statistics.median(sum(r["tokens"]) for r in steady),
        "gpt_ms_per_token": round(1000 * median("gpt") / max(1, args.tokens), 3),
    }
    result["runs"] = steady
    if cuda:
        result["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        result["peak_gpu_reserved_mib"] = round(torch.cuda.max_memory_reserved() / 2**20, 1)
    result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return result


# -- parent -----------------------------------------------------------------------------------------


def _environment(device: str) -> dict[str, Any]:
    env: dict[str, Any] = {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()}
    probe = (
        "import json, torch; d = torch.cuda.is_available();"
        "print(json.dumps({'torch': torch.__version__, 'cuda': torch.version.cuda, 'gpu': "
        "torch.cuda.get_device_name() if d else None, 'gpu_count': torch.cuda.device_count()}))"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    if proc.returncode == 0:
        env.update(json.loads(proc.stdout.strip().splitlines()[-1]))
    env["device_requested"] = device
    return env


def _table(results: list[dict[str, Any]], tokens: int) -> str:
    head = (
        f"{'variant':<18} {'load s':>7} {'gpt s':>7} {'s2mel s':>8} {'voc s':>7} {'total s':>8} "
        f"{'RTF':>7} {'peak MiB':>9}"
    )
    lines = [f"tokens per request: {tokens}", head, "-" * len(head)]
    for r in results:
        if "error" in r:
            lines.append(f"{r['variant']:<18} FAILED: {r['error'][:90]}")
            continue
        s = r["steady"]
        peak = r.get("peak_gpu_mib", r.get("peak_rss_mib", 0.0))
        lines.append(
            f"{r['variant']:<18} {r['load_s']:>7.2f} {s['gpt_s']:>7.3f} {s['s2mel_s']:>8.3f} "
            f"{s['vocoder_s']:>7.3f} {s['total_s']:>8.3f} {s['rtf']:>7.3f} {peak:>9.0f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--tokens", type=int, default=300, help="mel tokens generated per request")
    parser.add_argument("--runs", type=int, default=3, help="timed requests after the first")
    parser.add_argument("--num-beams", type=int, default=1)
    parser.add_argument("--reference-seconds", type=float, default=10.0)
    parser.add_argument("--variants", default=None, help=f"comma list from {sorted(VARIANTS)}; default per device")
    parser.add_argument(
        "--size", choices=("auto", "full", "tiny"), default="auto", help="auto: full on GPU, tiny on CPU"
    )
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--variant-timeout", type=float, default=1800.0)
    parser.add_argument("--out", type=Path, default=ROOT / "artifacts" / "bench" / "gpu_engine.json")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    cuda = args.device.startswith("cuda")
    size = args.size if args.size != "auto" else ("full" if cuda else "tiny")
    if args.model_dir is None:
        args.model_dir = ROOT / ".cache" / ("full-random-model" if size == "full" else "tiny-model")

    if args.child is not None:
        result = run_child(args)
        assert args.child_out is not None
        args.child_out.write_text(json.dumps(result, indent=2))
        return 0

    variants = args.variants.split(",") if args.variants else (GPU_DEFAULT if cuda else ["fp32"])
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {sorted(VARIANTS)}")
    ensure_model(args.model_dir, size)

    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="gpu-bench-") as tmp:
        for variant in variants:
            out = Path(tmp) / f"{variant}.json"
            cmd = [
                sys.executable, "-m", "benchmarks.gpu_engine", "--child", variant, "--child-out", str(out),
                "--device", args.device, "--tokens", str(args.tokens), "--runs", str(args.runs),
                "--num-beams", str(args.num_beams), "--reference-seconds", str(args.reference_seconds),
                "--size", size, "--model-dir", str(args.model_dir),
            ]  # fmt: skip
            print(f"== {variant}", flush=True)
            try:
                proc = subprocess.run(
                    cmd, cwd=ROOT, capture_output=True, text=True, timeout=args.variant_timeout, check=False
                )
            except subprocess.TimeoutExpired:
                results.append({"variant": variant, "error": f"timed out after {args.variant_timeout:.0f}s"})
                continue
            if proc.returncode != 0 or not out.exists():
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
                results.append({"variant": variant, "error": " | ".join(tail) or f"exit {proc.returncode}"})
            else:
                results.append(json.loads(out.read_text()))
            last = results[-1]
            print(json.dumps(last.get("steady", last), indent=None), flush=True)

    report = {
        "benchmark": "gpu_engine",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "environment": _environment(args.device),
        "model": {"dir": str(args.model_dir), "size": size},
        "settings": {
            "tokens": args.tokens,
            "runs": args.runs,
            "num_beams": args.num_beams,
            "reference_seconds": args.reference_seconds,
            "text": TEXT,
        },
        "variants": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(_table(results, args.tokens))
    print(f"wrote {args.out}")
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
