"""IndexTTS2 behind the ``Engine`` protocol.

The model is loaded once in the constructor and then driven through ``IndexTTS2.infer_generator``
in streaming mode, so every request runs upstream's own segment loop (text normalisation, BPE,
segmentation, GPT, s2mel, BigVGAN) while this adapter gets control back after each segment for
progress callbacks and cancellation. Three things are added around it, without touching the
package source:

- a subclass overrides the two reference-conditioning methods to use a content-addressed LRU
  (``ConditioningCache``) instead of upstream's one-entry cache, and the audio loader to turn
  undecodable or unusable clips into ``INVALID_REFERENCE_AUDIO``;
- forward hooks / method wrappers on the loaded sub-modules time the GPT, s2mel and vocoder stages;
- every generation suppresses the start-of-mel token, which is no codec code (a sampled one
  would index past the codebook).
"""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import re
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from processor.audio import encode_wav, speech_like_pcm
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
    interval_silence_ms,
    place_segment,
    require_file,
    sampling_kwargs,
    seed_everything,
    segment_pcm,
    timed,
    translate_failure,
)
from processor.engine.conditioning import ConditioningCache, EmotionConditioning, SpeakerConditioning
from processor.engine.families import INDEXTTS2 as CAPABILITIES
from processor.errors import ErrorCode, TtsError

logger = logging.getLogger(__name__)

_ATTN_BACKENDS = (None, "sdpa", "sage", "flash")
# The pre-tokeniser spaces out CJK characters; a preview joins them back.
_CJK = "\u2e80-\ua4cf\uac00-\ud7af\uf900-\ufaff\uff00-\uffef"
_CJK_GAP = re.compile(rf"(?<=[{_CJK}]) +| +(?=[{_CJK},.!?])")


def configure_hub(hf_home: str | Path | None, offline: bool | None) -> None:
    """Point Hugging Face at ``hf_home`` (and offline mode) for the hub downloads IndexTTS2 makes.

    huggingface_hub reads these variables once, at import; when it is already imported (e.g. by
    another library) its ``constants`` module is updated too, which is what its functions and
    transformers' read at call time.
    """
    env: dict[str, str] = {}
    if hf_home is not None:
        home = str(Path(hf_home).resolve())
        env["HF_HOME"] = home
        env["HF_HUB_CACHE"] = os.path.join(home, "hub")
    if offline is None:
        offline = hf_home is not None
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    os.environ.update(env)
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None and env:
        if "HF_HOME" in env:
            setattr(constants, "HF_HOME", env["HF_HOME"])  # noqa: B010
            setattr(constants, "HF_HUB_CACHE", env["HF_HUB_CACHE"])  # noqa: B010
            setattr(constants, "HF_ASSETS_CACHE", os.path.join(env["HF_HOME"], "assets"))  # noqa: B010
        if offline:
            setattr(constants, "HF_HUB_OFFLINE", True)  # noqa: B010
        logger.info("huggingface_hub was imported before the engine; updated its cache/offline settings")


class _RequestState:
    """Per-request data the model subclass reads (the engine is single-threaded)."""

    def __init__(self) -> None:
        self.audio_keys: dict[str, str] = {}  # reference path -> sha256 (the cache key)
        self.use_cache = True
        self.vocoded = 0  # segments through BigVGAN so far


def _build_model_class() -> type[Any]:
    """Subclass IndexTTS2 (imported here, after the hub environment is configured)."""
    from indextts.infer_v2 import IndexTTS2

    class EngineIndexTTS2(IndexTTS2):  # type: ignore[misc]
        """IndexTTS2 with an LRU of reference conditioning and strict reference-audio checks."""

        cond_cache: ConditioningCache
        request: _RequestState
        clock: StageClock

        def _load_and_cut_audio(
            self, audio_path: str, max_audio_length_seconds: float, verbose: bool = False, sr: int | None = None
        ) -> tuple[torch.Tensor, int]:
            load = super()._load_and_cut_audio
            return checked_reference(lambda: load(audio_path, max_audio_length_seconds, verbose, sr))

        def _get_speaker_conditioning(self, spk_audio_prompt: str, verbose: bool = False) -> tuple[Any, ...]:
            def compute() -> SpeakerConditioning:
                self.cache_spk_cond = None  # force upstream to compute; the LRU is the cache
                with self.clock.stage("conditioning"):
                    result = super(EngineIndexTTS2, self)._get_speaker_conditioning(spk_audio_prompt, verbose)
                # Forget upstream's copy so evicted entries really free (GPU) memory.
                self.cache_spk_cond = self.cache_s2mel_style = self.cache_s2mel_prompt = None
                self.cache_mel = self.cache_spk_audio_prompt = None
                return SpeakerConditioning(*result)

            key = self.request.audio_keys.get(spk_audio_prompt)
            if key is None or not self.request.use_cache:
                return compute().as_tuple()
            value = self.cond_cache.get_or_compute("speaker", key, compute)
            assert isinstance(value, SpeakerConditioning)
            return value.as_tuple()

        def _get_emotion_conditioning(self, emo_audio_prompt: str, verbose: bool = False) -> Any:
            def compute() -> EmotionConditioning:
                self.cache_emo_cond = None
                with self.clock.stage("conditioning"):
                    result = super(EngineIndexTTS2, self)._get_emotion_conditioning(emo_audio_prompt, verbose)
                self.cache_emo_cond = self.cache_emo_audio_prompt = None
                return EmotionConditioning(result)

            key = self.request.audio_keys.get(emo_audio_prompt)
            if key is None or not self.request.use_cache:
                return compute().emo_cond_emb
            value = self.cond_cache.get_or_compute("emotion", key, compute)
            assert isinstance(value, EmotionConditioning)
            return value.emo_cond_emb

    return EngineIndexTTS2


def _restore_kv_cache(gpt: Any) -> bool:
    """Make ``GPT2InferenceModel`` use its KV cache again under transformers >= 5.2x.

    Newer ``generate()`` hands the cache over as ``cache=`` (not ``past_key_values=``) and drops
    an all-ones attention mask; upstream's ``prepare_inputs_for_generation`` then sees no cache
    and re-runs the whole sequence every step (quadratic: ~15x slower for 100 tokens on CPU) and
    with another mel position offset than the cached path it was written for. This wrapper maps
    both back; with an older transformers it changes nothing.
    """
    model = gpt.inference_model
    if not getattr(model, "kv_cache", False):
        return False
    original = model.prepare_inputs_for_generation

    # The parameter must be named ``kwargs``: generate() validates its kwargs against this signature.
    def prepare_inputs_for_generation(input_ids: Any, past_key_values: Any = None, **kwargs: Any) -> Any:
        cache = kwargs.pop("cache", None)
        if past_key_values is None:
            past_key_values = cache
        if kwargs.get("attention_mask") is None:
            kwargs["attention_mask"] = torch.ones_like(input_ids)
        return original(input_ids, past_key_values=past_key_values, **kwargs)

    model.prepare_inputs_for_generation = prepare_inputs_for_generation
    return True


class IndexTTS2Engine:
    """The product engine: one IndexTTS2 loaded once, called from one GPU thread."""

    def __init__(
        self,
        model_dir: str | Path,
        *,
        device: str = "auto",
        use_fp16: bool = False,
        use_deepspeed: bool = False,
        use_cuda_kernel: bool | None = None,
        use_accel: bool = False,
        attn_backend: str | None = None,
        use_torch_compile: bool = False,
        hf_home: str | Path | None = None,
        hf_offline: bool | None = None,
        language: str | None = None,
        cache_max_entries: int = 64,
        cache_max_bytes: int = 512 * 1024 * 1024,
        max_text_chars: int = 10_000,
        max_text_tokens: int = 4_000,
        normalize_emotion_vector: bool = True,
    ) -> None:
        """Load the model from ``model_dir`` (upstream checkpoint layout, ``config.yaml`` inside).

        ``device``: ``auto`` (CUDA, XPU, MPS, then CPU), ``cpu``, ``cuda`` or ``cuda:N``.
        ``use_fp16`` is ignored on CPU (upstream forces fp32 there). ``use_accel`` /
        ``attn_backend="flash"`` need flash-attn and CUDA; ``attn_backend="sage"`` needs
        sageattention. ``hf_home`` (with ``hf_offline``, default on when ``hf_home`` is given)
        is where the hub-hosted parts (w2v-BERT, MaskGCT codec, CAMPPlus, BigVGAN) are cached.
        ``max_text_chars`` / ``max_text_tokens`` bound one request (``TEXT_TOO_LONG`` beyond).
        ``normalize_emotion_vector`` applies the model's ``normalize_emo_vec`` (upstream web UI
        behaviour: per-emotion bias, total capped at 0.8) to explicit emotion vectors.
        """
        if not DEVICE_RE.match(device):
            raise ValueError(f"device must be auto, cpu, cuda, cuda:N, mps or xpu, not {device!r}")
        if attn_backend not in _ATTN_BACKENDS:
            raise ValueError(f"attn_backend must be one of {_ATTN_BACKENDS}, not {attn_backend!r}")
        model_path = Path(model_dir)
        if not (model_path / "config.yaml").is_file():
            raise FileNotFoundError(f"no config.yaml in model dir {model_path}")
        self._max_text_chars = max_text_chars
        self._max_text_tokens = max_text_tokens
        self._normalize_emotion_vector = normalize_emotion_vector
        self._lock = threading.Lock()
        self.cache = ConditioningCache(max_entries=cache_max_entries, max_bytes=cache_max_bytes)

        configure_hub(hf_home, hf_offline)
        started = time.perf_counter()
        model_class = _build_model_class()
        imported = time.perf_counter()
        resolved_device = None if device == "auto" else ("cuda:0" if device == "cuda" else device)
        tts = model_class(
            model_dir=str(model_path),
            cfg_path=str(model_path / "config.yaml"),
            use_fp16=use_fp16,
            device=resolved_device,
            use_cuda_kernel=use_cuda_kernel,
            use_deepspeed=use_deepspeed,
            use_accel=use_accel,
            use_torch_compile=use_torch_compile,
            language=language,
            attn_backend=None if attn_backend == "sdpa" else attn_backend,
        )
        loaded = time.perf_counter()
        self._tts: Any = tts
        self._request = _RequestState()
        is_cuda = str(tts.device).startswith("cuda")
        self._clock = StageClock(torch.cuda.synchronize if is_cuda else (lambda: None))
        tts.cond_cache = self.cache
        tts.request = self._request
        tts.clock = self._clock
        self._install_stage_hooks()
        kv_cache = _restore_kv_cache(tts.gpt)

        cfg = tts.cfg
        self.sample_rate = int(cfg.s2mel.preprocess_params.sr)
        self._max_mel_tokens = int(cfg.gpt.max_mel_tokens)
        self._max_segment_tokens = int(cfg.gpt.max_text_tokens)
        self._start_mel_token = int(cfg.gpt.start_mel_token)
        gpt = tts.gpt
        flags = {
            "use_fp16": str(bool(tts.use_fp16)).lower(),
            "use_deepspeed": str(hasattr(gpt, "ds_engine")).lower(),
            "use_cuda_kernel": str(bool(tts.use_cuda_kernel)).lower(),
            "use_accel": str(getattr(gpt, "accel_engine", None) is not None).lower(),
            "attn_backend": attn_backend or "sdpa",
            "use_torch_compile": str(bool(use_torch_compile)).lower(),
            "gpt_kv_cache": str(kv_cache).lower(),
            "sample_rate": str(self.sample_rate),
            "import_seconds": f"{imported - started:.3f}",
        }
        if use_deepspeed and flags["use_deepspeed"] == "false":
            logger.warning("DeepSpeed requested but not active (not installed, or not on CUDA)")
        version = getattr(cfg, "version", None)
        self._info = ModelInfo(
            model_type=str(cfg.get("model_type", "indextts2")),
            model_version=str(version) if version is not None else "unknown",
            device=str(tts.device),
            precision="fp16" if tts.use_fp16 else "fp32",
            flags=flags,
            load_seconds=loaded - imported,
            engine="indextts2",
            backend=flags["attn_backend"],
            capabilities=CAPABILITIES,
            sample_rate=self.sample_rate,
        )
        logger.info("IndexTTS2 loaded: %s", self._info)

    # -- Engine protocol ------------------------------------------------------------------------

    @property
    def info(self) -> ModelInfo:
        return self._info

    def warm_up(self) -> None:
        """One real, short synthesis (numba/librosa JIT, kernel selection, allocator warm-up)."""
        with tempfile.TemporaryDirectory(prefix="tts-warmup-") as tmp:
            path = Path(tmp) / "warmup.wav"
            write_harmonic_wav(path, seconds=2.0, sample_rate=self.sample_rate)
            spec = SynthesisSpec(
                request_id="warm-up",
                text="Hello world.",
                voice=LocalAudio(path=path, sha256=hashlib.sha256(path.read_bytes()).hexdigest()),
                generation=GenerationSettings(max_mel_tokens=min(30, self._max_mel_tokens)),
            )
            self._synthesize(spec, None, use_cache=False)

    def segment_text(self, text: str, max_text_tokens_per_segment: int) -> list[str]:
        return self._segment_texts(self._tokenize_checked(text, max_text_tokens_per_segment),
                                   max_text_tokens_per_segment)

    def synthesize(self, spec: SynthesisSpec, on_progress: ProgressCallback | None = None) -> Synthesized:
        return self._synthesize(spec, on_progress, use_cache=True)

    # -- internals ------------------------------------------------------------------------------

    def _install_stage_hooks(self) -> None:
        tts, clock, request = self._tts, self._clock, self._request

        # Each segment runs merge_emovec -> inference_speech -> gpt(...) -> gpt_layer -> ... ->
        # cfm -> bigvgan; switching at the entry points bills everything in between correctly.
        tts.gpt.merge_emovec = timed(clock, "gpt", tts.gpt.merge_emovec)
        tts.gpt.inference_speech = timed(clock, "gpt", tts.gpt.inference_speech)

        def before_s2mel(*_: Any) -> None:
            clock.switch("s2mel")

        def before_vocoder(*_: Any) -> None:
            clock.switch("vocoder")

        def after_vocoder(*_: Any) -> None:
            clock.switch("other")
            request.vocoded += 1

        tts.s2mel.models["gpt_layer"].register_forward_pre_hook(before_s2mel)
        tts.bigvgan.register_forward_pre_hook(before_vocoder)
        tts.bigvgan.register_forward_hook(after_vocoder)

        classify = tts.qwen_emo.inference

        def classify_emotion(text: str) -> Any:
            with clock.stage("emotion_text"):
                return classify(text)

        tts.qwen_emo.inference = classify_emotion

    def _tokenize_checked(self, text: str, max_text_tokens_per_segment: int) -> list[str]:
        if not isinstance(text, str) or not text.strip():
            raise TtsError(ErrorCode.INVALID_REQUEST, "text is empty")
        if len(text) > self._max_text_chars:
            raise TtsError(ErrorCode.TEXT_TOO_LONG, f"text has {len(text)} characters, limit {self._max_text_chars}")
        if not 1 <= max_text_tokens_per_segment <= self._max_segment_tokens:
            raise TtsError(
                ErrorCode.INVALID_REQUEST,
                f"max_text_tokens_per_segment must be within 1..{self._max_segment_tokens}",
            )
        tokens: list[str] = list(self._tts.tokenizer.tokenize(text))
        if not tokens:
            raise TtsError(ErrorCode.INVALID_REQUEST, "text has nothing to speak after normalisation")
        if len(tokens) > self._max_text_tokens:
            raise TtsError(ErrorCode.TEXT_TOO_LONG, f"text has {len(tokens)} tokens, limit {self._max_text_tokens}")
        return tokens

    def _generation_kwargs(self, settings: GenerationSettings) -> dict[str, Any]:
        kwargs = sampling_kwargs(settings, self._max_mel_tokens)
        # The start-of-mel token is no codec code: sampling it would index past the codebook.
        kwargs["suppress_tokens"] = [self._start_mel_token]
        # An immediate stop would give an empty segment, which s2mel cannot render.
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
            self._request.audio_keys[str(emotion.audio.path)] = emotion.audio.sha256
            return {"emo_audio_prompt": str(emotion.audio.path), "emo_alpha": alpha}
        if emotion.mode == "vector":
            vector = emotion_vector(emotion.vector)
            if self._normalize_emotion_vector:
                vector = list(self._tts.normalize_emo_vec(vector, apply_bias=True))
            return {"emo_vector": [float(v) for v in vector], "emo_alpha": alpha}
        if emotion.mode == "text":
            # None makes infer_v2 classify the spoken text itself.
            text = emotion.text if emotion.text and emotion.text.strip() else None
            return {"use_emo_text": True, "emo_text": text, "emo_alpha": alpha}
        raise TtsError(ErrorCode.INVALID_REQUEST, f"unknown emotion mode {emotion.mode!r}")

    def _synthesize(self, spec: SynthesisSpec, on_progress: ProgressCallback | None, *, use_cache: bool) -> Synthesized:
        with self._lock:
            return self._synthesize_locked(spec, on_progress, use_cache=use_cache)

    def _synthesize_locked(
        self, spec: SynthesisSpec, on_progress: ProgressCallback | None, *, use_cache: bool
    ) -> Synthesized:
        tts = self._tts
        request = self._request
        request.audio_keys = {}
        request.use_cache = use_cache
        request.vocoded = 0

        tokens = self._tokenize_checked(spec.text, spec.max_text_tokens_per_segment)
        expected = len(tts.tokenizer.split_segments(tokens, spec.max_text_tokens_per_segment))
        generation = self._generation_kwargs(spec.generation)
        emotion = self._emotion_kwargs(spec)
        silence_ms = interval_silence_ms(spec.interval_silence_ms)
        require_file(spec.voice)
        request.audio_keys[str(spec.voice.path)] = spec.voice.sha256

        seed_everything(spec.seed)
        self._clock.reset()
        started = time.perf_counter()
        stream = tts.infer_generator(
            str(spec.voice.path),
            spec.text,
            None,
            use_random=spec.use_random,
            interval_silence=silence_ms,
            verbose=False,
            max_text_tokens_per_segment=spec.max_text_tokens_per_segment,
            stream_return=True,
            quick_streaming_tokens=0,
            **emotion,
            **generation,
        )
        texts = self._segment_texts(tokens, spec.max_text_tokens_per_segment)
        silence = np.zeros(int(self.sample_rate * silence_ms / 1000.0), dtype=np.int16)
        chunks: list[npt.NDArray[np.int16]] = []
        spans: list[Segment] = []
        position = 0  # samples emitted so far
        failure: Exception | None = None
        try:
            while True:
                try:
                    item = next(stream)
                except StopIteration:
                    break
                except TtsError:
                    raise
                except Exception as exc:  # noqa: BLE001 (kept and turned into a stable error code below)
                    failure = exc
                    break
                # The stream interleaves segment audio with silence; the vocoder hook tells them apart.
                if request.vocoded <= len(spans):
                    continue
                index = len(spans) + 1
                speech = segment_pcm(item, index, scale=32767)  # float in [-1, 1], as infer_v2 converts it
                text = texts[index - 1] if index <= len(texts) else ""
                chunk, span = place_segment(speech, index, expected, position, silence, text)
                position += len(chunk)
                chunks.append(chunk)
                spans.append(span)
                if on_progress is not None:
                    # The callback may raise (timeout, cancellation): let it through unchanged.
                    on_progress(span, chunk)
        finally:
            stream.close()  # releases the generator's tensors before any clean-up below
        if failure is not None:
            raise translate_failure(failure, "IndexTTS2", self._free_memory, logger) from failure
        return finish_synthesis(chunks, spans, self._clock, started, self.sample_rate)

    def _segment_texts(self, tokens: list[str], max_text_tokens_per_segment: int) -> list[str]:
        tokenizer = self._tts.tokenizer
        segments = tokenizer.split_segments(tokens, max_text_tokens_per_segment)
        # The normalised text each segment speaks (upstream's decode() garbles Latin words).
        return [_CJK_GAP.sub("", str(tokenizer.sp_model.DecodePieces(seg))).strip() for seg in segments]

    def _free_memory(self) -> None:
        """After an OOM: drop every cached tensor we own so the next request has room."""
        self.cache.clear()
        self._tts._init_cache()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def write_harmonic_wav(
    path: Path, *, seconds: float, sample_rate: int = 22050, f0: float = 140.0, seed: int = 0
) -> None:
    """Write a speech-like clip (``processor.audio.speech_like_pcm``) as a WAV file."""
    pcm = speech_like_pcm(seconds, sample_rate=sample_rate, f0=f0, seed=seed)
    path.write_bytes(encode_wav(pcm, sample_rate).data)
