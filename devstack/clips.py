"""Reference clips made locally (no downloads): speech-like harmonic audio, written with the stdlib."""

from __future__ import annotations

import io
import wave

import numpy as np


def voice_clip(seconds: float = 1.5, f0: float = 140.0, sample_rate: int = 22050, seed: int = 0) -> bytes:
    """A voiced, vowel-like clip: harmonics of f0 with a slow vibrato and a syllable envelope."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    pitch = f0 * (1 + 0.03 * np.sin(2 * np.pi * 5 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
    sig = sum((0.6 / k) * np.sin(k * phase) for k in range(1, 12))
    env = 0.55 + 0.45 * np.sin(2 * np.pi * 3 * t) ** 2
    sig = sig * env + 0.01 * rng.standard_normal(len(t))
    pcm = (sig / np.max(np.abs(sig)) * 20000).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()
