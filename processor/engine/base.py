"""The engine contract: what the pipeline asks of a synthesizer, independent of IndexTTS2.

An engine is loaded once per process and then called from a single GPU thread, one request at a
time. Reference audio arrives as local files (already downloaded, size-checked and cached by
content hash), so an engine never talks to S3 or Kafka.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

# IndexTTS2's emotion vector order; the schema documents the same order.
EMOTION_NAMES: tuple[str, ...] = (
    "happy",
    "angry",
    "sad",
    "afraid",
    "disgusted",
    "melancholic",
    "surprised",
    "calm",
)


@dataclass(frozen=True)
class LocalAudio:
    """A reference clip on local disk; ``sha256`` is the content hash used as cache key."""

    path: Path
    sha256: str


@dataclass(frozen=True)
class Emotion:
    """One of IndexTTS2's four emotion-control modes.

    - ``same_as_voice``: the speaker reference also drives emotion.
    - ``reference``: a second clip (``audio``) blended in with strength ``alpha``.
    - ``vector``: eight weights in ``EMOTION_NAMES`` order, scaled by ``alpha``.
    - ``text``: the model's own emotion classifier reads ``text`` (or the spoken text if empty).
    """

    mode: Literal["same_as_voice", "reference", "vector", "text"] = "same_as_voice"
    alpha: float = 0.65
    audio: LocalAudio | None = None
    vector: tuple[float, ...] | None = None
    text: str | None = None


@dataclass(frozen=True)
class GenerationSettings:
    """Optional sampling overrides; ``None`` keeps the model's own default."""

    top_p: float | None = None
    top_k: int | None = None
    temperature: float | None = None
    num_beams: int | None = None
    repetition_penalty: float | None = None
    max_mel_tokens: int | None = None

    def overrides(self) -> dict[str, float | int]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class SynthesisSpec:
    request_id: str
    text: str
    voice: LocalAudio
    emotion: Emotion = field(default_factory=Emotion)
    use_random: bool = False
    max_text_tokens_per_segment: int = 120
    interval_silence_ms: int | None = None
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    # Seeds the RNG so a re-processed request renders the same bytes to the same S3 key.
    seed: int = 0


@dataclass(frozen=True)
class Synthesized:
    """Mono 16-bit PCM at the engine's sample rate, plus what it cost."""

    pcm: npt.NDArray[np.int16]
    sample_rate: int
    segments: int
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def duration_seconds(self) -> float:
        return float(len(self.pcm)) / float(self.sample_rate)


@dataclass(frozen=True)
class ModelInfo:
    model_type: str
    model_version: str
    device: str
    precision: str
    flags: dict[str, str] = field(default_factory=dict)
    load_seconds: float = 0.0


# Called after each finished segment with (segment_index starting at 1, segment_count). It may raise
# (e.g. TtsError(TIMEOUT) or a cancellation) to stop the job between segments.
ProgressCallback = Callable[[int, int], None]


class Engine(Protocol):
    @property
    def info(self) -> ModelInfo: ...

    def warm_up(self) -> None:
        """Run one real synthesis so the first request pays no compile/cache cost."""

    def segment_text(self, text: str, max_text_tokens_per_segment: int) -> list[str]:
        """How the engine will split ``text`` into segments (for progress and previews)."""

    def synthesize(self, spec: SynthesisSpec, on_progress: ProgressCallback | None = None) -> Synthesized:
        """Render ``spec``; raises ``TtsError`` with a stable code on failure, never returns junk."""
