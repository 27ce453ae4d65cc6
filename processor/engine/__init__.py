"""Synthesis engines behind one interface (`Engine`); IndexTTS2 is the product engine."""

from processor.engine.base import (
    EMOTION_NAMES,
    Capabilities,
    Emotion,
    Engine,
    GenerationSettings,
    ModelInfo,
    ProgressCallback,
    Segment,
    SynthesisSpec,
    Synthesized,
)

__all__ = [
    "EMOTION_NAMES",
    "Capabilities",
    "Emotion",
    "Engine",
    "GenerationSettings",
    "ModelInfo",
    "ProgressCallback",
    "Segment",
    "SynthesisSpec",
    "Synthesized",
]
