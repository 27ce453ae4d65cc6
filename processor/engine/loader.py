"""Engine factories named by INDEX_TTS_ENGINE (``module:callable``), each taking EngineSettings.

The product default (``product``) loads the model family INDEX_TTS_FAMILY names (``indextts2`` or
``indextts2.5``) from INDEX_TTS_MODEL_DIR, fetching the weights first only when
INDEX_TTS_AUTO_DOWNLOAD is on (hub reachable); otherwise missing weights are a clear start-up error.
"""

from __future__ import annotations

import logging
from pathlib import Path

from processor.config import EngineSettings
from processor.engine.base import Engine

log = logging.getLogger(__name__)

HUB_REPOS = {"indextts2": "IndexTeam/IndexTTS-2", "indextts2.5": "IndexTeam/IndexTTS-2.5"}
HUB_REPO = HUB_REPOS["indextts2"]
# What each family's model dir must hold (the auxiliary hub models are checked when loading).
REQUIRED_FILES = {
    "indextts2": ("config.yaml", "gpt.pth", "s2mel.pth", "bpe.model"),
    "indextts2.5": ("config.yaml", "gpt.pth", "s2mel.pth", "codec.pth", "multilingual_zh_ja_yue_char_del.tiktoken",
                    "wav2vec2bert_stats.pt", "feat1.pt", "feat2.pt"),
}
REQUIRED = REQUIRED_FILES["indextts2"]


class ModelMissingError(RuntimeError):
    pass


def missing_files(model_dir: Path, family: str = "indextts2") -> list[str]:
    return [name for name in REQUIRED_FILES[family] if not (model_dir / name).is_file()]


def ensure_weights(settings: EngineSettings, family: str | None = None) -> Path:
    family = family or settings.family
    model_dir = Path(settings.model_dir)
    missing = missing_files(model_dir, family)
    if missing and settings.auto_download:
        from huggingface_hub import snapshot_download

        log.info("downloading %s into %s (INDEX_TTS_AUTO_DOWNLOAD=true)", HUB_REPOS[family], model_dir)
        # IndexTTS-2.5's text-emotion model is not used by the 2.5 engine.
        ignore = ["qwen0.6bemo4-merge/*"] if family == "indextts2.5" else None
        snapshot_download(HUB_REPOS[family], local_dir=str(model_dir), ignore_patterns=ignore)
        missing = missing_files(model_dir, family)
    if missing:
        raise ModelMissingError(
            f"model dir {model_dir} lacks {', '.join(missing)}: put {HUB_REPOS[family].split('/')[1]} checkpoints "
            "there (INDEX_TTS_FAMILY names the model family), or set INDEX_TTS_AUTO_DOWNLOAD=true where the hub "
            "is reachable"
        )
    return model_dir


def product(settings: EngineSettings) -> Engine:
    """The engine INDEX_TTS_FAMILY names."""
    return indextts25(settings) if settings.family == "indextts2.5" else indextts2(settings)


def indextts2(settings: EngineSettings) -> Engine:
    model_dir = ensure_weights(settings, "indextts2")
    from processor.engine.indextts2 import IndexTTS2Engine

    if settings.language not in (None, "zh", "en"):
        raise ValueError(f"IndexTTS2 reads zh and en only; INDEX_TTS_LANGUAGE={settings.language} needs IndexTTS-2.5")
    return IndexTTS2Engine(
        model_dir,
        device=settings.device,
        use_fp16=settings.use_fp16,
        use_deepspeed=settings.use_deepspeed,
        use_cuda_kernel=settings.use_cuda_kernel,
        use_accel=settings.accel,
        attn_backend=settings.attn_backend,
        use_torch_compile=settings.compile,
        hf_home=settings.hf_home,
        hf_offline=not settings.auto_download,
        language=settings.language,
        cache_max_entries=settings.conditioning_cache_entries,
        cache_max_bytes=settings.conditioning_cache_bytes,
    )


def indextts25(settings: EngineSettings) -> Engine:
    model_dir = ensure_weights(settings, "indextts2.5")
    from processor.engine.indextts25 import IndexTTS25Engine

    if settings.attn_backend == "sage":
        raise ValueError("IndexTTS-2.5 has no 'sage' backend: set INDEX_TTS_ATTN_BACKEND to sdpa or flash")
    return IndexTTS25Engine(
        model_dir,
        device=settings.device,
        attn_backend=settings.attn_backend or "sdpa",
        bf16=settings.use_fp16,
        hf_home=settings.hf_home,
        hf_offline=not settings.auto_download,
        language=settings.language,
        diffusion_steps=settings.diffusion_steps,
    )
