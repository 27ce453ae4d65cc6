"""Every failure the engine can meet becomes a TtsError with a stable code, never junk audio."""

from __future__ import annotations

import io
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch

from processor.engine.base import Emotion, GenerationSettings, LocalAudio, SynthesisSpec
from processor.errors import PERMANENT, ErrorCode, TtsError
from tests.engine.conftest import Clips

pytestmark = pytest.mark.engine

MakeSpec = Callable[..., SynthesisSpec]


def _wav_bytes(samples: np.ndarray, rate: int = 22050) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.astype(np.int16).tobytes())
    return buffer.getvalue()


def _fails(engine: Any, spec: SynthesisSpec, code: ErrorCode) -> TtsError:
    with pytest.raises(TtsError) as info:
        engine.synthesize(spec)
    assert info.value.code == code, str(info.value)
    assert info.value.retriable == (code not in PERMANENT)
    return info.value


@pytest.fixture(scope="session")
def bad_clips(clips: Clips) -> dict[str, LocalAudio]:
    nan_wav = io.BytesIO()
    noise = np.random.default_rng(0).standard_normal(22050).astype(np.float32) * 0.1
    noise[100:200] = np.nan
    sf.write(nan_wav, noise, 22050, format="WAV", subtype="FLOAT")
    return {
        "not_audio": clips.audio("not-audio.wav", b"%PDF-1.4 certainly not a wave file\n" * 50),
        "empty": clips.audio("empty.wav", b""),
        "truncated": clips.audio("truncated.wav", _wav_bytes(np.zeros(22050))[:30]),
        "too_short": clips.audio("short.wav", _wav_bytes(np.full(441, 8000))),  # 20 ms
        "silent": clips.audio("silent.wav", _wav_bytes(np.zeros(22050 * 2))),
        "nan": clips.audio("nan.wav", nan_wav.getvalue()),
    }


@pytest.mark.parametrize("name", ["not_audio", "empty", "truncated", "too_short", "silent", "nan"])
def test_unusable_voice_reference(
    engine: Any, make_spec: MakeSpec, bad_clips: dict[str, LocalAudio], name: str
) -> None:
    _fails(engine, make_spec(voice=bad_clips[name]), ErrorCode.INVALID_REFERENCE_AUDIO)
    assert engine.cache.get("speaker", bad_clips[name].sha256) is None  # failures are not cached


def test_unusable_emotion_reference(engine: Any, make_spec: MakeSpec, bad_clips: dict[str, LocalAudio]) -> None:
    emotion = Emotion(mode="reference", audio=bad_clips["not_audio"], alpha=0.5)
    _fails(engine, make_spec(emotion=emotion), ErrorCode.INVALID_REFERENCE_AUDIO)


def test_vanished_reference_file_is_retriable(engine: Any, make_spec: MakeSpec, tmp_path: Path) -> None:
    gone = LocalAudio(path=tmp_path / "gone.wav", sha256="0" * 64)
    error = _fails(engine, make_spec(voice=gone), ErrorCode.ENGINE_ERROR)
    assert error.retriable


@pytest.mark.parametrize("text", ["", "   \n\t "])
def test_empty_text(engine: Any, make_spec: MakeSpec, text: str) -> None:
    _fails(engine, make_spec(text), ErrorCode.INVALID_REQUEST)


def test_text_too_long(engine: Any, make_spec: MakeSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    _fails(engine, make_spec("a" * (engine._max_text_chars + 1)), ErrorCode.TEXT_TOO_LONG)
    text = "This sentence has quite a few tokens in it, more than the limit allows."
    tokens = len(engine._tts.tokenizer.tokenize(text))
    monkeypatch.setattr(engine, "_max_text_tokens", tokens - 1)
    _fails(engine, make_spec(text), ErrorCode.TEXT_TOO_LONG)
    monkeypatch.setattr(engine, "_max_text_tokens", tokens)
    assert engine.synthesize(make_spec(text)).pcm.size > 0  # the limit is inclusive


@pytest.mark.parametrize("per_segment", [0, -5, 10_000])
def test_segment_budget_outside_the_models_range(engine: Any, make_spec: MakeSpec, per_segment: int) -> None:
    _fails(engine, make_spec(max_text_tokens_per_segment=per_segment), ErrorCode.INVALID_REQUEST)
    with pytest.raises(TtsError):
        engine.segment_text("Hello.", per_segment)


@pytest.mark.parametrize(
    "settings",
    [
        GenerationSettings(top_p=0.0),
        GenerationSettings(top_p=1.5),
        GenerationSettings(top_k=-1),
        GenerationSettings(temperature=0.0),
        GenerationSettings(temperature=float("nan")),
        GenerationSettings(num_beams=0),
        GenerationSettings(repetition_penalty=0.0),
        GenerationSettings(max_mel_tokens=0),
        GenerationSettings(max_mel_tokens=100_000),
    ],
)
def test_invalid_generation_settings(engine: Any, make_spec: MakeSpec, settings: GenerationSettings) -> None:
    _fails(engine, make_spec(generation=settings), ErrorCode.INVALID_REQUEST)


@pytest.mark.parametrize(
    "emotion",
    [
        Emotion(mode="reference", audio=None),
        Emotion(mode="vector", vector=(0.5,) * 7),
        Emotion(mode="vector", vector=None),
        Emotion(mode="vector", vector=(-0.1,) + (0.0,) * 7),
        Emotion(mode="vector", vector=(float("inf"),) + (0.0,) * 7),
        Emotion(mode="same_as_voice", alpha=1.5),
        Emotion(mode="text", alpha=-0.1),
    ],
)
def test_invalid_emotion(engine: Any, make_spec: MakeSpec, emotion: Emotion) -> None:
    _fails(engine, make_spec(emotion=emotion), ErrorCode.INVALID_REQUEST)


def test_negative_interval_silence(engine: Any, make_spec: MakeSpec) -> None:
    _fails(engine, make_spec(interval_silence_ms=-1), ErrorCode.INVALID_REQUEST)


def test_out_of_memory_frees_caches_and_recovers(
    engine: Any, make_spec: MakeSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine.synthesize(make_spec())  # the voice is cached now
    assert len(engine.cache) > 0

    def exhausted(*args: Any, **kwargs: Any) -> Any:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(engine._tts.s2mel.models["cfm"], "inference", exhausted)
    _fails(engine, make_spec(), ErrorCode.OUT_OF_MEMORY)
    assert len(engine.cache) == 0 and engine.cache.bytes == 0
    monkeypatch.undo()
    assert engine.synthesize(make_spec()).pcm.size > 0


def test_allocation_failure_reported_as_runtime_error_is_oom(
    engine: Any, make_spec: MakeSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    def exhausted(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`")

    monkeypatch.setattr(engine._tts.gpt, "inference_speech", exhausted)
    _fails(engine, make_spec(), ErrorCode.OUT_OF_MEMORY)


def test_unexpected_model_failure_is_engine_error(
    engine: Any, make_spec: MakeSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("shape mismatch somewhere deep in the model")

    monkeypatch.setattr(engine._tts.gpt, "inference_speech", broken)
    error = _fails(engine, make_spec(), ErrorCode.ENGINE_ERROR)
    assert "shape mismatch" in error.message
    monkeypatch.undo()
    assert engine.synthesize(make_spec()).pcm.size > 0


@pytest.mark.parametrize("poison", [float("nan"), float("inf")])
def test_non_finite_audio_is_rejected(engine: Any, make_spec: MakeSpec, poison: float) -> None:
    def corrupt(module: Any, args: Any, output: torch.Tensor) -> torch.Tensor:
        bad = output.clone()
        bad[..., 10] = poison
        return bad

    handle = engine._tts.bigvgan.register_forward_hook(corrupt)
    try:
        # Upstream clamps to [-1, 1], which keeps NaN (and turns Inf into 1.0, which is fine).
        if poison != poison:
            _fails(engine, make_spec(), ErrorCode.ENGINE_ERROR)
        else:
            result = engine.synthesize(make_spec())
            assert np.isfinite(result.pcm.astype(np.float64)).all()
    finally:
        handle.remove()


def test_silent_output_is_rejected(engine: Any, make_spec: MakeSpec) -> None:
    handle = engine._tts.bigvgan.register_forward_hook(lambda module, args, output: torch.zeros_like(output))
    try:
        _fails(engine, make_spec(), ErrorCode.ENGINE_ERROR)
    finally:
        handle.remove()
