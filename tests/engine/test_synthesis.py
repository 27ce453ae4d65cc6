"""The real indextts code on the tiny random model: what IndexTTS2Engine does with each field."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from processor.engine.base import EMOTION_NAMES, Emotion, GenerationSettings, LocalAudio, Segment, SynthesisSpec
from tests.engine.conftest import FAST, Clips, LoadCounter, pcm_equal

pytestmark = pytest.mark.engine

MakeSpec = Callable[..., SynthesisSpec]
THREE_SENTENCES = "The first sentence is here. Then comes a second one! And a third, to finish?"


def _hop(engine: Any) -> int:
    return int(engine._tts.cfg.s2mel.preprocess_params.spect_params.hop_length)


def test_info_comes_from_the_loaded_checkpoint(engine: Any, tiny_model_dir: Path) -> None:
    cfg = yaml.safe_load((tiny_model_dir / "config.yaml").read_text())
    info = engine.info
    assert info.model_type == cfg["model_type"]
    assert info.model_version == str(cfg["version"])
    assert info.device == "cpu"
    assert info.precision == "fp32"
    assert info.load_seconds > 0
    assert info.flags["use_fp16"] == "false"
    assert info.flags["gpt_kv_cache"] == "true"
    assert (info.engine, info.backend, info.sample_rate) == ("indextts2", "sdpa", engine.sample_rate)
    assert info.capabilities.languages == ("zh", "en")
    assert (info.capabilities.speed_min, info.capabilities.speed_max) == (1.0, 1.0)
    assert "text" in info.capabilities.emotion_modes
    assert engine.sample_rate == cfg["s2mel"]["preprocess_params"]["sr"]


def test_clone_returns_mono_int16_at_model_rate(engine: Any, make_spec: MakeSpec, clips: Clips) -> None:
    # A voice no other test uses: its conditioning is computed here, whatever ran before.
    result = engine.synthesize(make_spec(voice=clips.voice("voice-clone-only.wav", f0=170.0, seed=7)))
    assert result.pcm.dtype == np.int16
    assert result.pcm.ndim == 1
    assert result.sample_rate == engine.sample_rate
    assert result.segments == 1
    assert result.pcm.size > 0 and np.abs(result.pcm).max() > 0
    # One segment: BigVGAN emits exactly hop samples per mel frame; at most 1.72 frames per code.
    assert result.pcm.size % _hop(engine) == 0
    assert result.pcm.size <= int(FAST.max_mel_tokens * 1.72) * _hop(engine)  # type: ignore[operator]
    for stage in ("conditioning", "gpt", "s2mel", "vocoder", "total"):
        assert result.stage_seconds[stage] > 0, stage
    parts = sum(result.stage_seconds[s] for s in ("conditioning", "gpt", "s2mel", "vocoder"))
    assert parts <= result.stage_seconds["total"] + 1e-3


def test_voice_reference_drives_the_output(
    engine: Any, make_spec: MakeSpec, voice: LocalAudio, other_voice: LocalAudio
) -> None:
    a = engine.synthesize(make_spec(voice=voice))
    b = engine.synthesize(make_spec(voice=other_voice))
    assert not pcm_equal(a, b)


@pytest.mark.parametrize(
    ("text", "expected_chars"),
    [("Hello world, nice to meet you.", "HELLO"), ("你好，世界。今天天气很好！", "你好")],
)
def test_english_and_chinese(engine: Any, make_spec: MakeSpec, text: str, expected_chars: str) -> None:
    segments = engine.segment_text(text, 120)
    assert segments and expected_chars in segments[0]
    result = engine.synthesize(make_spec(text))
    assert result.segments == len(segments)
    assert result.pcm.size > 0


def test_multi_segment_progress(engine: Any, make_spec: MakeSpec) -> None:
    segments = engine.segment_text(THREE_SENTENCES, 8)
    assert len(segments) >= 3
    calls: list[tuple[Segment, np.ndarray]] = []
    result = engine.synthesize(
        make_spec(THREE_SENTENCES, max_text_tokens_per_segment=8, interval_silence_ms=100),
        lambda span, chunk: calls.append((span, chunk.copy())),
    )
    n = len(segments)
    assert [(span.index, span.count) for span, _ in calls] == [(i, n) for i in range(1, n + 1)]
    assert result.segments == n
    assert result.spans == tuple(span for span, _ in calls)
    # Each span carries the normalised text it spoke, in order.
    assert [span.text for span in result.spans] == segments
    # The chunks tile the final PCM: streamed audio is exactly the result.
    assert np.array_equal(np.concatenate([chunk for _, chunk in calls]), result.pcm)
    gap = int(engine.sample_rate * 100 / 1000)
    position = 0
    for (span, chunk), nxt in zip(calls, [*result.spans[1:], None], strict=True):
        assert span.start_sample == position
        assert span.end_sample - span.start_sample > 0
        assert span.end_sample - span.start_sample + (gap if nxt is not None else 0) == len(chunk)
        assert not result.pcm[span.end_sample : span.end_sample + (gap if nxt else 0)].any()
        position += len(chunk)
        if nxt is not None:
            assert nxt.start_sample == span.end_sample + gap
    assert result.spans[-1].end_sample == result.pcm.size
    # A bigger segment budget gives fewer segments from the model's own splitter.
    assert len(engine.segment_text(THREE_SENTENCES, 120)) < n


def test_interval_silence_is_inserted_between_segments(engine: Any, make_spec: MakeSpec) -> None:
    spec = make_spec(THREE_SENTENCES, max_text_tokens_per_segment=8)
    silent_ms = 250
    without = engine.synthesize(
        SynthesisSpec(**{**spec.__dict__, "interval_silence_ms": 0})  # type: ignore[arg-type]
    )
    with_gaps = engine.synthesize(
        SynthesisSpec(**{**spec.__dict__, "interval_silence_ms": silent_ms})  # type: ignore[arg-type]
    )
    gap = int(engine.sample_rate * silent_ms / 1000)
    assert with_gaps.pcm.size - without.pcm.size == (without.segments - 1) * gap
    # Same seed: the segments themselves are unchanged, only separated by zeros.
    first = without.pcm.size // without.segments  # not exact per segment, so compare the head only
    assert np.array_equal(with_gaps.pcm[: min(first, 2048)], without.pcm[: min(first, 2048)])


def test_progress_callback_can_stop_the_job(engine: Any, make_spec: MakeSpec) -> None:
    class Cancelled(Exception):
        pass

    calls: list[int] = []

    def cancel(span: Segment, chunk: np.ndarray) -> None:
        calls.append(span.index)
        raise Cancelled

    with pytest.raises(Cancelled):
        engine.synthesize(make_spec(THREE_SENTENCES, max_text_tokens_per_segment=8), cancel)
    assert calls == [1]
    assert engine.synthesize(make_spec()).pcm.size > 0  # still serving


def test_same_seed_same_samples_and_seed_matters(engine: Any, make_spec: MakeSpec, clips: Any) -> None:
    fresh = clips.voice("voice-determinism.wav", f0=160.0, seed=7)  # first use is a cache miss
    misses = engine.cache.misses
    first = engine.synthesize(make_spec(voice=fresh, seed=42))
    assert engine.cache.misses == misses + 2  # speaker + emotion conditioning (same clip)
    hits = engine.cache.hits
    second = engine.synthesize(make_spec(voice=fresh, seed=42))
    assert engine.cache.hits == hits + 2
    assert pcm_equal(first, second)  # computed vs cached conditioning render the same bytes
    other = engine.synthesize(make_spec(voice=fresh, seed=43))
    assert not pcm_equal(first, other)


def test_model_is_loaded_once(
    engine: Any, make_spec: MakeSpec, load_counter: LoadCounter, monkeypatch: pytest.MonkeyPatch
) -> None:
    import indextts.infer_v2 as infer_v2
    import torch

    loads: list[str] = []
    real_torch_load = torch.load

    def counting_torch_load(*args: Any, **kwargs: Any) -> Any:
        loads.append("torch.load")
        return real_torch_load(*args, **kwargs)

    def counting_hub(*args: Any, **kwargs: Any) -> Any:
        loads.append("hf_hub_download")
        raise AssertionError("no hub access after load")

    monkeypatch.setattr(torch, "load", counting_torch_load)
    monkeypatch.setattr(infer_v2, "hf_hub_download", counting_hub)
    assert load_counter.constructions == 1
    model = engine._tts
    for text in ("One.", "Two, three.", "你好。"):
        engine.synthesize(make_spec(text))
    assert loads == []
    assert load_counter.constructions == 1
    assert engine._tts is model


def test_generation_settings_reach_the_gpt(engine: Any, make_spec: MakeSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, Any]] = []
    inner = engine._tts.gpt.inference_speech

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs)
        return inner(*args, **kwargs)

    monkeypatch.setattr(engine._tts.gpt, "inference_speech", spy)
    settings = GenerationSettings(
        top_p=0.5, top_k=7, temperature=0.6, num_beams=2, repetition_penalty=3.5, max_mel_tokens=17
    )
    engine.synthesize(make_spec(generation=settings))
    (kwargs,) = seen
    assert kwargs["top_p"] == 0.5
    assert kwargs["top_k"] == 7
    assert kwargs["temperature"] == 0.6
    assert kwargs["num_beams"] == 2
    assert kwargs["repetition_penalty"] == 3.5
    assert kwargs["max_generate_length"] == 17
    assert engine._tts.cfg.gpt.start_mel_token in kwargs["suppress_tokens"]

    seen.clear()
    engine.synthesize(make_spec(generation=GenerationSettings()))
    (defaults,) = seen
    # Unset fields keep infer_v2's defaults; max_mel_tokens is capped by the checkpoint's limit.
    assert defaults["num_beams"] == 3 and defaults["top_k"] == 30
    assert defaults["max_generate_length"] == min(1500, int(engine._tts.cfg.gpt.max_mel_tokens))


def test_max_mel_tokens_bounds_the_audio(engine: Any, make_spec: MakeSpec) -> None:
    short = engine.synthesize(make_spec(generation=GenerationSettings(max_mel_tokens=8, num_beams=1)))
    long = engine.synthesize(make_spec(generation=GenerationSettings(max_mel_tokens=40, num_beams=1)))
    assert short.pcm.size <= int(8 * 1.72) * _hop(engine)
    assert long.pcm.size > short.pcm.size


def test_sampled_start_token_is_suppressed(engine: Any, make_spec: MakeSpec) -> None:
    """A GPT that prefers its start-of-mel token (no codec code) must still render."""
    head = engine._tts.gpt.mel_head
    start = int(engine._tts.cfg.gpt.start_mel_token)
    saved = head.bias.data[start].item()
    head.bias.data[start] = 1e4
    try:
        result = engine.synthesize(make_spec())
    finally:
        head.bias.data[start] = saved
    assert result.pcm.size > 0


# -- emotion modes ------------------------------------------------------------------------------


def test_emotion_reference_blends_by_alpha(
    engine: Any, make_spec: MakeSpec, other_voice: LocalAudio, clips: Any
) -> None:
    third = clips.voice("voice-emotion.wav", f0=300.0, seconds=2.0, seed=3)
    zero_b = engine.synthesize(make_spec(emotion=Emotion(mode="reference", audio=other_voice, alpha=0.0)))
    zero_c = engine.synthesize(make_spec(emotion=Emotion(mode="reference", audio=third, alpha=0.0)))
    full_b = engine.synthesize(make_spec(emotion=Emotion(mode="reference", audio=other_voice, alpha=0.9)))
    full_c = engine.synthesize(make_spec(emotion=Emotion(mode="reference", audio=third, alpha=0.9)))
    assert pcm_equal(zero_b, zero_c)  # alpha 0: the emotion clip has no influence
    assert not pcm_equal(full_b, zero_b)
    assert not pcm_equal(full_b, full_c)  # with weight, which clip matters
    assert engine.cache.get("emotion", other_voice.sha256) is not None


def test_emotion_vector(engine: Any, make_spec: MakeSpec) -> None:
    base = engine.synthesize(make_spec())
    zeros = engine.synthesize(make_spec(emotion=Emotion(mode="vector", vector=(0.0,) * 8, alpha=1.0)))
    happy = engine.synthesize(make_spec(emotion=Emotion(mode="vector", vector=(0.8,) + (0.0,) * 7, alpha=1.0)))
    sad = engine.synthesize(make_spec(emotion=Emotion(mode="vector", vector=(0.0, 0.0, 0.8) + (0.0,) * 5, alpha=1.0)))
    assert pcm_equal(zeros, base)  # no emotion weight: the speaker's own emotion
    assert not pcm_equal(happy, base)
    assert not pcm_equal(happy, sad)


def test_emotion_vector_use_random(engine: Any, make_spec: MakeSpec) -> None:
    emotion = Emotion(mode="vector", vector=(0.1,) * 8, alpha=1.0)
    nearest = engine.synthesize(make_spec(emotion=emotion, use_random=False))
    random_a = engine.synthesize(make_spec(emotion=emotion, use_random=True))
    random_b = engine.synthesize(make_spec(emotion=emotion, use_random=True))
    assert pcm_equal(random_a, random_b)  # random prototypes, but seeded
    assert not pcm_equal(nearest, random_a)


def test_emotion_text_uses_the_models_classifier(
    engine: Any, make_spec: MakeSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []
    answers: list[dict[str, float]] = []
    classify = engine._tts.qwen_emo.inference

    def spy(text: str) -> Any:
        asked.append(text)
        answers.append(classify(text))
        return answers[-1]

    monkeypatch.setattr(engine._tts.qwen_emo, "inference", spy)
    spoken = "What a wonderful day."
    by_text = engine.synthesize(make_spec(spoken, emotion=Emotion(mode="text", text="我非常生气", alpha=0.7)))
    engine.synthesize(make_spec(spoken, emotion=Emotion(mode="text", text="", alpha=0.7)))
    assert asked == ["我非常生气", spoken]  # empty emotion text: the spoken text is classified

    # Text mode is the vector mode fed with the classifier's answer (raw, scaled by alpha).
    vector = tuple(answers[0][name] for name in EMOTION_NAMES)
    assert len(vector) == 8 and all(math.isfinite(v) for v in vector)
    monkeypatch.setattr(engine, "_normalize_emotion_vector", False)
    by_vector = engine.synthesize(make_spec(spoken, emotion=Emotion(mode="vector", vector=vector, alpha=0.7)))
    assert pcm_equal(by_text, by_vector)
    assert engine.synthesize(make_spec(spoken)).pcm.size > 0
    assert "emotion_text" in by_text.stage_seconds
