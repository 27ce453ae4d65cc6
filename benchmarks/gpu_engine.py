"""The engine on one GPU: per-stage time, RTF, peak memory, streams per card, first-segment latency.

    python -m benchmarks.gpu_engine [--device cuda] [--budget 330] [--out artifacts/bench/gpu_engine.json]
    python -m benchmarks.gpu_engine --smoke            # CPU, full-size model, reduced token counts
    bash benchmarks/gpu_run.sh                         # what the GPU machine runs (docs/benchmarks.md)

One script, one JSON (``--out``) and one table (printed, and beside the JSON as ``.txt``).

The model is a FULL-SIZE random IndexTTS2 built by the project's own builder
(``devstack.tiny_model --full-size``: upstream IndexTTS-2 dimensions for the GPT, s2mel DiT, semantic
codec, w2v-BERT, CAMPPlus and BigVGAN; 6.5 GB of random fp32 weights), so compute and memory are the
real model's while nothing is downloaded. ``--size tiny`` uses the tiny model (a quick CPU check).

Fixed work per request, so every variant and every machine does the same:

- text: ``--text-tokens`` fixed BPE token ids, fed straight to the tokenizer's output. Text
  normalisation (nemo / pynini) never runs and is never imported: it is not on the GPU path, and
  pynini (~150 MB) cannot travel to the GPU machine.
- speech: exactly ``--tokens`` mel tokens per request (``min_new_tokens`` = ``max_generate_length``,
  injected at the GPT call): random weights never say "stop". 1 mel token ~ 1.72 mel frames ~ 20 ms
  of audio, so the default 500 is a 10 s utterance.

What runs, in priority order (``--plan``), each part in fresh processes under a time guard, until
``--budget`` seconds (model build included) are spent; what did not fit is listed as skipped:

1. ``variant:NAME``: one process per precision / acceleration option (``VARIANTS``): import and
   load time, warm-up, the first request (a conditioning-cache miss: ``conditioning`` seconds),
   ``--runs`` steady requests (median per stage: gpt, s2mel, vocoder; total; RTF = total / audio
   seconds), a ``--segments``-segment request (first-segment latency: time to the first progress
   callback, i.e. to the first segment's audio) and peak GPU memory (``max_memory_allocated``; on the
   CPU the peak RSS instead). An option whose package is missing (flash-attn, DeepSpeed,
   SageAttention) is reported ``unavailable`` without spending time; one that fails or runs past its
   guard fails alone, keeping what it measured so far.
2. ``streams``: ``max(--streams)`` processes load the model on the one device, then rounds of 1, 2,
   4, 8 of them each run ``--stream-requests`` requests at the same moment: aggregate seconds of
   speech per wall second, per-stream RTF, per-process peak memory and device memory in use.

IndexTTS-2.5 variants (``2.5-*``) need ``processor/engine/indextts25.py`` (issue 12); until it is on
the branch they are reported ``unavailable`` (not faked).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import platform
import random
import re
import resource
import selectors
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = "@@BENCH "  # stream workers' messages on stdout start with this; anything else is noise
SECONDS_PER_MEL_TOKEN = 1.72 * 256 / 22050  # IndexTTS2: 1.72 mel frames per code, hop 256 at 22.05 kHz
# Imported here only because this machine happens to have them; the GPU machine's own versions do
# not import them, so they need not travel.
NOT_NEEDED_ON_GPU = {
    # accelerate imports boto3 only when it is installed (its SageMaker config helper)
    **dict.fromkeys(("boto3", "botocore", "jmespath", "s3transfer"), "accelerate, only when installed"),
    # huggingface-hub 2.x's HTTP stack; the image's huggingface-hub 1.33 uses httpx (on the image)
    **dict.fromkeys(("httpx2", "httpcore2", "truststore", "trio", "outcome", "sniffio"), "huggingface-hub 2.x"),
}


@dataclass(frozen=True)
class Variant:
    """One engine configuration. ``needs``: import names without which it cannot start."""

    name: str
    engine: str  # a key of ENGINES
    options: dict[str, Any]
    needs: tuple[str, ...] = ()
    cuda_only: bool = False
    gpu_limit_s: float = 120.0  # time guard on the GPU (compile / kernel builds need more)
    note: str = ""


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("fp32", "indextts2", {}),
        Variant("fp16", "indextts2", {"use_fp16": True}),
        Variant(
            "fp16+cuda_kernel",
            "indextts2",
            {"use_fp16": True, "use_cuda_kernel": True},
            cuda_only=True,
            gpu_limit_s=200.0,
            note="BigVGAN fused anti-alias activation, JIT-built with nvcc on first use",
        ),
        Variant(
            "fp16+compile",
            "indextts2",
            {"use_fp16": True, "use_torch_compile": True},
            gpu_limit_s=240.0,
            note="torch.compile of the s2mel DiT",
        ),
        Variant("fp16+sage", "indextts2", {"use_fp16": True, "attn_backend": "sage"}, ("sageattention",), True),
        Variant("fp16+accel", "indextts2", {"use_fp16": True, "use_accel": True}, ("flash_attn",), True),
        Variant("fp16+flash", "indextts2", {"use_fp16": True, "attn_backend": "flash"}, ("flash_attn",), True),
        Variant("fp16+deepspeed", "indextts2", {"use_fp16": True, "use_deepspeed": True}, ("deepspeed",), True),
        Variant("fp32+cuda_kernel", "indextts2", {"use_cuda_kernel": True}, cuda_only=True, gpu_limit_s=200.0),
        Variant("2.5-sdpa-fp32", "indextts2.5", {"precision": "fp32", "attn_backend": "sdpa"}),
        Variant("2.5-sdpa-bf16", "indextts2.5", {"precision": "bf16", "attn_backend": "sdpa"}),
    )
}
# What runs on a GPU, most useful first: whatever the budget cuts comes off the end.
GPU_PLAN = (
    "variant:fp32,variant:fp16,streams,variant:2.5-sdpa-bf16,variant:2.5-sdpa-fp32,"
    "variant:fp16+cuda_kernel,variant:fp16+compile,variant:fp16+sage,variant:fp16+accel,variant:fp16+deepspeed"
)
SMOKE_PLAN = "variant:fp32,streams,variant:2.5-sdpa-fp32"


class Unavailable(Exception):
    """This variant cannot run here (missing package or engine); not a failure of the variant."""


# -- engine adapters: load an engine and pin its work to fixed token counts -----------------------


@dataclass
class Bench:
    """A loaded engine plus the knobs that fix its work per request."""

    engine: Any
    sample_rate: int
    set_text: Callable[[list[list[str]]], None]  # segments of BPE pieces
    set_mel_tokens: Callable[[int], None]
    pieces: list[str]  # ordinary BPE pieces to build fixed text from
    generated: list[int] = field(default_factory=list)  # mel tokens per GPT call, for the record
    cuda: bool = False
    import_s: float = 0.0  # importing the model package (before the engine's own clock starts)


def _no_text_normalisation() -> None:
    """Keep nemo / pynini out: the benchmark feeds token pieces, so the normaliser is never used."""
    from indextts.utils import front

    front.TextNormalizer.load = lambda self: None


def _ordinary_pieces(sp_model: Any) -> list[str]:
    pieces = []
    for i in range(sp_model.GetPieceSize()):
        if sp_model.IsControl(i) or sp_model.IsUnknown(i) or sp_model.IsByte(i) or sp_model.IsUnused(i):
            continue
        piece = str(sp_model.IdToPiece(i))
        if any(ch.isalnum() for ch in piece):
            pieces.append(piece)
    return pieces


def load_indextts2(args: argparse.Namespace, options: dict[str, Any]) -> Bench:
    started = time.perf_counter()
    _no_text_normalisation()  # imports indextts (and with it transformers, librosa, ...)
    from processor.engine.indextts2 import IndexTTS2Engine

    imported = time.perf_counter() - started

    engine = IndexTTS2Engine(
        args.model_dir, device=args.device, hf_home=args.model_dir / "hf", cache_max_entries=8, **options
    )
    tts = engine._tts
    tokenizer = tts.tokenizer
    fixed: dict[str, Any] = {"segments": [["▁A"]], "mel_tokens": 1}
    generated: list[int] = []

    def tokenize(text: str) -> list[str]:
        return [piece for segment in fixed["segments"] for piece in segment]

    def split_segments(tokens: list[str], *args: Any, **kwargs: Any) -> list[list[str]]:
        return [list(segment) for segment in fixed["segments"]]

    tokenizer.tokenize = tokenize
    tokenizer.split_segments = split_segments

    gpt = tts.gpt
    inner = gpt.inference_speech  # already wrapped by the engine's stage clock
    stop = int(tts.cfg.gpt.stop_mel_token)

    def fixed_length(*a: Any, **kw: Any) -> Any:
        kw["min_new_tokens"] = fixed["mel_tokens"]
        kw["max_generate_length"] = fixed["mel_tokens"]
        codes, latent = inner(*a, **kw)
        row = codes[0] if not hasattr(codes, "sequences") else codes.sequences[0]
        hits = (row == stop).nonzero()
        generated.append(int(hits[0, 0]) if hits.numel() else int(row.shape[-1]))
        return codes, latent

    gpt.inference_speech = fixed_length

    def set_text(segments: list[list[str]]) -> None:
        fixed["segments"] = segments

    def set_mel_tokens(n: int) -> None:
        fixed["mel_tokens"] = int(n)

    return Bench(
        engine=engine,
        sample_rate=int(engine.sample_rate),
        set_text=set_text,
        set_mel_tokens=set_mel_tokens,
        pieces=_ordinary_pieces(tokenizer.sp_model),
        generated=generated,
        cuda=str(tts.device).startswith("cuda"),
        import_s=imported,
    )


def load_indextts25(args: argparse.Namespace, options: dict[str, Any]) -> Bench:
    if importlib.util.find_spec("processor.engine.indextts25") is None:
        raise Unavailable("IndexTTS-2.5 engine not on this branch yet (processor/engine/indextts25.py, issue 12)")
    raise Unavailable("IndexTTS-2.5 engine present but this benchmark has no adapter for it yet")


@dataclass(frozen=True)
class EngineKind:
    loader: Callable[[argparse.Namespace, dict[str, Any]], Bench]
    build: Callable[[str], list[str]]  # size -> builder command (python -m ... OUT_DIR follows)
    model_dir: Callable[[argparse.Namespace], Path]
    available: Callable[[], str | None]  # None, or why not


def _indextts2_build(size: str) -> list[str]:
    return ["devstack.tiny_model", *(["--full-size"] if size == "full" else [])]


def _indextts25_available() -> str | None:
    if importlib.util.find_spec("processor.engine.indextts25") is None:
        return "not yet available: processor/engine/indextts25.py (issue 12) is not on this branch"
    return "not yet available: the IndexTTS-2.5 engine exists but this benchmark has no adapter for it yet"


def _indextts25_build(size: str) -> list[str]:
    return ["devstack.tiny_model25", *(["--full-size"] if size == "full" else [])]


ENGINES: dict[str, EngineKind] = {
    "indextts2": EngineKind(load_indextts2, _indextts2_build, lambda a: Path(a.model_dir), lambda: None),
    "indextts2.5": EngineKind(load_indextts25, _indextts25_build, lambda a: Path(a.model_dir25), _indextts25_available),
}


# -- one process's measurements ----------------------------------------------------------------------


def _fixed_segments(bench: Bench, text_tokens: int, segments: int, seed: int) -> list[list[str]]:
    """``text_tokens`` ordinary BPE pieces (seeded), split evenly into ``segments``."""
    rng = random.Random(seed)
    per = max(1, text_tokens // segments)
    return [[rng.choice(bench.pieces) for _ in range(per)] for _ in range(segments)]


def _gpu_mib(torch: Any) -> dict[str, float]:
    free, total = torch.cuda.mem_get_info()
    return {
        "allocated_mib": round(torch.cuda.memory_allocated() / 2**20, 1),
        "peak_allocated_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1),
        "peak_reserved_mib": round(torch.cuda.max_memory_reserved() / 2**20, 1),
        "device_used_mib": round((total - free) / 2**20, 1),
        "device_total_mib": round(total / 2**20, 1),
    }


def _rss_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _request(bench: Bench, spec: Any) -> dict[str, Any]:
    marks: list[float] = []

    def on_progress(*_: Any) -> None:  # any engine contract: (index, count) or (Segment, chunk)
        marks.append(time.perf_counter())

    bench.generated.clear()
    started_at = time.time()  # wall clock: comparable across the stream processes
    began = time.perf_counter()
    out = bench.engine.synthesize(spec, on_progress)
    wall = time.perf_counter() - began
    audio_s = float(out.duration_seconds)
    stages = {k: round(float(v), 4) for k, v in out.stage_seconds.items()}
    total = stages.get("total", wall)
    return {
        "wall_s": round(wall, 4),
        "stages": stages,
        "audio_s": round(audio_s, 3),
        "rtf": round(total / audio_s, 4) if audio_s else None,
        "first_segment_s": round(marks[0] - began, 4) if marks else None,
        "segments": len(marks),
        "mel_tokens": list(bench.generated),
        "started_at": started_at,
        "ended_at": started_at + wall,
    }


def _load(args: argparse.Namespace, variant: Variant) -> tuple[Bench, dict[str, Any]]:
    started = time.perf_counter()
    import torch

    torch_imported = time.perf_counter()
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    bench = ENGINES[variant.engine].loader(args, dict(variant.options))
    info = bench.engine.info
    loaded: dict[str, Any] = {
        "flags": dict(info.flags),
        "precision": info.precision,
        "device": info.device,
        "torch_import_s": round(torch_imported - started, 3),
        "import_s": round(bench.import_s + float(info.flags.get("import_seconds", 0.0)), 3),
        "load_s": round(float(info.load_seconds), 3),
        "construct_s": round(time.perf_counter() - started, 3),
    }
    if cuda:
        torch.cuda.synchronize()
        loaded["gpu_name"] = torch.cuda.get_device_name()
        loaded["gpu_after_load"] = _gpu_mib(torch)
    bench.set_text(_fixed_segments(bench, args.text_tokens, 1, seed=1))
    bench.set_mel_tokens(min(args.tokens, args.warmup_tokens))
    warm = time.perf_counter()
    bench.engine.warm_up()
    loaded["warm_up_s"] = round(time.perf_counter() - warm, 3)
    return bench, loaded


@contextlib.contextmanager
def _reference(bench: Bench, seconds: float) -> Iterator[Any]:
    from processor.engine.base import LocalAudio
    from processor.engine.indextts2 import write_harmonic_wav

    with tempfile.TemporaryDirectory(prefix="gpu-bench-") as tmp:
        ref = Path(tmp) / "reference.wav"
        write_harmonic_wav(ref, seconds=seconds, sample_rate=bench.sample_rate, seed=5)
        yield LocalAudio(path=ref, sha256=hashlib.sha256(ref.read_bytes()).hexdigest())


def _spec(args: argparse.Namespace, voice: Any, request_id: str) -> Any:
    from processor.engine.base import GenerationSettings, SynthesisSpec

    return SynthesisSpec(
        request_id=request_id,
        text="(fixed token ids; see benchmarks/gpu_engine.py)",
        voice=voice,
        max_text_tokens_per_segment=120,
        generation=GenerationSettings(num_beams=args.num_beams),
        seed=11,
    )


def _imported_distributions() -> list[str]:
    from importlib.metadata import distribution, packages_distributions

    mapping = packages_distributions()
    modules = list(sys.modules)
    found: set[str] = set()
    for top in {name.split(".")[0] for name in modules}:
        dists = mapping.get(top, [])
        if len(dists) <= 1:
            found.update(dists)
            continue
        # A namespace package (google.*): only the distributions whose sub-packages were imported.
        subs = tuple(f"{top}/{name.split('.')[1]}" for name in modules if name.startswith(top + "."))
        for dist in dists:
            if any(str(f).startswith(subs) for f in distribution(dist).files or ()):
                found.add(dist)
    return sorted({_norm(d) for d in found})


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def run_variant_child(args: argparse.Namespace) -> None:
    """Measure one variant; the result file is rewritten after every phase (a kill keeps them)."""
    variant = VARIANTS[args.child]
    out: Path = args.child_out
    result: dict[str, Any] = {"variant": variant.name, "engine": variant.engine, "options": variant.options}

    def save(phase: str) -> None:
        result["phase_done"] = phase
        result["peak_rss_mib"] = _rss_mib()
        out.write_text(json.dumps(result, indent=2))

    try:
        bench, loaded = _load(args, variant)
    except Unavailable as exc:
        result["unavailable"] = str(exc)
        save("unavailable")
        return
    result.update(loaded)
    save("load")
    import torch

    cuda = bench.cuda
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with _reference(bench, args.reference_seconds) as voice:
        spec = _spec(args, voice, "bench")
        bench.set_text(_fixed_segments(bench, args.text_tokens, 1, seed=2))
        bench.set_mel_tokens(args.tokens)
        result["first"] = _request(bench, spec)  # computes the reference conditioning (cache miss)
        save("first")
        steady = []
        for _ in range(args.runs):
            steady.append(_request(bench, spec))
            result["runs"] = steady
            save("steady")

        def median(key: str) -> float:
            return round(float(statistics.median(r["stages"].get(key, 0.0) for r in steady)), 4)

        if steady:
            result["steady"] = {
                "gpt_s": median("gpt"),
                "s2mel_s": median("s2mel"),
                "vocoder_s": median("vocoder"),
                "total_s": median("total"),
                "audio_s": statistics.median(r["audio_s"] for r in steady),
                "rtf": round(statistics.median(r["rtf"] for r in steady), 4),
                "gpt_ms_per_token": round(1000 * median("gpt") / max(1, args.tokens), 3),
            }
        if args.segments > 1:
            bench.set_text(_fixed_segments(bench, args.text_tokens, args.segments, seed=3))
            bench.set_mel_tokens(max(1, args.tokens // args.segments))
            result["latency"] = _request(bench, _spec(args, voice, "latency"))
            save("latency")
    if cuda:
        result["gpu"] = _gpu_mib(torch)
        result["peak_gpu_mib"] = result["gpu"]["peak_allocated_mib"]
    result["imported_distributions"] = _imported_distributions()
    save("done")


def run_stream_worker(args: argparse.Namespace) -> None:
    """Load, warm up, cache the reference, then run ``run N`` commands from stdin until ``quit``."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # library prints go to the log, not into the protocol

    def emit(kind: str, body: dict[str, Any]) -> None:
        proto.write(PROTOCOL + json.dumps({"kind": kind, **body}) + "\n")

    variant = VARIANTS[args.stream_worker]
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    bench, loaded = _load(args, variant)
    with _reference(bench, args.reference_seconds) as voice:
        spec = _spec(args, voice, "stream")
        bench.set_text(_fixed_segments(bench, args.text_tokens, 1, seed=2))
        bench.set_mel_tokens(args.tokens)
        first = _request(bench, spec)
        emit("ready", {"load": loaded, "first": first, "pid": os.getpid()})
        while True:
            words = sys.stdin.readline().split()
            if not words or words[0] == "quit":
                break
            if bench.cuda:
                torch.cuda.reset_peak_memory_stats()
            requests = [_request(bench, spec) for _ in range(int(words[1]))]
            body: dict[str, Any] = {"requests": requests, "peak_rss_mib": _rss_mib()}
            if bench.cuda:
                body["gpu"] = _gpu_mib(torch)
            emit("done", body)


# -- parent: plan, guards, streams, report ----------------------------------------------------------


class Clock:
    def __init__(self, budget: float | None) -> None:
        self.started = time.monotonic()
        self.budget = budget

    def left(self) -> float:
        if self.budget is None:
            return float("inf")
        return self.budget - (time.monotonic() - self.started)


def _child_cmd(args: argparse.Namespace, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "benchmarks.gpu_engine", *extra,
        "--device", args.device, "--tokens", str(args.tokens), "--text-tokens", str(args.text_tokens),
        "--warmup-tokens", str(args.warmup_tokens), "--runs", str(args.runs), "--segments", str(args.segments),
        "--num-beams", str(args.num_beams), "--reference-seconds", str(args.reference_seconds),
        "--size", args.size, "--model-dir", str(args.model_dir), "--model-dir25", str(args.model_dir25),
    ]  # fmt: skip


def _kill(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _tail(path: Path, lines: int = 6) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line[-300:] for line in text[-lines:])


def _guard(args: argparse.Namespace, clock: Clock, gpu_limit: float) -> float:
    limit = args.variant_timeout or (gpu_limit if args.device.startswith("cuda") else 3600.0)
    return float(min(limit, clock.left() - args.reserve))


def run_variant(
    args: argparse.Namespace, clock: Clock, variant: Variant, logs: Path, models: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    cuda = args.device.startswith("cuda")
    why = ENGINES[variant.engine].available()
    if why is not None:
        return {"variant": variant.name, "status": "unavailable", "reason": why}
    if variant.cuda_only and not cuda:
        return {"variant": variant.name, "status": "unavailable", "reason": "CUDA only"}
    missing = [m for m in variant.needs if importlib.util.find_spec(m) is None]
    if missing:
        return {"variant": variant.name, "status": "unavailable", "reason": f"not installed: {', '.join(missing)}"}
    guard = _guard(args, clock, variant.gpu_limit_s)
    if guard < args.min_variant_s:
        return {"variant": variant.name, "status": "skipped", "reason": f"budget: {clock.left():.0f}s left"}
    if variant.engine not in models:  # the model build counts against the budget like everything else
        models[variant.engine] = ensure_model(args, variant.engine)
        guard = _guard(args, clock, variant.gpu_limit_s)
    if "error" in models[variant.engine]:
        return {"variant": variant.name, "status": "failed", "reason": "model build failed (see models)"}
    if guard < args.min_variant_s:
        return {"variant": variant.name, "status": "skipped", "reason": f"budget: {clock.left():.0f}s left"}
    out = logs / f"{variant.name}.json"
    log = logs / f"{variant.name}.log"
    started = time.monotonic()
    with log.open("w") as err:
        proc = subprocess.Popen(
            _child_cmd(args, "--child", variant.name, "--child-out", str(out)),
            cwd=ROOT, stdout=err, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            code: int | None = proc.wait(timeout=guard)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            _kill(proc)
    result: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {"variant": variant.name}
    result["wall_s"] = round(time.monotonic() - started, 1)
    result["guard_s"] = round(guard, 1)
    if "unavailable" in result:
        result["status"], result["reason"] = "unavailable", result.pop("unavailable")
    elif code is None:
        result["status"] = "timed_out"
        result["reason"] = f"time guard {guard:.0f}s hit after phase {result.get('phase_done', 'none')}"
    elif code != 0 or result.get("phase_done") != "done":
        result["status"] = "failed"
        result["reason"] = f"exit {code}: {_tail(log)}"
    else:
        result["status"] = "ok"
    return result


class _Lines:
    """Protocol lines from a worker's stdout, read unbuffered so select() never misses one."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self.fd = proc.stdout.fileno()
        self.buffer = b""

    def message(self, deadline: float) -> dict[str, Any] | None:
        while True:
            while b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                text = line.decode(errors="replace")
                if text.startswith(PROTOCOL):
                    message: dict[str, Any] = json.loads(text[len(PROTOCOL) :])
                    return message
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            with selectors.DefaultSelector() as sel:
                sel.register(self.fd, selectors.EVENT_READ)
                if not sel.select(timeout=left):
                    return None
            chunk = os.read(self.fd, 65536)
            if not chunk:
                return None
            self.buffer += chunk


def _round_summary(n: int, done: list[dict[str, Any]]) -> dict[str, Any]:
    requests = [r for d in done for r in d["requests"]]
    start = min(r["started_at"] for r in requests)
    end = max(r["ended_at"] for r in requests)
    audio = sum(r["audio_s"] for r in requests)
    rtfs = sorted(r["rtf"] for r in requests)
    summary: dict[str, Any] = {
        "streams": n,
        "requests": len(requests),
        "wall_s": round(end - start, 3),
        "audio_s": round(audio, 2),
        "speech_s_per_wall_s": round(audio / (end - start), 3),
        "rtf_p50": round(statistics.median(rtfs), 4),
        "rtf_max": round(rtfs[-1], 4),
        "peak_rss_mib_per_process": max(d["peak_rss_mib"] for d in done),
    }
    if all("gpu" in d for d in done):
        summary["peak_gpu_mib_per_process"] = max(d["gpu"]["peak_allocated_mib"] for d in done)
        summary["device_used_mib"] = max(d["gpu"]["device_used_mib"] for d in done)
    return summary


def run_streams(
    args: argparse.Namespace, clock: Clock, logs: Path, models: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    counts = sorted({int(n) for n in args.streams.split(",")})
    variant = VARIANTS[args.streams_variant]
    report: dict[str, Any] = {"variant": variant.name, "requests_per_stream": args.stream_requests, "rounds": []}
    why = ENGINES[variant.engine].available()
    if why is not None:
        return {**report, "status": "unavailable", "reason": why}
    if _guard(args, clock, args.streams_limit) < args.min_variant_s:
        return {**report, "status": "skipped", "reason": f"budget: {clock.left():.0f}s left"}
    if variant.engine not in models:
        models[variant.engine] = ensure_model(args, variant.engine)
    if "error" in models[variant.engine]:
        return {**report, "status": "failed", "reason": "model build failed (see models)"}
    guard = _guard(args, clock, args.streams_limit)
    if guard < args.min_variant_s:
        return {**report, "status": "skipped", "reason": f"budget: {clock.left():.0f}s left"}
    deadline = time.monotonic() + guard
    workers: list[subprocess.Popen[bytes]] = []
    threads = max(1, (os.cpu_count() or 2) // max(counts))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    try:
        for i in range(max(counts)):
            log = (logs / f"stream-{i}.log").open("w")
            workers.append(
                subprocess.Popen(
                    _child_cmd(args, "--stream-worker", variant.name, "--threads", str(threads)),
                    cwd=ROOT,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    start_new_session=True,
                    env=env,
                )
            )
        loaded_at = time.monotonic()
        lines = [_Lines(w) for w in workers]
        ready = [reader.message(deadline) for reader in lines]
        report["load_all_s"] = round(time.monotonic() - loaded_at, 1)
        if any(r is None for r in ready):
            bad = [i for i, r in enumerate(ready) if r is None]
            report.update(status="failed", reason=f"workers {bad} not ready: {_tail(logs / f'stream-{bad[0]}.log')}")
            return report
        report["load"] = [r["load"] for r in ready if r is not None]
        last_wall = 0.0
        for n in counts:
            if last_wall and time.monotonic() + 2.5 * last_wall > deadline:
                report["rounds"].append({"streams": n, "status": "skipped", "reason": "time guard"})
                continue
            for w in workers[:n]:
                assert w.stdin is not None
                w.stdin.write(f"run {args.stream_requests}\n".encode())
                w.stdin.flush()
            began = time.monotonic()
            done = [reader.message(deadline) for reader in lines[:n]]
            last_wall = time.monotonic() - began
            if any(d is None for d in done):
                report["rounds"].append({"streams": n, "status": "failed", "reason": "worker died or time guard"})
                break
            report["rounds"].append({"status": "ok", **_round_summary(n, [d for d in done if d is not None])})
        report["status"] = "ok" if all(r["status"] == "ok" for r in report["rounds"]) else "partial"
        return report
    finally:
        for w in workers:
            with contextlib.suppress(OSError):
                if w.stdin is not None:
                    w.stdin.write(b"quit\n")
                    w.stdin.close()
        for w in workers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                w.wait(timeout=5)
            _kill(w)


def ensure_model(args: argparse.Namespace, engine: str) -> dict[str, Any]:
    """Build (or find complete) the engine's random model with the project's own builder."""
    kind = ENGINES[engine]
    target = kind.model_dir(args)
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", *kind.build(args.size), str(target)], cwd=ROOT, capture_output=True, text=True
    )
    seconds = round(time.perf_counter() - started, 1)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip()[-1500:]
        return {"engine": engine, "size": args.size, "dir": str(target), "error": tail, "ready_s": seconds}
    print(f"model {engine} ({args.size}) ready in {target} [{seconds}s]", flush=True)
    return {"engine": engine, "size": args.size, "dir": str(target), "ready_s": seconds}


def preflight() -> None:
    """Fail in seconds, not minutes, when the machine lacks a package the run needs."""
    probe = "import indextts.infer_v2, librosa, soundfile, omegaconf, devstack.tiny_model, processor.engine.indextts2"
    proc = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"preflight import failed (wheel set incomplete?):\n{proc.stderr.strip()[-2000:]}")


def _environment(device: str) -> dict[str, Any]:
    env: dict[str, Any] = {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "device_requested": device,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    probe = (
        "import json, torch, transformers, importlib.metadata as m; d = torch.cuda.is_available();"
        "print(json.dumps({'torch': torch.__version__, 'cuda': torch.version.cuda, 'gpu': "
        "torch.cuda.get_device_name() if d else None, 'gpu_count': torch.cuda.device_count(), "
        "'transformers': transformers.__version__, 'indextts2_inference': m.version('indextts2-inference')}))"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    if proc.returncode == 0:
        env.update(json.loads(proc.stdout.strip().splitlines()[-1]))
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False)
    env["commit"] = git.stdout.strip() if git.returncode == 0 else os.environ.get("BENCH_COMMIT")
    return env


def gpu_package_check(variants: list[dict[str, Any]]) -> dict[str, Any]:
    """Which imported distributions the GPU machine has neither in its image nor in the wheel set."""

    def names(path: Path) -> set[str]:
        lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
        return {_norm(re.split(r"[=<>\s]", line)[0]) for line in lines if line}

    present = names(ROOT / "benchmarks" / "gpu_image_packages.txt")
    carried = names(ROOT / "benchmarks" / "gpu_wheels.txt")
    imported = sorted({d for v in variants for d in v.get("imported_distributions", [])})
    here_only = {d: NOT_NEEDED_ON_GPU[d] for d in imported if d in NOT_NEEDED_ON_GPU}
    missing = [d for d in imported if d not in present | carried | set(here_only) | {"tts-processor"}]
    return {
        "imported": imported,
        "carried": sorted(carried & set(imported)),
        "imported_here_only": here_only,
        "missing_on_gpu": missing,
    }


def _fmt(value: Any, spec: str) -> str:
    return format(value, spec) if isinstance(value, int | float) else "-"


def table(report: dict[str, Any]) -> str:
    s = report["settings"]
    lines = [
        f"{report['environment'].get('gpu') or 'CPU'} | {s['size']} model | {s['tokens']} mel tokens "
        f"({s['tokens'] * SECONDS_PER_MEL_TOKEN:.1f} s) | {s['text_tokens']} text tokens | beams {s['num_beams']} "
        f"| reference {s['reference_seconds']} s | {report['when']}",
    ]
    head = (
        f"{'variant':<17} {'status':<11} {'load':>6} {'warm':>6} {'cond':>6} {'gpt':>7} {'s2mel':>7} "
        f"{'voc':>6} {'total':>7} {'audio':>6} {'RTF':>7} {'1st seg':>7} {'peak MiB':>9}"
    )
    lines += [head, "-" * len(head)]
    for r in report["variants"]:
        if r.get("status") != "ok" and "steady" not in r:
            lines.append(f"{r['variant']:<17} {r['status']:<11} {r.get('reason', '')[:100]}")
            continue
        st = r.get("steady", {})
        cond = r.get("first", {}).get("stages", {}).get("conditioning")
        peak = r.get("peak_gpu_mib", r.get("peak_rss_mib"))
        lat = r.get("latency", {}).get("first_segment_s")
        lines.append(
            f"{r['variant']:<17} {r['status']:<11} {_fmt(r.get('load_s'), '6.1f')} {_fmt(r.get('warm_up_s'), '6.1f')} "
            f"{_fmt(cond, '6.2f')} {_fmt(st.get('gpt_s'), '7.3f')} {_fmt(st.get('s2mel_s'), '7.3f')} "
            f"{_fmt(st.get('vocoder_s'), '6.3f')} {_fmt(st.get('total_s'), '7.3f')} {_fmt(st.get('audio_s'), '6.2f')} "
            f"{_fmt(st.get('rtf'), '7.3f')} {_fmt(lat, '7.2f')} {_fmt(peak, '9.0f')}"
        )
    streams = report.get("streams")
    if streams:
        lines.append("")
        lines.append(
            f"streams per card ({streams['variant']}, {streams['requests_per_stream']} requests each): "
            f"{streams.get('status')} {streams.get('reason', '')}"
        )
        head = (
            f"{'streams':>7} {'status':<8} {'wall s':>7} {'speech s/s':>10} {'RTF p50':>8} {'RTF max':>8} "
            f"{'peak MiB/proc':>13} {'device MiB':>10}"
        )
        lines += [head, "-" * len(head)]
        for r in streams.get("rounds", []):
            peak = r.get("peak_gpu_mib_per_process", r.get("peak_rss_mib_per_process"))
            lines.append(
                f"{r['streams']:>7} {r['status']:<8} {_fmt(r.get('wall_s'), '7.2f')} "
                f"{_fmt(r.get('speech_s_per_wall_s'), '10.3f')} {_fmt(r.get('rtf_p50'), '8.3f')} "
                f"{_fmt(r.get('rtf_max'), '8.3f')} {_fmt(peak, '13.0f')} {_fmt(r.get('device_used_mib'), '10.0f')}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--smoke", action="store_true", help="CPU, reduced tokens, fewer variants (see below)")
    parser.add_argument("--tokens", type=int, default=500, help="mel tokens per request (500 ~ 10 s of audio)")
    parser.add_argument("--text-tokens", type=int, default=60, help="text tokens per request (fixed ids)")
    parser.add_argument("--warmup-tokens", type=int, default=100, help="mel tokens of the warm-up request")
    parser.add_argument("--runs", type=int, default=2, help="steady (cached-voice) requests per variant")
    parser.add_argument("--segments", type=int, default=4, help="segments of the first-segment latency request")
    parser.add_argument("--num-beams", type=int, default=3, help="3 is the product default (IndexTTS2's)")
    parser.add_argument("--reference-seconds", type=float, default=10.0)
    parser.add_argument("--plan", default=None, help=f"comma list of parts in order; GPU default: {GPU_PLAN}")
    parser.add_argument("--streams", default="1,2,4,8", help="concurrent processes per round")
    parser.add_argument("--streams-variant", default=None, help="default fp16 on a GPU, fp32 on the CPU")
    parser.add_argument("--stream-requests", type=int, default=2, help="requests per stream per round")
    parser.add_argument("--streams-limit", type=float, default=200.0, help="time guard of the streams part (GPU)")
    parser.add_argument("--budget", type=float, default=None, help="seconds for the whole run (default: none)")
    parser.add_argument("--reserve", type=float, default=10.0, help="seconds kept back for writing the report")
    parser.add_argument("--min-variant-s", type=float, default=40.0, help="do not start a part with less left")
    parser.add_argument("--variant-timeout", type=float, default=None, help="override every part's time guard")
    parser.add_argument("--size", choices=("full", "tiny"), default="full")
    parser.add_argument("--model-dir", type=Path, default=None, help="IndexTTS2 model (built if absent)")
    parser.add_argument("--model-dir25", type=Path, default=None, help="IndexTTS-2.5 model (built if absent)")
    parser.add_argument("--out", type=Path, default=ROOT / "artifacts" / "bench" / "gpu_engine.json")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--stream-worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.model_dir is None:
        args.model_dir = ROOT / ".cache" / ("full-random-model" if args.size == "full" else "tiny-model")
    if args.model_dir25 is None:
        args.model_dir25 = args.model_dir.with_name(args.model_dir.name + "25")

    if args.child is not None:
        run_variant_child(args)
        return 0
    if args.stream_worker is not None:
        run_stream_worker(args)
        return 0

    if args.smoke:
        # Every part and code path, on the CPU, at a token count a CPU finishes in minutes.
        defaults = parser.parse_args([])
        for name, value in (
            ("device", "cpu"), ("tokens", 20), ("text_tokens", 12), ("warmup_tokens", 10), ("runs", 1),
            ("segments", 2), ("reference_seconds", 3.0), ("streams", "1"), ("stream_requests", 1),
        ):  # fmt: skip
            if getattr(args, name) == getattr(defaults, name):
                setattr(args, name, value)
    cuda = args.device.startswith("cuda")
    plan = [p.strip() for p in (args.plan or (GPU_PLAN if cuda else SMOKE_PLAN)).split(",") if p.strip()]
    for part in plan:
        if part != "streams" and not (part.startswith("variant:") and part[8:] in VARIANTS):
            parser.error(f"unknown plan part {part!r}; parts: streams, variant:NAME with NAME in {sorted(VARIANTS)}")
    args.streams_variant = args.streams_variant or ("fp16" if cuda else "fp32")

    clock = Clock(args.budget)
    preflight()
    report: dict[str, Any] = {
        "benchmark": "gpu_engine",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, "-m", "benchmarks.gpu_engine", *(argv or sys.argv[1:])]),
        "environment": _environment(args.device),
        "settings": {
            k: getattr(args, k)
            for k in (
                "device",
                "size",
                "tokens",
                "text_tokens",
                "warmup_tokens",
                "runs",
                "segments",
                "num_beams",
                "reference_seconds",
                "streams",
                "streams_variant",
                "stream_requests",
                "budget",
            )
        },
        "plan": plan,
        "models": {},
        "variants": [],
    }
    models: dict[str, dict[str, Any]] = report["models"]
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def write() -> str:
        report["elapsed_s"] = round(time.monotonic() - clock.started, 1)
        text = table(report)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        args.out.with_suffix(".txt").write_text(text + "\n")
        return text

    with tempfile.TemporaryDirectory(prefix="gpu-bench-logs-") as tmp:
        logs = Path(tmp)
        for part in plan:
            print(f"== {part} ({clock.left():.0f}s of budget left)", flush=True)
            if part == "streams":
                report["streams"] = run_streams(args, clock, logs, models)
                shown = {k: v for k, v in report["streams"].items() if k != "load"}
            else:
                result = run_variant(args, clock, VARIANTS[part[8:]], logs, models)
                report["variants"].append(result)
                shown = {k: result.get(k) for k in ("status", "reason", "steady", "latency", "peak_gpu_mib")}
            print(json.dumps(shown), flush=True)
            write()
    report["environment"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report["gpu_packages"] = gpu_package_check(report["variants"])
    if report["gpu_packages"]["missing_on_gpu"]:
        print(f"WARNING: imported but neither on the GPU image nor carried: {report['gpu_packages']['missing_on_gpu']}")
    print(write())
    print(f"wrote {args.out} and {args.out.with_suffix('.txt')}")
    ran = [v for v in report["variants"] if v["status"] not in ("unavailable", "skipped")]
    failed = [v["variant"] for v in ran if v["status"] != "ok"]
    if report.get("streams", {}).get("status") not in (None, "ok", "skipped", "unavailable"):
        failed.append("streams")
    if args.smoke and report["gpu_packages"]["missing_on_gpu"]:
        failed.append("gpu_packages")
    return 1 if failed or not ran else 0


if __name__ == "__main__":
    sys.exit(main())
