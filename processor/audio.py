"""From the engine's PCM to the bytes a consumer asked for: resample, loudness, encode.

The engine renders mono 16-bit PCM at its own rate (22.05 kHz for IndexTTS2). A request may ask for
another container/codec (WAV, FLAC, Ogg Opus, MP3), another sample rate, two channels, and a target
integrated loudness with a true-peak ceiling. All of it runs on the finish thread, never on the GPU
thread, so the GPU renders the next job meanwhile.

- Resampling is libsoxr (``soxr``), the resampler SoX and FFmpeg's ``aresample=resampler=soxr`` use.
- Loudness is ITU-R BS.1770-4 integrated loudness (``pyloudnorm``); the true peak is measured on a
  4x oversampled signal as BS.1770 Annex 2 describes, and a short look-ahead limiter keeps it under
  the ceiling when the gain to reach the target would push it over.
- Encoding is libsndfile (the ``soundfile`` wheel bundles it with FLAC, Ogg Opus and LAME MP3),
  except WAV, which keeps the standard library writer so a default request's bytes are unchanged.

Lossy encoders write their delay and padding into the file (Opus pre-skip and end granule, the
LAME/Xing tag), so a conforming decoder returns exactly the frames written: the duration in the
result is the stored object's.
"""

from __future__ import annotations

import functools
import hashlib
import io
import math
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

OutputFormat = Literal["wav", "flac", "opus", "mp3"]
SubtitleFormat = Literal["none", "srt", "vtt", "both"]

MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 48000
# Opus codes at these rates only; libsndfile has no resampler of its own, so we resample first.
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
# MPEG-1, MPEG-2 and MPEG-2.5 layer III rates (LAME refuses any other output rate).
MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
DEFAULT_TRUE_PEAK_DBTP = -1.0  # EBU R 128's ceiling for production; lossy codecs may overshoot it slightly


@dataclass(frozen=True)
class FormatInfo:
    name: OutputFormat
    extension: str
    content_type: str
    sf_format: str  # libsndfile major format ("" for the stdlib WAV writer)
    sf_subtype: str
    rates: tuple[int, ...] | None  # None: any rate in [MIN_SAMPLE_RATE, MAX_SAMPLE_RATE]
    lossy: bool


FORMATS: dict[str, FormatInfo] = {
    "wav": FormatInfo("wav", "wav", "audio/wav", "", "", None, False),
    "flac": FormatInfo("flac", "flac", "audio/flac", "FLAC", "PCM_16", None, False),
    # RFC 7845: Ogg Opus files use the .opus extension and the audio/ogg media type.
    "opus": FormatInfo("opus", "opus", "audio/ogg", "OGG", "OPUS", OPUS_RATES, True),
    "mp3": FormatInfo("mp3", "mp3", "audio/mpeg", "MP3", "MPEG_LAYER_III", MP3_RATES, True),
}


def bitrate_range(fmt: str, sample_rate: int, channels: int) -> tuple[int, int] | None:
    """Valid total bitrates in kbit/s for a lossy format at this rate, None for lossless ones."""
    if fmt == "opus":
        return 6 * channels, 256 * channels  # libopus accepts 6-256 kbit/s per channel
    if fmt == "mp3":
        if sample_rate >= 32000:
            return 32, 320  # MPEG-1
        if sample_rate >= 16000:
            return 8, 160  # MPEG-2
        return 8, 64  # MPEG-2.5
    return None


def default_bitrate(fmt: str, sample_rate: int, channels: int) -> int | None:
    """Transparent for speech at a tenth of the WAV's bytes: Opus 32 kbit/s per channel, MP3 64."""
    rng = bitrate_range(fmt, sample_rate, channels)
    if rng is None:
        return None
    wanted = 32 * channels if fmt == "opus" else 64
    return max(rng[0], min(rng[1], wanted))


@dataclass(frozen=True)
class OutputSpec:
    """What the stored audio should be; the default reproduces the engine's WAV untouched."""

    format: OutputFormat = "wav"
    sample_rate: int | None = None  # None: the engine's rate (48 kHz for Opus, which cannot code 22.05 kHz)
    channels: int = 1
    bitrate_kbps: int | None = None  # lossy formats only; None: default_bitrate
    loudness_lufs: float | None = None  # target integrated loudness; None: leave the level alone
    true_peak_dbtp: float = DEFAULT_TRUE_PEAK_DBTP

    @property
    def info(self) -> FormatInfo:
        return FORMATS[self.format]

    def rate_for(self, engine_rate: int) -> int:
        if self.sample_rate is not None:
            return self.sample_rate
        rates = self.info.rates
        if rates is None or engine_rate in rates:
            return engine_rate
        return max(rates)

    def bitrate_for(self, sample_rate: int) -> int | None:
        if not self.info.lossy:
            return None
        if self.bitrate_kbps is not None:
            return self.bitrate_kbps
        return default_bitrate(self.format, sample_rate, self.channels)


def spec_problems(spec: OutputSpec) -> list[str]:
    """Why this combination cannot be encoded (empty when it can); the request validator reports these."""
    problems: list[str] = []
    if spec.format not in FORMATS:
        return [f"output_format must be one of {', '.join(FORMATS)}"]
    info = spec.info
    if spec.sample_rate is not None:
        if not MIN_SAMPLE_RATE <= spec.sample_rate <= MAX_SAMPLE_RATE:
            problems.append(f"sample_rate must be within {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE}")
        elif info.rates is not None and spec.sample_rate not in info.rates:
            problems.append(f"{spec.format} supports sample_rate {', '.join(map(str, info.rates))}")
    if spec.channels not in (1, 2):
        problems.append("channels must be 1 or 2")
    if spec.bitrate_kbps is not None:
        rate = spec.sample_rate if spec.sample_rate is not None else (max(info.rates) if info.rates else 22050)
        rng = bitrate_range(spec.format, rate, spec.channels)
        if rng is None:
            problems.append(f"bitrate_kbps applies to opus and mp3, not {spec.format}")
        elif not rng[0] <= spec.bitrate_kbps <= rng[1]:
            problems.append(f"bitrate_kbps for {spec.format} at {rate} Hz must be within {rng[0]}-{rng[1]}")
    target = spec.loudness_lufs
    if target is not None and not (math.isfinite(target) and -70.0 <= target <= -5.0):
        problems.append("loudness must be a target in LUFS within -70 to -5")
    if not (math.isfinite(spec.true_peak_dbtp) and -20.0 <= spec.true_peak_dbtp <= 0.0):
        problems.append("true_peak_dbtp must be within -20 to 0")
    return problems


@dataclass(frozen=True)
class EncodedAudio:
    """The bytes to store and the facts the result reports about them."""

    data: bytes
    sha256: str
    sample_rate: int
    duration_seconds: float
    format: OutputFormat = "wav"
    channels: int = 1
    frames: int = 0
    bitrate_kbps: int | None = None
    loudness_lufs: float | None = None  # measured on the output before encoding, when normalization ran
    true_peak_dbtp: float | None = None
    gain_db: float | None = None

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def content_type(self) -> str:
        return FORMATS[self.format].content_type

    @property
    def extension(self) -> str:
        return FORMATS[self.format].extension


def encode_wav(pcm: npt.NDArray[np.int16], sample_rate: int) -> EncodedAudio:
    if pcm.ndim != 1 or pcm.dtype != np.int16:
        raise ValueError("expected mono int16 PCM")
    return _encoded(_wav_bytes(pcm, sample_rate, 1), "wav", sample_rate, 1, len(pcm))


# ---------------------------------------------------------------------------------- processing


def resample(x: npt.NDArray[np.float32], from_rate: int, to_rate: int) -> npt.NDArray[np.float32]:
    """Band-limited resampling with libsoxr's high-quality preset (float32 in, float32 out)."""
    if from_rate == to_rate or x.size == 0:
        return x
    import soxr

    return np.asarray(soxr.resample(x, from_rate, to_rate, quality="HQ"), dtype=np.float32)


def true_peak(x: npt.NDArray[np.float32], sample_rate: int) -> float:
    """Linear true peak: the largest magnitude of the 4x oversampled signal (BS.1770-4 Annex 2)."""
    return float(np.abs(_oversampled(x, sample_rate)).max(initial=0.0))


def integrated_loudness(x: npt.NDArray[np.float32], sample_rate: int) -> float | None:
    """BS.1770-4 gated integrated loudness in LUFS; None when there is too little (< 0.4 s) or only silence."""
    import pyloudnorm

    if x.shape[0] < int(0.4 * sample_rate) + 1:
        return None
    lufs = float(pyloudnorm.Meter(sample_rate).integrated_loudness(x.astype(np.float64)))
    return lufs if math.isfinite(lufs) and lufs > -70.0 else None


@dataclass(frozen=True)
class Loudness:
    gain_db: float
    loudness_lufs: float | None
    true_peak_dbtp: float


def normalize(
    x: npt.NDArray[np.float32], sample_rate: int, target_lufs: float, ceiling_dbtp: float,
    *, measured_lufs: float | None = None,
) -> tuple[npt.NDArray[np.float32], Loudness]:
    """Gain to ``target_lufs``, then limit true peaks to ``ceiling_dbtp``.

    Limiting takes a little loudness away, so the gain is corrected once from a new measurement
    and limited again: speech lands within a few tenths of a LU of the target. ``measured_lufs``
    lets a caller impose a loudness measured elsewhere (the job so far, for a streamed segment).
    """
    lufs = integrated_loudness(x, sample_rate) if measured_lufs is None else measured_lufs
    if lufs is None:  # nothing measurable (silence, or a fragment under one gating block): leave it
        peak = true_peak(x, sample_rate)
        return x, Loudness(0.0, None, _db(peak))
    ceiling = 10.0 ** (ceiling_dbtp / 20.0)
    gain_db = target_lufs - lufs
    y, peak = _limit(x * np.float32(10.0 ** (gain_db / 20.0)), sample_rate, ceiling)
    out_lufs = integrated_loudness(y, sample_rate)
    if measured_lufs is None and out_lufs is not None and abs(target_lufs - out_lufs) > 0.1:
        gain_db += target_lufs - out_lufs
        y, peak = _limit(x * np.float32(10.0 ** (gain_db / 20.0)), sample_rate, ceiling)
        out_lufs = integrated_loudness(y, sample_rate)
    return y, Loudness(gain_db, out_lufs, _db(peak))


def _limit(x: npt.NDArray[np.float32], sample_rate: int, ceiling: float) -> tuple[npt.NDArray[np.float32], float]:
    """Look-ahead peak limiter: a smooth gain that stays under ``ceiling / |true peak|`` everywhere.

    The needed gain per sample is min-filtered over +-W and then averaged over +-W: every averaged
    value comes from minima that already include the sample's own need, so the smooth gain never
    exceeds it, and it ramps over 2W (about 10 ms) instead of clipping.
    """
    from scipy.ndimage import minimum_filter1d, uniform_filter1d

    peaks = np.abs(_oversampled(x, sample_rate))
    factor = max(1, peaks.shape[0] // max(1, x.shape[0]))
    per_sample = peaks[: x.shape[0] * factor].reshape(x.shape[0], factor).max(axis=1) if factor > 1 else peaks
    if per_sample.shape[0] < x.shape[0]:
        per_sample = np.pad(per_sample, (0, x.shape[0] - per_sample.shape[0]), mode="edge")
    peak = float(per_sample.max(initial=0.0))
    if peak <= ceiling:
        return x, peak
    need = np.minimum(1.0, ceiling / np.maximum(per_sample, 1e-12))
    w = max(1, int(0.005 * sample_rate))
    gain = uniform_filter1d(minimum_filter1d(need, size=2 * w + 1, mode="nearest"), size=2 * w + 1, mode="nearest")
    y = (x * gain).astype(np.float32)
    # The oversampled peaks of the product can still poke over by a hair: trim them uniformly.
    peak = true_peak(y, sample_rate)
    if peak > ceiling:
        y = (y * np.float32(ceiling / peak)).astype(np.float32)
        peak = ceiling
    return y, peak


def _oversampled(x: npt.NDArray[np.float32], sample_rate: int) -> npt.NDArray[np.float32]:
    # BS.1770-4 asks for at least 4x for rates up to 48 kHz; above 96 kHz no oversampling is needed.
    return resample(x, sample_rate, sample_rate * 4) if sample_rate < 96000 else x


def _db(linear: float) -> float:
    return 20.0 * math.log10(linear) if linear > 0 else -math.inf


# ---------------------------------------------------------------------------------- rendering


def render(
    pcm: npt.NDArray[np.int16], engine_rate: int, spec: OutputSpec, *, measured_lufs: float | None = None,
) -> EncodedAudio:
    """The engine's mono PCM as the stored object ``spec`` describes.

    A default spec (WAV, engine rate, mono, no loudness) takes the exact path of today's WAV: no
    float round trip, same bytes.
    """
    if pcm.ndim != 1 or pcm.dtype != np.int16:
        raise ValueError("expected mono int16 PCM")
    rate = spec.rate_for(engine_rate)
    loud: Loudness | None = None
    if rate == engine_rate and spec.loudness_lufs is None:
        samples = pcm
    else:
        x = resample(pcm.astype(np.float32) / np.float32(32768.0), engine_rate, rate)
        if spec.loudness_lufs is not None:
            x, loud = normalize(x, rate, spec.loudness_lufs, spec.true_peak_dbtp, measured_lufs=measured_lufs)
        samples = to_int16(x)
    frames = samples.shape[0]
    interleaved = np.repeat(samples, spec.channels) if spec.channels > 1 else samples
    bitrate = spec.bitrate_for(rate)
    if spec.format == "wav":
        data = _wav_bytes(interleaved, rate, spec.channels)
    else:
        data = _sf_bytes(samples, rate, spec, bitrate)
    return _encoded(
        data, spec.format, rate, spec.channels, frames, bitrate=bitrate,
        loudness_lufs=loud.loudness_lufs if loud else None, true_peak_dbtp=loud.true_peak_dbtp if loud else None,
        gain_db=loud.gain_db if loud else None,
    )


def to_int16(x: npt.NDArray[np.float32]) -> npt.NDArray[np.int16]:
    out: npt.NDArray[np.int16] = np.clip(np.rint(x * np.float32(32768.0)), -32768, 32767).astype(np.int16)
    return out


def _encoded(
    data: bytes, fmt: OutputFormat, rate: int, channels: int, frames: int, *, bitrate: int | None = None,
    loudness_lufs: float | None = None, true_peak_dbtp: float | None = None, gain_db: float | None = None,
) -> EncodedAudio:
    return EncodedAudio(data, hashlib.sha256(data).hexdigest(), rate, frames / rate, fmt, channels, frames,
                        bitrate, loudness_lufs, true_peak_dbtp, gain_db)


def _wav_bytes(interleaved: npt.NDArray[np.int16], rate: int, channels: int) -> bytes:
    # torchaudio >= 2.9 needs torchcodec + FFmpeg to save; the RIFF writer of the standard library
    # writes the PCM once, without intermediate copies.
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.ascontiguousarray(interleaved, dtype="<i2").tobytes())
    return buf.getvalue()


def _sf_bytes(samples: npt.NDArray[np.int16], rate: int, spec: OutputSpec, bitrate: int | None) -> bytes:
    import soundfile as sf

    info = spec.info
    kwargs: dict[str, object] = {}
    if bitrate is not None:
        kwargs["compression_level"] = _compression_level(spec.format, rate, spec.channels, bitrate)
    if spec.format == "mp3":
        kwargs["bitrate_mode"] = "CONSTANT"  # CBR: the bitrate asked for is the bitrate stored
    frames = np.repeat(samples[:, None], spec.channels, axis=1) if spec.channels > 1 else samples
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", samplerate=rate, channels=spec.channels, format=info.sf_format,
                      subtype=info.sf_subtype, **kwargs) as f:
        f.write(frames)
    return buf.getvalue()


def _compression_level(fmt: str, rate: int, channels: int, kbps: int) -> float:
    """Invert libsndfile's mapping of its 0..1 compression level onto encoder bitrates.

    libsndfile exposes no bitrate setting, only a level it maps linearly: Opus gets
    ``(1 - level) * 250 + 6`` kbit/s per channel; LAME CBR gets ``max - level * (max - min)`` over
    the MPEG version's range, truncated to an integer (hence the half kbit/s).
    """
    if fmt == "opus":
        level = 1.0 - (kbps * 1000.0 / channels - 6000.0) / 250000.0
    else:
        rng = bitrate_range(fmt, rate, channels)
        assert rng is not None
        lo, hi = rng
        level = (hi - (kbps + 0.5)) / (hi - lo) if kbps < hi else 0.0
    return min(1.0, max(0.0, level))


# ---------------------------------------------------------------------------------- capability


@functools.cache
def encoder_problems() -> dict[str, str]:
    """Formats this build cannot encode, with why: each is tried once on a tenth of a second."""
    problems: dict[str, str] = {}
    tone = (np.sin(np.arange(2205) * 0.1) * 8000).astype(np.int16)
    for name in FORMATS:
        spec = OutputSpec(format=name)  # type: ignore[arg-type]
        try:
            out = render(tone, 22050, spec)
            if not out.data:
                problems[name] = "encoder produced no bytes"
        except Exception as exc:  # any failure means: refuse the format, say why  # noqa: BLE001
            problems[name] = f"{type(exc).__name__}: {exc}"[:300]
    try:
        normalize(resample(tone.astype(np.float32) / 32768, 22050, 48000), 48000, -23.0, -1.0)
    except Exception as exc:  # noqa: BLE001 (an encoder that fails in any way is reported unavailable)
        problems["loudness"] = f"{type(exc).__name__}: {exc}"[:300]
    return problems


def available_formats() -> list[str]:
    bad = encoder_problems()
    return [f for f in FORMATS if f not in bad]


def unavailable(spec: OutputSpec) -> str | None:
    """Why this worker cannot produce ``spec`` (its build lacks an encoder or the loudness meter), or None."""
    bad = encoder_problems()
    if spec.format in bad:
        offered = ", ".join(available_formats())
        return f"this worker cannot encode {spec.format} ({bad[spec.format]}); it offers {offered}"
    if spec.loudness_lufs is not None and "loudness" in bad:
        return f"this worker cannot normalize loudness ({bad['loudness']})"
    return None


# ---------------------------------------------------------------------------------- timing


class Span(Protocol):
    """A segment as the engine reports it (``processor.engine.base.Segment``)."""

    @property
    def index(self) -> int: ...
    @property
    def text(self) -> str: ...
    @property
    def start_sample(self) -> int: ...
    @property
    def end_sample(self) -> int: ...


@dataclass(frozen=True)
class SegmentTiming:
    """Where a segment's speech lies in the stored audio, in seconds from its start."""

    index: int
    text: str
    start_seconds: float
    end_seconds: float


def timeline(spans: Sequence[Span], engine_rate: int, output_rate: int) -> list[SegmentTiming]:
    """Engine sample positions as times in the output.

    Resampling keeps time: a position moves to ``round(t * output_rate)``. Times are rounded to
    whole output samples (and reported in seconds) so they agree with the stored frames.
    """
    def seconds(sample: int) -> float:
        return round(sample * output_rate / engine_rate) / output_rate

    return [SegmentTiming(s.index, s.text, seconds(s.start_sample), seconds(s.end_sample)) for s in spans]


def speech_like_pcm(
    seconds: float, *, sample_rate: int = 22050, f0: float = 140.0, seed: int = 0
) -> npt.NDArray[np.int16]:
    """Voiced harmonics of ``f0`` with vibrato, a syllable-rate envelope and breath noise.

    Passes the reference-audio checks and gives a speaker encoder something voice-like, with no
    download: the engine's warm-up, the demo's preset, tests and benchmarks all use it.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    phase = 2 * np.pi * np.cumsum(f0 * (1.0 + 0.05 * np.sin(2 * np.pi * 5.0 * t))) / sample_rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = 0.5 * (1.0 - np.cos(2 * np.pi * 4.0 * t)) ** 2
    signal = 0.25 * voiced * envelope + 0.01 * rng.standard_normal(t.size)
    return (np.clip(signal / max(1e-9, float(np.abs(signal).max())) * 0.8, -1, 1) * 32767).astype(np.int16)
