"""Reference clips made locally (no downloads): speech-like harmonic audio."""

from __future__ import annotations

from processor.audio import encode_wav, speech_like_pcm


def voice_clip(seconds: float = 1.5, f0: float = 140.0, sample_rate: int = 22050, seed: int = 0) -> bytes:
    """A voiced, vowel-like WAV clip (``processor.audio.speech_like_pcm``)."""
    return encode_wav(speech_like_pcm(seconds, sample_rate=sample_rate, f0=f0, seed=seed), sample_rate).data
