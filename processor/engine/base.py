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
    # Speaking rate: < 1 is faster (IndexTTS-2.5's duration factor); engines without speed control take 1.0 only.
    speed: float = 1.0
    # Text language (ISO 639-1, e.g. "en"); None lets the engine detect it or use its configured default.
    language: str | None = None
    # Seeds the RNG so a re-processed request renders the same bytes to the same S3 key.
    seed: int = 0


@dataclass(frozen=True)
class Segment:
    """One synthesized text segment and where its speech lies in the final PCM."""

    index: int  # 1-based, like the progress events
    count: int
    text: str  # the normalized text the engine actually synthesized
    start_sample: int  # where this segment's speech starts in Synthesized.pcm
    end_sample: int  # exclusive; the silence between segments lies outside [start, end)


@dataclass(frozen=True)
class Synthesized:
    """Mono 16-bit PCM at the engine's sample rate, plus what it cost."""

    pcm: npt.NDArray[np.int16]
    sample_rate: int
    segments: int
    stage_seconds: dict[str, float] = field(default_factory=dict)
    spans: tuple[Segment, ...] = ()  # one per segment, in order

    @property
    def duration_seconds(self) -> float:
        return float(len(self.pcm)) / float(self.sample_rate)


@dataclass(frozen=True)
class Capabilities:
    """What an engine can be asked for; requests outside it are refused before any synthesis.

    ``languages``: text languages (ISO 639-1) the engine's front end and model handle.
    ``detects_language``: whether a request without ``language`` is fine (the engine, or the
    adapter, works it out from the text). ``emotion_modes``: the ``Emotion.mode`` values it
    supports. ``speed_min``/``speed_max``: the accepted ``speed`` range (1.0 only: no speed
    control). ``streaming``: progress callbacks come per segment with that segment's PCM.
    """

    languages: tuple[str, ...] = ("zh", "en")
    detects_language: bool = True
    emotion_modes: tuple[str, ...] = ("same_as_voice", "reference", "vector", "text")
    speed_min: float = 1.0
    speed_max: float = 1.0
    streaming: bool = True

    def as_dict(self) -> dict[str, object]:
        return {
            "languages": list(self.languages),
            "detects_language": self.detects_language,
            "emotion_modes": list(self.emotion_modes),
            "speed_min": self.speed_min,
            "speed_max": self.speed_max,
            "streaming": self.streaming,
        }


@dataclass(frozen=True)
class ModelInfo:
    model_type: str
    model_version: str
    device: str
    precision: str
    flags: dict[str, str] = field(default_factory=dict)
    load_seconds: float = 0.0
    engine: str = "indextts2"  # the model family: "indextts2" | "indextts2.5"
    backend: str = "sdpa"  # the GPT's attention backend in effect
    capabilities: Capabilities = field(default_factory=Capabilities)
    sample_rate: int = 0  # of Synthesized.pcm; 0 when unknown


# Called after each finished segment with that Segment and a chunk of the final PCM: the chunks tile
# Synthesized.pcm exactly (chunk i runs from the end of chunk i-1 to the end of segment i's speech
# plus the silence that follows it; the last has none), so concatenating them gives the final PCM.
# It may raise (e.g. TtsError(TIMEOUT) or a cancellation) to stop the job between segments.
ProgressCallback = Callable[[Segment, npt.NDArray[np.int16]], None]


class Engine(Protocol):
    @property
    def info(self) -> ModelInfo: ...

    def warm_up(self) -> None:
        """Run one real synthesis so the first request pays no compile/cache cost."""

    def segment_text(self, text: str, max_text_tokens_per_segment: int) -> list[str]:
        """How the engine will split ``text`` into segments (for progress and previews)."""

    def synthesize(self, spec: SynthesisSpec, on_progress: ProgressCallback | None = None) -> Synthesized:
        """Render ``spec``; raises ``TtsError`` with a stable code on failure, never returns junk."""
