"""The real indextts25 code on the tiny random IndexTTS-2.5: what IndexTTS25Engine does with each field.

One engine for the module (built by ``devstack.tiny_model25`` into ``.cache/tiny-model25``); short
generations (8 codes, one beam, 2 diffusion steps) keep it lean. Languages: the text path of each
(normalisation, casing, Japanese kana, language token) and one synthesis outside English.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from processor.engine.base import Emotion, GenerationSettings, LocalAudio, Segment, SynthesisSpec
from processor.errors import ErrorCode, TtsError

pytestmark = pytest.mark.engine

ROOT = Path(__file__).resolve().parents[2]
TINY25 = ROOT / ".cache" / "tiny-model25"
FAST = GenerationSettings(max_mel_tokens=8, num_beams=1)
CONSTRUCTIONS = {"n": 0}


@pytest.fixture(scope="module")
def engine25() -> Iterator[Any]:
    proc = subprocess.run([sys.executable, "-m", "devstack.tiny_model25", str(TINY25)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    import processor.engine.indextts25 as module

    original = module._build_model_class

    def counting() -> type[Any]:
        cls = original()
        init = cls.__init__

        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            CONSTRUCTIONS["n"] += 1
            init(self, *args, **kwargs)

        cls.__init__ = __init__
        return cls

    patch = pytest.MonkeyPatch()
    patch.setattr(module, "_build_model_class", counting)
    try:
        yield module.IndexTTS25Engine(TINY25, device="cpu", hf_home=TINY25 / "hf", diffusion_steps=2)
    finally:
        patch.undo()


@pytest.fixture(scope="module")
def voices(tmp_path_factory: pytest.TempPathFactory) -> dict[str, LocalAudio]:
    from processor.engine.indextts2 import write_harmonic_wav

    out = {}
    for name, f0, seed in (("a", 120.0, 1), ("b", 220.0, 2), ("emo", 300.0, 3)):
        path = tmp_path_factory.mktemp("voices25") / f"{name}.wav"
        write_harmonic_wav(path, seconds=2.5, f0=f0, seed=seed)
        out[name] = LocalAudio(path, hashlib.sha256(path.read_bytes()).hexdigest())
    return out


def spec(voice: LocalAudio, text: str = "Hello world.", **kwargs: Any) -> SynthesisSpec:
    kwargs.setdefault("generation", FAST)
    kwargs.setdefault("language", "en")
    return SynthesisSpec(request_id="t25", text=text, voice=voice, **kwargs)


@pytest.fixture(scope="module")
def base(engine25: Any, voices: dict[str, LocalAudio]) -> Any:
    return engine25.synthesize(spec(voices["a"]))


def test_info_names_engine_backend_and_capabilities(engine25: Any) -> None:
    info = engine25.info
    assert (info.engine, info.backend, info.device, info.precision) == ("indextts2.5", "sdpa", "cpu", "fp32")
    assert info.model_type == "indextts2.5-tiny-random" and info.sample_rate == 22050
    caps = info.capabilities
    assert caps.languages == ("zh", "en", "ja", "es", "ar")
    assert "text" not in caps.emotion_modes and caps.speed_min < 1.0 < caps.speed_max


def test_clone_is_int16_with_spans_and_follows_the_voice(
    engine25: Any, voices: dict[str, LocalAudio], base: Any
) -> None:
    assert base.pcm.dtype == np.int16 and base.pcm.ndim == 1 and np.abs(base.pcm).max() > 0
    assert base.sample_rate == 22050 and base.segments == 1
    assert base.spans == (Segment(1, 1, "hello world.", 0, base.pcm.size),)
    for stage in ("text", "conditioning", "gpt", "s2mel", "vocoder", "total"):
        assert base.stage_seconds[stage] > 0, stage
    other = engine25.synthesize(spec(voices["b"]))
    assert not np.array_equal(other.pcm[: base.pcm.size], base.pcm[: other.pcm.size])
    again = engine25.synthesize(spec(voices["a"]))
    assert np.array_equal(again.pcm, base.pcm)  # same seed, same bytes (the redo contract)


@pytest.mark.parametrize(
    "emotion",
    [Emotion(mode="reference", alpha=0.9), Emotion(mode="vector", alpha=1.0, vector=(0.0, 0.0, 0.7, 0, 0, 0, 0, 0))],
    ids=["reference", "vector"],
)
def test_each_supported_emotion_mode_reaches_the_gpt(
    engine25: Any, voices: dict[str, LocalAudio], emotion: Emotion, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The tiny random GPT may sample the same few codes either way, so what is checked is the
    # emotion vector the GPT is conditioned on (its third argument), against the voice's own.
    seen: list[Any] = []
    gpt = engine25._tts.gpt
    original = gpt.inference_speech

    def recording(*args: Any, **kwargs: Any) -> Any:
        seen.append(args[2].detach().clone())
        return original(*args, **kwargs)

    monkeypatch.setattr(gpt, "inference_speech", recording)
    if emotion.mode == "reference":
        emotion = Emotion(mode="reference", alpha=emotion.alpha, audio=voices["emo"])
    plain = engine25.synthesize(spec(voices["a"]))
    out = engine25.synthesize(spec(voices["a"], emotion=emotion))
    assert out.pcm.size > 0 and plain.pcm.size > 0 and len(seen) == 2
    assert not bool((seen[0] - seen[1]).abs().max() < 1e-6)


def test_emotion_text_is_refused(engine25: Any, voices: dict[str, LocalAudio]) -> None:
    with pytest.raises(TtsError) as err:
        engine25.synthesize(spec(voices["a"], emotion=Emotion(mode="text", text="happy")))
    assert err.value.code is ErrorCode.UNSUPPORTED_CAPABILITY


def test_speed_changes_the_duration(engine25: Any, voices: dict[str, LocalAudio], base: Any) -> None:
    faster = engine25.synthesize(spec(voices["a"], speed=0.8))
    slower = engine25.synthesize(spec(voices["a"], speed=1.25))
    # Same seed, same codes: only the s2mel length changes, by the duration factor (to a mel frame).
    assert faster.pcm.size == pytest.approx(0.8 * base.pcm.size, rel=0.03)
    assert slower.pcm.size == pytest.approx(1.25 * base.pcm.size, rel=0.03)
    with pytest.raises(TtsError) as err:
        engine25.synthesize(spec(voices["a"], speed=3.0))
    assert err.value.code is ErrorCode.INVALID_REQUEST


@pytest.mark.parametrize(
    ("text", "lang", "expected"),
    [
        ("Hello, it is 5 o'clock!", "en", "hello, it is five o'clock!"),
        ("Hola, tengo 5 gatos.", "es", "HOLA, TENGO CINCO GATOS."),
        ("你好，世界。", "zh", "你好,世界."),
        ("こんにちは、世界。", "ja", "こんにちは , 世界 ."),  # fugashi word segmentation
        ("مرحبا بالعالم.", "ar", "مرحبا بالعالم."),
    ],
)
def test_each_language_text_path(engine25: Any, text: str, lang: str, expected: str) -> None:
    from processor.engine.indextts25 import detect_language

    assert detect_language(text) == lang
    segments = engine25.segment_text(text, 120)
    assert len(segments) == 1
    assert segments[0] == expected


def test_a_language_besides_english_synthesizes(engine25: Any, voices: dict[str, LocalAudio]) -> None:
    out = engine25.synthesize(spec(voices["a"], "Hola, ¿qué tal?", language="es"))
    assert out.spans[0].text == "HOLA, ¿QUÉ TAL?" and out.pcm.size > 0
    with pytest.raises(TtsError) as err:
        engine25.synthesize(spec(voices["a"], "Bonjour.", language="fr"))
    assert err.value.code is ErrorCode.UNSUPPORTED_CAPABILITY


def test_streaming_yields_each_segment_with_its_text_tiling_the_result(
    engine25: Any, voices: dict[str, LocalAudio]
) -> None:
    text = "The first one. Then a second! And a third?"
    calls: list[tuple[Segment, np.ndarray]] = []
    out = engine25.synthesize(spec(voices["a"], text, max_text_tokens_per_segment=8, interval_silence_ms=50),
                              lambda s, c: calls.append((s, c.copy())))
    assert len(calls) == out.segments >= 3
    assert [s.text for s, _ in calls] == engine25.segment_text(text, 8)
    assert np.array_equal(np.concatenate([c for _, c in calls]), out.pcm)
    gap = int(22050 * 50 / 1000)
    for (span, chunk), last in zip(calls, [False] * (len(calls) - 1) + [True], strict=True):
        assert span.end_sample - span.start_sample + (0 if last else gap) == len(chunk)
    assert out.spans == tuple(s for s, _ in calls)


def test_too_long_text_is_refused_before_any_gpu_work(engine25: Any, voices: dict[str, LocalAudio],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine25, "_max_text_tokens", 5)
    calls: list[int] = []
    monkeypatch.setattr(engine25._tts, "_speaker_conditioning", lambda *a, **k: calls.append(1))
    with pytest.raises(TtsError) as err:
        engine25.synthesize(spec(voices["a"], "A sentence that is much longer than five tokens."))
    assert err.value.code is ErrorCode.TEXT_TOO_LONG and calls == []


def test_flash_backend_without_flash_attn_is_a_clear_startup_error() -> None:
    from processor.engine.indextts25 import IndexTTS25Engine

    with pytest.raises(ValueError, match="flash"):
        IndexTTS25Engine(TINY25, device="cpu", attn_backend="flash")


def test_model_is_loaded_once(engine25: Any, voices: dict[str, LocalAudio]) -> None:
    engine25.synthesize(spec(voices["b"]))
    assert CONSTRUCTIONS["n"] == 1
