"""Output rendering: each format and rate decodes (with FFmpeg, not the encoder's library) to what
the EncodedAudio claims; loudness lands on target under the true-peak ceiling; defaults are unchanged."""

from __future__ import annotations

import numpy as np
import pyloudnorm
import pytest

from processor import audio as A
from tests.support.decode import decode

PCM = A.speech_like_pcm(3.0, sample_rate=22050, seed=3)


def test_the_default_output_is_todays_wav_byte_for_byte() -> None:
    assert A.render(PCM, 22050, A.OutputSpec()).data == A.encode_wav(PCM, 22050).data


def test_every_format_encodes_in_this_build() -> None:
    assert A.encoder_problems() == {}
    assert A.available_formats() == ["wav", "flac", "opus", "mp3"]
    assert A.unavailable(A.OutputSpec("mp3", loudness_lufs=-16.0)) is None


def test_a_format_the_build_cannot_encode_is_refused_and_doctor_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    from processor.doctor import check_audio

    monkeypatch.setattr(A, "encoder_problems", lambda: {"mp3": "LibsndfileError: unknown format"})
    assert A.available_formats() == ["wav", "flac", "opus"]
    why = A.unavailable(A.OutputSpec("mp3"))
    assert why == "this worker cannot encode mp3 (LibsndfileError: unknown format); it offers wav, flac, opus"
    assert A.unavailable(A.OutputSpec("opus")) is None
    [check] = check_audio()
    assert check.status == "warn" and "refuses mp3: LibsndfileError" in check.detail


@pytest.mark.parametrize("fmt,rate,channels,container,codec", [
    ("wav", 48000, 1, "wav", "pcm_s16le"),
    ("wav", 8000, 2, "wav", "pcm_s16le"),
    ("flac", 44100, 1, "flac", "flac"),
    ("flac", 11025, 2, "flac", "flac"),
    ("opus", 48000, 1, "ogg", "opus"),
    ("opus", 16000, 2, "ogg", "opus"),
    ("mp3", 44100, 1, "mp3", "mp3float"),
    ("mp3", 8000, 1, "mp3", "mp3float"),
])
def test_formats_and_rates_decode_to_what_the_result_claims(
    fmt: A.OutputFormat, rate: int, channels: int, container: str, codec: str,
) -> None:
    out = A.render(PCM, 22050, A.OutputSpec(format=fmt, sample_rate=rate, channels=channels))
    d = decode(out.data)
    assert (d.container, d.codec, d.sample_rate, d.channels) == (container, codec, rate, channels)
    assert out.sample_rate == rate and out.channels == channels
    assert d.duration_seconds == pytest.approx(out.duration_seconds, abs=1e-3) == pytest.approx(3.0, abs=1e-3)
    if channels == 2:
        assert np.allclose(d.samples[:, 0], d.samples[:, 1], atol=0.02)
    if fmt in ("wav", "flac"):  # lossless: the resampled speech itself, within a quantization step
        ref = A.resample(PCM.astype(np.float32) / 32768, 22050, rate)
        assert np.abs(d.samples[:, 0] - ref).max() < 2 / 32768


def test_lossy_bitrates_are_the_ones_asked_for() -> None:
    for fmt, kbps in (("mp3", 32), ("mp3", 128), ("opus", 16), ("opus", 48)):
        out = A.render(PCM, 22050, A.OutputSpec(format=fmt, sample_rate=48000, bitrate_kbps=kbps))
        measured = out.size * 8 / out.duration_seconds / 1000
        assert out.bitrate_kbps == kbps
        assert kbps * 0.8 < measured < kbps * 1.35, (fmt, kbps, measured)  # container overhead on 3 s
    mp3 = A.render(PCM, 22050, A.OutputSpec(format="mp3", sample_rate=48000))
    assert mp3.bitrate_kbps == 64 and mp3.size < A.render(PCM, 22050, A.OutputSpec(sample_rate=48000)).size / 10


def test_opus_without_a_rate_goes_to_48k_the_others_keep_the_engine_rate() -> None:
    assert A.OutputSpec(format="opus").rate_for(22050) == 48000
    assert A.OutputSpec(format="opus").rate_for(16000) == 16000
    assert A.OutputSpec(format="mp3").rate_for(22050) == 22050
    assert A.OutputSpec(format="flac").rate_for(22050) == 22050


@pytest.mark.parametrize("fmt,target,ceiling", [("wav", -23.0, -1.0), ("flac", -16.0, -1.0),
                                                ("opus", -16.0, -1.0), ("mp3", -14.0, -2.0)])
def test_loudness_hits_the_target_under_the_true_peak_ceiling(fmt: A.OutputFormat, target: float,
                                                              ceiling: float) -> None:
    quiet = (PCM.astype(np.float32) * 0.1).astype(np.int16)  # needs +20 dB: the limiter has to work
    out = A.render(quiet, 22050, A.OutputSpec(format=fmt, sample_rate=48000, loudness_lufs=target,
                                              true_peak_dbtp=ceiling))
    assert out.loudness_lufs == pytest.approx(target, abs=0.2)
    assert out.true_peak_dbtp is not None and out.true_peak_dbtp <= ceiling + 0.01
    d = decode(out.data)
    measured = pyloudnorm.Meter(d.decode_rate).integrated_loudness(d.samples.astype(np.float64))
    assert measured == pytest.approx(target, abs=1.0)
    if not A.FORMATS[fmt].lossy:  # lossy codecs may overshoot the ceiling a little; lossless may not
        assert 20 * np.log10(A.true_peak(d.samples[:, 0], d.decode_rate)) <= ceiling + 0.05


def test_silence_and_fragments_are_left_alone_by_loudness() -> None:
    silent = np.zeros(22050, dtype=np.int16)
    out = A.render(silent, 22050, A.OutputSpec(loudness_lufs=-16.0))
    assert out.loudness_lufs is None and out.gain_db == 0.0
    assert not decode(out.data).samples.any()
    short = PCM[:2000]  # 90 ms: under one 400 ms gating block
    assert A.render(short, 22050, A.OutputSpec(loudness_lufs=-16.0)).gain_db == 0.0


def test_an_imposed_loudness_measurement_gives_the_same_gain() -> None:
    x = PCM.astype(np.float32) / 32768
    lufs = A.integrated_loudness(x, 22050)
    assert lufs is not None
    _, alone = A.normalize(x[:22050], 22050, -20.0, -1.0, measured_lufs=lufs)
    assert alone.gain_db == pytest.approx(-20.0 - lufs)


@pytest.mark.parametrize("spec,needle", [
    (A.OutputSpec(format="opus", sample_rate=22050), "opus supports sample_rate 8000, 12000"),
    (A.OutputSpec(format="mp3", sample_rate=10000), "mp3 supports sample_rate"),
    (A.OutputSpec(sample_rate=96000), "within 8000-48000"),
    (A.OutputSpec(channels=6), "channels must be 1 or 2"),
    (A.OutputSpec(format="flac", bitrate_kbps=64), "bitrate_kbps applies to opus and mp3"),
    (A.OutputSpec(format="mp3", sample_rate=8000, bitrate_kbps=128), "within 8-64"),
    (A.OutputSpec(loudness_lufs=3.0), "loudness must be"),
    (A.OutputSpec(loudness_lufs=-16.0, true_peak_dbtp=2.0), "true_peak_dbtp"),
])
def test_impossible_outputs_are_explained(spec: A.OutputSpec, needle: str) -> None:
    problems = A.spec_problems(spec)
    assert any(needle in p for p in problems), problems


def test_possible_outputs_have_no_problems() -> None:
    for spec in (A.OutputSpec(), A.OutputSpec("opus", 24000, 2, 64), A.OutputSpec("mp3", 48000, 1, 320, -16.0)):
        assert A.spec_problems(spec) == []


class _Span:
    def __init__(self, index: int, text: str, start: int, end: int) -> None:
        self.index, self.text, self.start_sample, self.end_sample = index, text, start, end


def test_timeline_maps_engine_samples_to_output_seconds() -> None:
    spans = [_Span(1, "Hello.", 0, 22050), _Span(2, "World.", 26460, 44100)]
    t = A.timeline(spans, 22050, 48000)
    assert [(s.index, s.text) for s in t] == [(1, "Hello."), (2, "World.")]
    assert [(s.start_seconds, s.end_seconds) for s in t] == [(0.0, 1.0), (1.2, 2.0)]
    odd = A.timeline([_Span(1, "x", 7, 11)], 22050, 8000)
    assert odd[0].start_seconds == round(7 * 8000 / 22050) / 8000
