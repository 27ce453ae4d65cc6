"""A deterministic stand-in engine for pipeline tests (NOT the product engine, never used in production).

It renders a tone whose pitch depends on the text segment and the voice's content hash, so results
are reproducible and distinguishable per request. ``TONE_ENGINE_SECONDS`` makes each request hold the
"GPU" for that long (sleeping between segments), to exercise long jobs, rebalances and shutdown.
``TONE_ENGINE_LOAD_SECONDS`` makes building the engine (the "model load") take that long, so the
window where a worker is live but not ready can be observed.
``TONE_ENGINE_VARY=1`` makes every call's output unique (per process and per call), like a GPU whose
output is not bitwise reproducible: a redo then renders other bytes, so a stored WAV overwritten by
another attempt shows as a sha256 mismatch.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time

import numpy as np

from processor.config import EngineSettings
from processor.engine.base import ModelInfo, ProgressCallback, Segment, SynthesisSpec, Synthesized
from processor.errors import ErrorCode, TtsError

SAMPLE_RATE = 16000


class ToneEngine:
    loads = 0
    _lock = threading.Lock()

    def __init__(self, settings: EngineSettings | None = None) -> None:
        with ToneEngine._lock:
            ToneEngine.loads += 1
        self.seconds = float(os.environ.get("TONE_ENGINE_SECONDS", "0"))
        load_seconds = float(os.environ.get("TONE_ENGINE_LOAD_SECONDS", "0"))
        if load_seconds:
            time.sleep(load_seconds)
        self.calls = 0
        self.vary = os.environ.get("TONE_ENGINE_VARY", "") == "1"
        self._info = ModelInfo("ToneEngine", "test-1", "cpu", "fp32", {"pid": str(os.getpid())}, load_seconds,
                               sample_rate=SAMPLE_RATE)

    @property
    def info(self) -> ModelInfo:
        return self._info

    def warm_up(self) -> None:
        self._render("warm up", 0, 1)

    def segment_text(self, text: str, max_text_tokens_per_segment: int) -> list[str]:
        words = text.split() or [text]
        per = max(1, max_text_tokens_per_segment // 4)
        return [" ".join(words[i:i + per]) for i in range(0, len(words), per)]

    def synthesize(self, spec: SynthesisSpec, on_progress: ProgressCallback | None = None) -> Synthesized:
        self.calls += 1
        if "ENGINE_FAIL" in spec.text:
            raise TtsError(ErrorCode.ENGINE_ERROR, "tone engine was asked to fail")
        segments = self.segment_text(spec.text, spec.max_text_tokens_per_segment)
        silence_ms = 200 if spec.interval_silence_ms is None else spec.interval_silence_ms
        gap = np.zeros(SAMPLE_RATE * silence_ms // 1000, dtype=np.int16)
        parts = []
        spans = []
        position = 0
        for i, seg in enumerate(segments, start=1):
            if self.seconds:
                time.sleep(self.seconds / len(segments))
            speech = self._render(seg + spec.voice.sha256, spec.seed, len(seg))
            if self.vary and i == 1:  # an inaudible first-sample mark unique to this process and this call
                mark = hashlib.sha256(f"{os.getpid()}:{time.time_ns()}:{self.calls}".encode()).digest()
                speech[0] = int.from_bytes(mark[:2], "big") % 4096
            # Like the real engines: each chunk is the segment's speech plus the pause after it.
            chunk = np.concatenate((speech, gap)) if i < len(segments) else speech
            span = Segment(i, len(segments), seg, position, position + len(speech))
            position += len(chunk)
            parts.append(chunk)
            spans.append(span)
            if on_progress is not None:
                on_progress(span, chunk)
        pcm = np.concatenate(parts)
        return Synthesized(pcm=pcm, sample_rate=SAMPLE_RATE, segments=len(segments),
                           stage_seconds={"gpt": 0.0, "s2mel": 0.0, "vocoder": 0.0}, spans=tuple(spans))

    @staticmethod
    def _render(key: str, seed: int, chars: int) -> np.ndarray:
        h = int.from_bytes(hashlib.sha256(f"{key}:{seed}".encode()).digest()[:4], "big")
        freq = 200 + h % 600
        n = int(SAMPLE_RATE * min(2.0, 0.1 + 0.02 * chars))
        t = np.arange(n, dtype=np.float32) / SAMPLE_RATE
        return (np.sin(2 * np.pi * freq * t) * 8000).astype(np.int16)


def tone_engine(settings: EngineSettings) -> ToneEngine:
    return ToneEngine(settings)
