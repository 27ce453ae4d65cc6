"""A stand-in engine for the pipeline benchmark: holds the "GPU" for a fixed time per request.

It SLEEPS for ``hold_seconds`` (it does not burn CPU): a real GPU job leaves the host CPU mostly
free, and sleeping releases the GIL the way a CUDA synchronisation does, so what the benchmark
measures is the pipeline's own cost around the engine, not contention with a busy stand-in.

The audio it returns is real PCM of a fixed real-time factor (``audio_seconds = hold / rtf``, at
22.05 kHz like IndexTTS2), rendered once and reused, so WAV encoding and upload handle realistic
sizes without the stand-in spending CPU per request.
"""

from __future__ import annotations

import os
import time

import numpy as np
import numpy.typing as npt

from processor.engine.base import ModelInfo, ProgressCallback, Segment, SynthesisSpec, Synthesized

SAMPLE_RATE = 22050


def _render(seconds: float, sample_rate: int) -> npt.NDArray[np.int16]:
    rng = np.random.default_rng(0)
    n = max(1, int(seconds * sample_rate))
    t = np.arange(n, dtype=np.float32) / sample_rate
    sig = 0.4 * np.sin(2 * np.pi * 180.0 * t) + 0.05 * rng.standard_normal(n).astype(np.float32)
    return (np.clip(sig, -1.0, 1.0) * 32767).astype(np.int16)


class StandInEngine:
    """Implements ``processor.engine.base.Engine``; one instance per benchmark process."""

    def __init__(self, hold_seconds: float, *, rtf: float = 0.1, sample_rate: int = SAMPLE_RATE) -> None:
        if hold_seconds < 0 or rtf <= 0:
            raise ValueError("hold_seconds must be >= 0 and rtf > 0")
        self.hold_seconds = hold_seconds
        self.rtf = rtf
        self.sample_rate = sample_rate
        self.audio_seconds = max(0.1, hold_seconds / rtf)
        self._pcm = _render(self.audio_seconds, sample_rate)
        self.calls = 0
        self.held: list[float] = []  # measured hold time per call (sleep overshoot shows here)
        self._info = ModelInfo("StandIn", f"sleep-{hold_seconds * 1000:.0f}ms", "none", "n/a",
                               {"pid": str(os.getpid()), "mode": "sleep", "rtf": str(rtf)}, 0.0,
                               sample_rate=sample_rate)

    @property
    def info(self) -> ModelInfo:
        return self._info

    def warm_up(self) -> None:
        pass

    def segment_text(self, text: str, max_text_tokens_per_segment: int) -> list[str]:
        return [text]

    def synthesize(self, spec: SynthesisSpec, on_progress: ProgressCallback | None = None) -> Synthesized:
        self.calls += 1
        t0 = time.perf_counter()
        # One absolute deadline: a wake-up that comes early sleeps again; overshoot is the OS's.
        deadline = t0 + self.hold_seconds
        while (left := deadline - time.perf_counter()) > 0:
            time.sleep(left)
        self.held.append(time.perf_counter() - t0)
        if on_progress is not None:
            # One segment, like a short real request: one progress event, its chunk the whole PCM.
            on_progress(Segment(1, 1, spec.text, 0, len(self._pcm)), self._pcm)
        return Synthesized(pcm=self._pcm, sample_rate=self.sample_rate, segments=1,
                           stage_seconds={"hold": self.held[-1]},
                           spans=(Segment(1, 1, spec.text, 0, len(self._pcm)),))
