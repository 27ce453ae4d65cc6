"""Test clips: speech-like harmonic audio (devstack.clips), plus bytes that are not audio."""

from __future__ import annotations

import functools

from devstack import clips

__all__ = ["NOT_AUDIO", "voice_clip"]

NOT_AUDIO = b"%PDF-1.4 this is not audio at all\n" * 40


@functools.cache
def voice_clip(seconds: float = 1.5, f0: float = 140.0, sample_rate: int = 22050, seed: int = 0) -> bytes:
    """``devstack.clips.voice_clip``, made once per set of arguments: it is deterministic, and every
    test rig asks for the same one."""
    return clips.voice_clip(seconds, f0, sample_rate, seed)
