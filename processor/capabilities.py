"""Capability check: refuse what the serving engine cannot do, right after request validation.

Runs on the intake thread, before any reference download or GPU time: a request for emotion text on
IndexTTS-2.5, or for a speed other than 1.0 or a language other than zh/en on IndexTTS2, gets an
``unsupported_capability`` error result naming the engine and what it does offer.
"""

from __future__ import annotations

from processor.engine.base import ModelInfo
from processor.errors import ErrorCode, TtsError
from processor.request import TtsRequest

ENGINE_NAMES = {"indextts2": "IndexTTS2", "indextts2.5": "IndexTTS-2.5"}


def check_capabilities(req: TtsRequest, info: ModelInfo) -> None:
    """Raise ``TtsError(UNSUPPORTED_CAPABILITY)`` when ``req`` asks ``info``'s engine for something it lacks."""
    caps = info.capabilities
    name = ENGINE_NAMES.get(info.engine, info.engine or info.model_type)
    problems: list[str] = []
    if req.emotion_mode not in caps.emotion_modes:
        problems.append(f"emotion mode {req.emotion_mode!r} (it offers {', '.join(caps.emotion_modes)})")
    if req.speed != 1.0 and not caps.speed_min <= req.speed <= caps.speed_max:
        offered = "no speed control" if caps.speed_min == caps.speed_max == 1.0 else (
            f"speed {caps.speed_min}-{caps.speed_max}")
        problems.append(f"speed {req.speed} ({offered})")
    if req.language is not None and req.language not in caps.languages:
        problems.append(f"language {req.language!r} (it speaks {', '.join(caps.languages)})")
    if problems:
        raise TtsError(ErrorCode.UNSUPPORTED_CAPABILITY, f"{name} cannot do: " + "; ".join(problems))
