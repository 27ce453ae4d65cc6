"""Synthesis engines behind one interface (`Engine`); IndexTTS2 is the product engine."""

from processor.engine.base import (
    EMOTION_NAMES,
    Emotion,
    Engine,
    GenerationSettings,
    ModelInfo,
    ProgressCallback,
    SynthesisSpec,
    Synthesized,
)

__all__ = [
    "EMOTION_NAMES",
    "Emotion",
    "Engine",
    "GenerationSettings",
    "ModelInfo",
    "ProgressCallback",
    "SynthesisSpec",
    "Synthesized",
]
