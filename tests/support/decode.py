"""Decode stored audio with FFmpeg (PyAV), independently of the libsndfile/LAME/libopus that encoded it."""

from __future__ import annotations

import io
from dataclasses import dataclass

import av
import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class Decoded:
    container: str  # FFmpeg's demuxer name: wav, flac, ogg, mp3
    codec: str  # pcm_s16le, flac, opus, mp3float
    sample_rate: int  # the rate the codec says it carries (for Opus: the input rate in OpusHead)
    decode_rate: int  # the rate FFmpeg decodes at (Opus always decodes at 48 kHz)
    channels: int
    samples: npt.NDArray[np.float32]  # (frames, channels), full scale 1.0

    @property
    def duration_seconds(self) -> float:
        return self.samples.shape[0] / self.decode_rate


def decode(data: bytes) -> Decoded:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        ctx = stream.codec_context
        channels = ctx.channels
        chunks = []
        for frame in container.decode(stream):
            arr = frame.to_ndarray()
            arr = arr.T if frame.format.is_planar else arr.reshape(-1, channels)
            if arr.dtype.kind == "i":
                arr = arr.astype(np.float32) / float(np.iinfo(arr.dtype).max + 1)
            chunks.append(arr.astype(np.float32))
        rate = stream.rate
        coded_rate = rate
        if ctx.name == "opus" and ctx.extradata and ctx.extradata[:8] == b"OpusHead":
            coded_rate = int.from_bytes(ctx.extradata[12:16], "little")
        return Decoded(container.format.name.split(",")[0], ctx.name, coded_rate, rate, channels,
                       np.concatenate(chunks) if chunks else np.zeros((0, channels), np.float32))
