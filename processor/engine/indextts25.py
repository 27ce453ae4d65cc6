"""IndexTTS-2.5 behind the ``Engine`` protocol (package ``indextts25-inference``, module ``indextts25``).

The model is loaded once in the constructor and driven through ``infer_generator`` in streaming
mode with ``emit_text``, so every request runs the package's own pipeline (text normalisation,
tiktoken, segmentation, GPT, codec, s2mel, BigVGAN) and this adapter gets each segment back with
the normalised text that produced it. Around it, without touching the package source:

- a subclass turns undecodable or unusable reference clips into ``INVALID_REFERENCE_AUDIO`` and
  memoises the text preparation, so the text is normalised, split and bounded *before* any
  conditioning or GPT work (a request that is too long costs no GPU time);
- method wrappers / forward hooks time the conditioning, GPT, s2mel and vocoder stages;
- with the ``sdpa`` backend every generation suppresses the start-of-mel token (no codec code)
  and asks for at least one code, as the IndexTTS2 adapter does.

IndexTTS-2.5 has no text-emotion classifier: emotion ``text`` is refused by the capability check
(``processor.capabilities``) before the request reaches this class.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import importlib.util
import logging
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from processor.engine.base import (
    GenerationSettings,
    LocalAudio,
    ModelInfo,
    ProgressCallback,
    Segment,
    SynthesisSpec,
    Synthesized,
)
from processor.engine.common import (
    DEVICE_RE,
    StageClock,
    checked_reference,
    emotion_alpha,
    emotion_vector,
    finish_synthesis,
    finite_number,
    interval_silence_ms,
    place_segment,
    require_file,
    sampling_kwargs,
    seed_everything,
    segment_pcm,
    timed,
    translate_failure,
)
from processor.engine.families import INDEXTTS25 as CAPABILITIES
from processor.engine.families import SPEED_MAX, SPEED_MIN, detect_language
from processor.engine.indextts2 import configure_hub, write_harmonic_wav
from processor.errors import ErrorCode, TtsError

logger = logging.getLogger(__name__)

ENGINE = "indextts2.5"
ATTN_BACKENDS = ("sdpa", "flash")
# Explicit emotion vectors are capped at this total, the rest staying with the voice's own emotion
# (the package's guidance; IndexTTS2's normalisation uses the same cap).
EMOTION_VECTOR_CAP = 0.8

class _RequestState:
    """Per-request data the model subclass reads (the engine is single-threaded)."""

    def __init__(self) -> None:
        self.prepared: tuple[str, str, str] | None = None  # (text, lang, prepared text)
        self.segments: tuple[str, int, str, list[str]] | None = None  # (text, budget, prefix, segments)


def _build_model_class() -> type[Any]:
    """Subclass the package's model (imported here, after the hub environment is configured)."""
    from indextts25.infer_v2_5 import IndexTTS2 as IndexTTS25Model

    class EngineIndexTTS25(IndexTTS25Model):  # type: ignore[misc]
        request: _RequestState
        clock: StageClock

        def _load_and_cut_audio(
            self, audio_path: str, max_audio_length_seconds: float, verbose: bool = False, sr: int | None = None
        ) -> tuple[torch.Tensor, int]:
            load = super()._load_and_cut_audio
            return checked_reference(lambda: load(audio_path, max_audio_length_seconds, verbose, sr))

        def _speaker_conditioning(self, path: str, key: Any, verbose: bool = False) -> Any:
            with self.clock.stage("conditioning"):
                return super()._speaker_conditioning(path, key, verbose)

        def _emotion_conditioning(self, path: str, key: Any, verbose: bool = False) -> Any:
            with self.clock.stage("conditioning"):
                return super()._emotion_conditioning(path, key, verbose)

        # The engine prepares and splits the text itself before calling infer_generator (to bound
        # it before any GPU work); these hand the generator the same results instead of redoing them.
        def _prepare_text(self, text: str, lang: str, text_normalization: bool = True, verbose: bool = False) -> str:
            memo = self.request.prepared
            if memo is not None and memo[0] == text and memo[1] == lang:
                return memo[2]
            return str(super()._prepare_text(text, lang, text_normalization, verbose))

        def split_text_by_tokens(self, text: str, max_tokens: int, lang_prefix: str = "") -> list[str]:
            memo = self.request.segments
            if memo is not None and memo[0] == text and memo[1] == max_tokens and memo[2] == lang_prefix:
                return list(memo[3])
            return list(super().split_text_by_tokens(text, max_tokens, lang_prefix))

    return EngineIndexTTS25


class IndexTTS25Engine:
    """IndexTTS-2.5: one model loaded once, called from one GPU thread."""

    def __init__(
        self,
        model_dir: str | Path,
        *,
        device: str = "auto",
        attn_backend: str = "sdpa",
        bf16: bool = False,
        hf_home: str | Path | None = None,
        hf_offline: bool | None = None,
        language: str | None = None,
        max_text_chars: int = 10_000,
        max_text_tokens: int = 4_000,
        normalize_emotion_vector: bool = True,
        diffusion_steps: int | None = None,
    ) -> None:
        """Load the model from ``model_dir`` (IndexTTS-2.5 layout, ``config.yaml`` inside).

        ``attn_backend``: ``sdpa`` (transformers, any device) or ``flash`` (the package's
        accelerated GPT decoder: paged KV cache and CUDA graphs; needs CUDA and an importable
        ``flash_attn``, else this raises at start-up). ``bf16`` runs the GPT in bfloat16 (CUDA
        only; ignored on CPU and MPS). ``language``: the default for requests without one
        (``None``: detect it from the text). ``hf_home``: where the auxiliary models (w2v-BERT,
        CAMPPlus, BigVGAN) are cached when ``model_dir`` has no ``hf_cache/``. ``diffusion_steps``:
        the s2mel's Euler steps (``None``: the package's 25); fewer trade quality for latency.
        """
        if not DEVICE_RE.match(device):
            raise ValueError(f"device must be auto, cpu, cuda, cuda:N, mps or xpu, not {device!r}")
        if attn_backend not in ATTN_BACKENDS:
            raise ValueError(f"IndexTTS-2.5 attn_backend must be one of {ATTN_BACKENDS}, not {attn_backend!r}")
        if language is not None and language not in CAPABILITIES.languages:
            raise ValueError(f"IndexTTS-2.5 language must be one of {CAPABILITIES.languages}, not {language!r}")
        resolved_device = _resolve_device(device)
        if attn_backend == "flash":
            if not resolved_device.startswith("cuda"):
                raise ValueError(f"attn_backend 'flash' needs a CUDA device (device resolves to {resolved_device})")
            if importlib.util.find_spec("flash_attn") is None:
                raise ValueError(
                    "attn_backend 'flash' needs the flash-attn package, which is not importable here: install a "
                    "flash-attn wheel matching this torch and CUDA, or set INDEX_TTS_ATTN_BACKEND=sdpa"
                )
        model_path = Path(model_dir)
        if not (model_path / "config.yaml").is_file():
            raise FileNotFoundError(f"no config.yaml in model dir {model_path}")
        self._language = language
        self._max_text_chars = max_text_chars
        self._max_text_tokens = max_text_tokens
        self._normalize_emotion_vector = normalize_emotion_vector
        if diffusion_steps is not None and not 1 <= diffusion_steps <= 100:
            raise ValueError("diffusion_steps must be within 1..100")
        self._diffusion_steps = diffusion_steps
        self._lock = threading.Lock()

        configure_hub(hf_home, hf_offline)
        started = time.perf_counter()
        model_class = _build_model_class()
        imported = time.perf_counter()
        tts = model_class(
            cfg_path=str(model_path / "config.yaml"),
            model_dir=str(model_path),
            use_bf16=bf16,
            device=resolved_device,
            use_accel=attn_backend == "flash",
        )
        loaded = time.perf_counter()
        self._tts: Any = tts
        self._request = _RequestState()
        is_cuda = str(tts.device).startswith("cuda")
        self._clock = StageClock(torch.cuda.synchronize if is_cuda else (lambda: None))
        tts.request = self._request
        tts.clock = self._clock
        self._install_stage_hooks()

        from indextts25.infer_v2_5 import SAMPLE_RATE

        cfg = tts.cfg
        self.sample_rate = int(SAMPLE_RATE)
        self._max_mel_tokens = int(cfg.gpt.max_mel_tokens)
        self._start_mel_token = int(cfg.gpt.start_mel_token)
        self._attn_backend = attn_backend
        accel = getattr(tts.gpt, "accel_engine", None) is not None
        import indextts25

        flags = {
            "package": f"indextts25-inference {getattr(indextts25, '__version__', 'unknown')}",
            "attn_backend": attn_backend,
            "gpt_bf16": str(bool(tts.use_bf16)).lower(),
            "use_accel": str(accel).lower(),
            "default_language": language or "detect",
            "sample_rate": str(self.sample_rate),
            "import_seconds": f"{imported - started:.3f}",
        }
        version = cfg.get("version", None)
        self._info = ModelInfo(
            model_type=str(cfg.get("model_type", "indextts2.5")),
            model_version=str(version) if version is not None else "unknown",
            device=str(tts.device),
            precision="bf16" if tts.use_bf16 else "fp32",
            flags=flags,
            load_seconds=loaded - imported,
            engine=ENGINE,
            backend=attn_backend,
            capabilities=CAPABILITIES,
            sample_rate=self.sample_rate,
        )
        logger.info("IndexTTS-2.5 loaded: %s", self._info)

    # -- Engine protocol ------------------------------------------------------------------------

    @property
    def info(self) -> ModelInfo:
        return self._info

    def warm_up(self) -> None:
        """One real, short synthesis (numba/librosa JIT, the default language's grammar, kernels)."""
        with tempfile.TemporaryDirectory(prefix="tts-warmup-") as tmp:
            path = Path(tmp) / "warmup.wav"
            write_harmonic_wav(path, seconds=2.0, sample_rate=self.sample_rate)
            spec = SynthesisSpec(
                request_id="warm-up",
                text="Hello world." if self._language in (None, "en") else _WARM_TEXT[self._language],
                voice=LocalAudio(path=path, sha256=hashlib.sha256(path.read_bytes()).hexdigest()),
                generation=GenerationSettings(max_mel_tokens=min(30, self._max_mel_tokens)),
            )
            self._synthesize(spec, None)

    def segment_text(self, text: str, max_text_tokens_per_segment: int) -> list[str]:
        lang = self.language_for(text, None)
        return [s.strip() for s in self._prepare(text, lang, max_text_tokens_per_segment)]

    def synthesize(self, spec: SynthesisSpec, on_progress: ProgressCallback | None = None) -> Synthesized:
        return self._synthesize(spec, on_progress)

    # -- internals ------------------------------------------------------------------------------

    def language_for(self, text: str, requested: str | None) -> str:
        if requested is not None:
            if requested not in CAPABILITIES.languages:
                raise TtsError(ErrorCode.UNSUPPORTED_CAPABILITY, f"IndexTTS-2.5 does not speak language {requested!r}")
            return requested
        if self._language is not None:
            return self._language
        return detect_language(text)

    def _install_stage_hooks(self) -> None:
        tts, clock = self._tts, self._clock

        # Per segment: inference_speech (GPT) -> codec decode + length regulator + CFM (s2mel) -> BigVGAN.
        tts.gpt.merge_emovec = timed(clock, "gpt", tts.gpt.merge_emovec)
        tts.gpt.inference_speech = timed(clock, "gpt", tts.gpt.inference_speech)
        tts.semantic_codec.decode = timed(clock, "s2mel", tts.semantic_codec.decode)

        def before_vocoder(*_: Any) -> None:
            clock.switch("vocoder")

        def after_vocoder(*_: Any) -> None:
            clock.switch("other")

        tts.bigvgan.register_forward_pre_hook(before_vocoder)
        tts.bigvgan.register_forward_hook(after_vocoder)

    def _prepare(self, text: str, lang: str, max_text_tokens_per_segment: int) -> list[str]:
        """Normalise and split ``text`` as infer_generator will (memoised for it); enforce the bounds."""
        if not isinstance(text, str) or not text.strip():
            raise TtsError(ErrorCode.INVALID_REQUEST, "text is empty")
        if len(text) > self._max_text_chars:
            raise TtsError(ErrorCode.TEXT_TOO_LONG, f"text has {len(text)} characters, limit {self._max_text_chars}")
        capacity = int(self._tts.gpt.text_pos_embedding.emb.num_embeddings) - 2
        if not 1 <= max_text_tokens_per_segment <= capacity:
            raise TtsError(ErrorCode.INVALID_REQUEST, f"max_text_tokens_per_segment must be within 1..{capacity}")
        tts, request = self._tts, self._request
        if not any(c.isalnum() for c in text):
            raise TtsError(ErrorCode.INVALID_REQUEST, "text has nothing to speak")
        request.prepared = request.segments = None
        with self._clock.stage("text"):
            prepared = str(tts._prepare_text(text, lang, True, False))
            request.prepared = (text, lang, prepared)
            tokens = len(tts.tokenizer.encode(prepared, allowed_special="all"))
            if tokens > self._max_text_tokens:
                raise TtsError(ErrorCode.TEXT_TOO_LONG, f"text has {tokens} tokens, limit {self._max_text_tokens}")
            prefix = f"<|{lang}|> "
            segments = [s for s in tts.split_text_by_tokens(prepared, max_text_tokens_per_segment, prefix) if s.strip()]
        if not segments or not any(c.isalnum() for c in prepared):
            raise TtsError(ErrorCode.INVALID_REQUEST, "text has nothing to speak after normalisation")
        request.segments = (prepared, max_text_tokens_per_segment, prefix, segments)
        return segments

    def _generation_kwargs(self, settings: GenerationSettings) -> dict[str, Any]:
        kwargs = sampling_kwargs(settings, self._max_mel_tokens)
        if self._diffusion_steps is not None:
            kwargs["diffusion_steps"] = self._diffusion_steps
        if self._attn_backend == "sdpa":
            # transformers' generate(): the start-of-mel token is no codec code, and an immediate stop
            # would leave a segment with nothing to render. (The flash decoder takes neither knob.)
            kwargs["suppress_tokens"] = [self._start_mel_token]
            kwargs["min_new_tokens"] = 1
        return kwargs

    def _emotion_kwargs(self, spec: SynthesisSpec) -> dict[str, Any]:
        emotion = spec.emotion
        alpha = emotion_alpha(emotion.alpha)
        if emotion.mode == "same_as_voice":
            return {}
        if emotion.mode == "reference":
            if emotion.audio is None:
                raise TtsError(ErrorCode.INVALID_REQUEST, "emotion mode 'reference' needs an audio clip")
            require_file(emotion.audio)
            return {"emo_audio_prompt": str(emotion.audio.path), "emo_alpha": alpha}
        if emotion.mode == "vector":
            vector = emotion_vector(emotion.vector)
            total = sum(vector)
            if self._normalize_emotion_vector and total > EMOTION_VECTOR_CAP:
                vector = [v * EMOTION_VECTOR_CAP / total for v in vector]
            return {"emo_vector": [float(v) for v in vector], "emo_alpha": alpha}
        raise TtsError(ErrorCode.UNSUPPORTED_CAPABILITY, f"IndexTTS-2.5 does not support emotion mode {emotion.mode!r}")

    def _synthesize(self, spec: SynthesisSpec, on_progress: ProgressCallback | None) -> Synthesized:
        with self._lock:
            try:
                return self._synthesize_locked(spec, on_progress)
            finally:
                self._request.prepared = self._request.segments = None

    def _synthesize_locked(self, spec: SynthesisSpec, on_progress: ProgressCallback | None) -> Synthesized:
        speed = finite_number(spec.speed, "speed")
        if not SPEED_MIN <= speed <= SPEED_MAX:
            raise TtsError(ErrorCode.INVALID_REQUEST, f"speed must be within [{SPEED_MIN}, {SPEED_MAX}]")
        lang = self.language_for(spec.text, spec.language)
        generation = self._generation_kwargs(spec.generation)
        emotion = self._emotion_kwargs(spec)
        silence_ms = interval_silence_ms(spec.interval_silence_ms)
        require_file(spec.voice)
        self._clock.reset()
        started = time.perf_counter()
        segments = self._prepare(spec.text, lang, spec.max_text_tokens_per_segment)
        expected = len(segments)

        seed_everything(spec.seed)
        stream = self._tts.infer_generator(
            str(spec.voice.path),
            spec.text,
            None,
            lang,
            use_random=spec.use_random,
            interval_silence=silence_ms,
            verbose=False,
            max_text_tokens_per_segment=spec.max_text_tokens_per_segment,
            stream_return=True,
            duration_factor=speed,
            text_normalization=True,
            emit_text=True,
            **emotion,
            **generation,
        )
        silence = np.zeros(int(self.sample_rate * silence_ms / 1000.0), dtype=np.int16)
        chunks: list[npt.NDArray[np.int16]] = []
        spans: list[Segment] = []
        position = 0
        failure: Exception | None = None
        try:
            while True:
                try:
                    wav, text = next(stream)
                except StopIteration:
                    break
                except TtsError:
                    raise
                except Exception as exc:  # noqa: BLE001 (kept and turned into a stable error code below)
                    failure = exc
                    break
                if not text:
                    continue  # the package's own pause between segments; ours goes into the chunks
                index = len(spans) + 1
                speech = segment_pcm(wav, index)  # the package yields int16-scaled float
                chunk, span = place_segment(speech, index, expected, position, silence, str(text).strip())
                position += len(chunk)
                chunks.append(chunk)
                spans.append(span)
                if on_progress is not None:
                    on_progress(span, chunk)  # may raise (timeout, cancellation): let it through
        finally:
            stream.close()
        if failure is not None:
            raise translate_failure(failure, "IndexTTS-2.5", self._free_memory, logger) from failure
        return finish_synthesis(chunks, spans, self._clock, started, self.sample_rate)

    def _free_memory(self) -> None:
        """After an OOM: drop the package's conditioning caches so the next request has room."""
        for name in ("_spk_cache", "_emo_cache", "_emovec_cache"):
            with contextlib.suppress(AttributeError):
                getattr(self._tts, name).clear()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


_WARM_TEXT = {"zh": "你好。", "ja": "こんにちは。", "es": "Hola.", "ar": "مرحبا.", "en": "Hello world."}


def _resolve_device(device: str) -> str:
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda:0"
        if hasattr(torch, "xpu") and torch.xpu.is_available():
            return "xpu"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    return "cuda:0" if device == "cuda" else device
