"""Test clips: speech-like harmonic audio (devstack.clips), plus bytes that are not audio."""

from __future__ import annotations

from devstack.clips import voice_clip

__all__ = ["NOT_AUDIO", "voice_clip"]

NOT_AUDIO = b"%PDF-1.4 this is not audio at all\n" * 40
