"""WAV encoding in memory: 16-bit PCM mono at the engine's sample rate.

torchaudio >= 2.9 needs torchcodec + FFmpeg to save, so we write the RIFF container with the
standard library; the PCM bytes are written once, without intermediate copies.
"""

from __future__ import annotations

import hashlib
import io
import wave
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class EncodedAudio:
    data: bytes
    sha256: str
    sample_rate: int
    duration_seconds: float

    @property
    def size(self) -> int:
        return len(self.data)


def encode_wav(pcm: npt.NDArray[np.int16], sample_rate: int) -> EncodedAudio:
    if pcm.ndim != 1 or pcm.dtype != np.int16:
        raise ValueError("expected mono int16 PCM")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(np.ascontiguousarray(pcm, dtype="<i2").tobytes())
    data = buf.getvalue()
    return EncodedAudio(data, hashlib.sha256(data).hexdigest(), sample_rate, len(pcm) / sample_rate)


def speech_like_pcm(
    seconds: float, *, sample_rate: int = 22050, f0: float = 140.0, seed: int = 0
) -> npt.NDArray[np.int16]:
    """Voiced harmonics of ``f0`` with vibrato, a syllable-rate envelope and breath noise.

    Passes the reference-audio checks and gives a speaker encoder something voice-like, with no
    download: the engine's warm-up, the demo's preset, tests and benchmarks all use it.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    phase = 2 * np.pi * np.cumsum(f0 * (1.0 + 0.05 * np.sin(2 * np.pi * 5.0 * t))) / sample_rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = 0.5 * (1.0 - np.cos(2 * np.pi * 4.0 * t)) ** 2
    signal = 0.25 * voiced * envelope + 0.01 * rng.standard_normal(t.size)
    return (np.clip(signal / max(1e-9, float(np.abs(signal).max())) * 0.8, -1, 1) * 32767).astype(np.int16)
