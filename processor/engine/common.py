"""What the IndexTTS2 and IndexTTS-2.5 adapters share: request checks, stage timing, error mapping.

Only the parts that are the same for both engines live here; each adapter keeps its own model
subclass, text preparation and engine-specific generation knobs.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import re
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from processor.engine.base import EMOTION_NAMES, GenerationSettings, LocalAudio, Segment, Synthesized
from processor.errors import ErrorCode, TtsError

# infer_v2's own defaults; applied explicitly so they can be validated and reported.
UPSTREAM_MAX_MEL_TOKENS = 1500
DEFAULT_INTERVAL_SILENCE_MS = 200
# infer_v2 cuts references to 15 s; shorter than this carries too little voice to condition on.
MIN_REFERENCE_SECONDS = 0.25
SILENT_PEAK = 1e-4  # ~ -80 dBFS
DEVICE_RE = re.compile(r"^(auto|cpu|mps|xpu|cuda(:\d+)?)$")


class StageClock:
    """Attributes wall time to the stage the model is in; hooks switch stages.

    On CUDA each switch synchronises, otherwise asynchronous kernels would be billed to whichever
    stage happens to wait for them.
    """

    def __init__(self, sync: Callable[[], None]) -> None:
        self._sync = sync
        self.seconds: dict[str, float] = {}
        self._stage = "other"
        self._since = time.perf_counter()

    def reset(self) -> None:
        self._sync()
        self.seconds = {}
        self._stage = "other"
        self._since = time.perf_counter()

    def switch(self, stage: str) -> str:
        self._sync()
        now = time.perf_counter()
        self.seconds[self._stage] = self.seconds.get(self._stage, 0.0) + now - self._since
        previous, self._stage, self._since = self._stage, stage, now
        return previous

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        previous = self.switch(name)
        try:
            yield
        finally:
            self.switch(previous)


def timed(clock: StageClock, stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` wrapped to switch ``clock`` to ``stage`` when it is called."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        clock.switch(stage)
        return fn(*args, **kwargs)

    return wrapper


def short(exc: BaseException, limit: int = 300) -> str:
    """The exception's message on one line, cut to ``limit`` characters."""
    text = str(exc).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is an out-of-memory failure (torch's own, or a backend's RuntimeError)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "cublas_status_alloc_failed" in text or "failed to allocate" in text
    )


def finite_number(value: float, name: str) -> float:
    """``value`` as a float; ``INVALID_REQUEST`` when it is NaN or infinite."""
    if not math.isfinite(value):
        raise TtsError(ErrorCode.INVALID_REQUEST, f"{name} must be a finite number")
    return float(value)


def sampling_kwargs(settings: GenerationSettings, max_mel_tokens: int) -> dict[str, Any]:
    """Checked sampling settings as ``infer_generator`` keywords (``max_mel_tokens`` always set).

    ``max_mel_tokens`` is the model's limit; a request without one gets upstream's default, capped there.
    """
    kwargs: dict[str, Any] = {}
    if settings.top_p is not None:
        top_p = finite_number(settings.top_p, "top_p")
        if not 0.0 < top_p <= 1.0:
            raise TtsError(ErrorCode.INVALID_REQUEST, "top_p must be within (0, 1]")
        kwargs["top_p"] = top_p
    if settings.top_k is not None:
        if settings.top_k < 0:
            raise TtsError(ErrorCode.INVALID_REQUEST, "top_k must be >= 0")
        kwargs["top_k"] = int(settings.top_k)
    if settings.temperature is not None:
        temperature = finite_number(settings.temperature, "temperature")
        if temperature <= 0.0:
            raise TtsError(ErrorCode.INVALID_REQUEST, "temperature must be > 0")
        kwargs["temperature"] = temperature
    if settings.num_beams is not None:
        if settings.num_beams < 1:
            raise TtsError(ErrorCode.INVALID_REQUEST, "num_beams must be >= 1")
        kwargs["num_beams"] = int(settings.num_beams)
    if settings.repetition_penalty is not None:
        penalty = finite_number(settings.repetition_penalty, "repetition_penalty")
        if penalty <= 0.0:
            raise TtsError(ErrorCode.INVALID_REQUEST, "repetition_penalty must be > 0")
        kwargs["repetition_penalty"] = penalty
    max_mel = settings.max_mel_tokens
    if max_mel is None:
        max_mel = min(UPSTREAM_MAX_MEL_TOKENS, max_mel_tokens)
    if not 1 <= max_mel <= max_mel_tokens:
        raise TtsError(ErrorCode.INVALID_REQUEST, f"max_mel_tokens must be within 1..{max_mel_tokens}")
    kwargs["max_mel_tokens"] = int(max_mel)
    return kwargs


def emotion_alpha(alpha: float) -> float:
    """The checked emotion strength, within [0, 1]."""
    value = finite_number(alpha, "emotion alpha")
    if not 0.0 <= value <= 1.0:
        raise TtsError(ErrorCode.INVALID_REQUEST, "emotion alpha must be within [0, 1]")
    return value


def emotion_vector(values: tuple[float, ...] | None) -> list[float]:
    """The checked emotion vector: one finite, non-negative weight per ``EMOTION_NAMES`` entry."""
    vector = list(values or ())
    if len(vector) != len(EMOTION_NAMES):
        raise TtsError(ErrorCode.INVALID_REQUEST, f"emotion vector needs {len(EMOTION_NAMES)} values")
    for name, value in zip(EMOTION_NAMES, vector, strict=True):
        if not math.isfinite(value) or value < 0.0:
            raise TtsError(ErrorCode.INVALID_REQUEST, f"emotion weight {name} must be finite and >= 0")
    return vector


def interval_silence_ms(value: int | None) -> int:
    """The pause between segments: upstream's default when unset, never negative."""
    silence_ms = DEFAULT_INTERVAL_SILENCE_MS if value is None else value
    if silence_ms < 0:
        raise TtsError(ErrorCode.INVALID_REQUEST, "interval_silence_ms must be >= 0")
    return silence_ms


def require_file(audio: LocalAudio) -> None:
    """A downloaded reference clip must still be there; vanishing is a local fault, worth a retry."""
    if not Path(audio.path).is_file():
        raise TtsError(ErrorCode.ENGINE_ERROR, f"reference file missing: {Path(audio.path).name}", retriable=True)


def checked_reference(load: Callable[[], tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, int]:
    """Run the model's reference loader; undecodable, too short, NaN/Inf or silent clips are
    ``INVALID_REFERENCE_AUDIO``."""
    try:
        audio, rate = load()
    except Exception as exc:  # decoder errors vary by backend (soundfile, audioread, ...)
        raise TtsError(
            ErrorCode.INVALID_REFERENCE_AUDIO,
            f"cannot decode reference audio: {type(exc).__name__}: {short(exc)}",
        ) from exc
    samples = int(audio.shape[-1])
    if samples < MIN_REFERENCE_SECONDS * rate:
        raise TtsError(
            ErrorCode.INVALID_REFERENCE_AUDIO,
            f"reference audio too short: {samples / rate:.3f}s < {MIN_REFERENCE_SECONDS}s",
        )
    if not bool(torch.isfinite(audio).all()):
        raise TtsError(ErrorCode.INVALID_REFERENCE_AUDIO, "reference audio contains NaN/Inf samples")
    if float(audio.abs().max()) < SILENT_PEAK:
        raise TtsError(ErrorCode.INVALID_REFERENCE_AUDIO, "reference audio is silent")
    return audio, int(rate)


def segment_pcm(wav: torch.Tensor, index: int, *, scale: float | None = None) -> npt.NDArray[np.int16]:
    """One generated segment as int16 PCM; empty or NaN/Inf output is ``ENGINE_ERROR``.

    ``scale`` multiplies float audio in [-1, 1] first; without it ``wav`` is already int16-scaled.
    """
    if wav.numel() == 0:
        raise TtsError(ErrorCode.ENGINE_ERROR, f"segment {index} is empty")
    if not bool(torch.isfinite(wav).all()):
        raise TtsError(ErrorCode.ENGINE_ERROR, f"segment {index} contains NaN/Inf samples")
    samples = wav.float() if scale is None else wav.float() * scale
    pcm: npt.NDArray[np.int16] = samples.clamp(-32767, 32767).to(torch.int16).reshape(-1).numpy().copy()
    return pcm


def seed_everything(seed: int) -> None:
    """Seed ``random`` (use_random draws emotion prototypes from it), numpy and torch (every device)."""
    seed = int(seed) % (2**63)
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def translate_failure(
    exc: Exception, engine: str, free_memory: Callable[[], None], log: logging.Logger
) -> TtsError:
    """A model failure as a stable error: ``OUT_OF_MEMORY`` (after ``free_memory``) or ``ENGINE_ERROR``."""
    if is_oom(exc):
        if exc.__traceback__ is not None:
            traceback.clear_frames(exc.__traceback__)  # frames pin the tensors that filled memory
        free_memory()
        return TtsError(ErrorCode.OUT_OF_MEMORY, f"out of memory during synthesis: {short(exc, 200)}")
    log.error("%s synthesis failed", engine, exc_info=exc)
    return TtsError(ErrorCode.ENGINE_ERROR, f"{type(exc).__name__}: {short(exc)}")


def place_segment(
    speech: npt.NDArray[np.int16], index: int, expected: int, position: int, silence: npt.NDArray[np.int16], text: str
) -> tuple[npt.NDArray[np.int16], Segment]:
    """Segment ``index`` (1-based) as a streamed chunk starting at sample ``position``, with its span.

    The silence after a segment goes into its own chunk, so the chunks tile the final PCM; a segment
    past the ``expected`` count starts with that silence instead.
    """
    count = max(expected, index)
    lead = silence if index > expected else silence[:0]
    start = position + len(lead)
    trail = silence if index < count else silence[:0]
    chunk = np.concatenate((lead, speech, trail))
    span = Segment(index=index, count=count, text=text, start_sample=start, end_sample=start + len(speech))
    return chunk, span


def finish_synthesis(
    chunks: list[npt.NDArray[np.int16]], spans: list[Segment], clock: StageClock, started: float, sample_rate: int
) -> Synthesized:
    """The whole utterance from its chunks, with per-stage seconds; no audio or pure silence is ``ENGINE_ERROR``."""
    clock.switch("other")
    stage_seconds = {k: round(v, 6) for k, v in clock.seconds.items() if k != "other"}
    stage_seconds["total"] = round(time.perf_counter() - started, 6)
    if not chunks:
        raise TtsError(ErrorCode.ENGINE_ERROR, "model produced no audio segments")
    pcm: npt.NDArray[np.int16] = np.concatenate(chunks)
    if pcm.size == 0 or not pcm.any():
        raise TtsError(ErrorCode.ENGINE_ERROR, "model produced silence")
    return Synthesized(pcm=pcm, sample_rate=sample_rate, segments=len(spans),
                       stage_seconds=stage_seconds, spans=tuple(spans))
