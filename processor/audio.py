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
