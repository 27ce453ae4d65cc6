"""Engine factories named by INDEX_TTS_ENGINE (``module:callable``), each taking EngineSettings.

The product default builds IndexTTS2 from INDEX_TTS_MODEL_DIR, fetching the weights first only when
INDEX_TTS_AUTO_DOWNLOAD is on (hub reachable); otherwise missing weights are a clear start-up error.
"""

from __future__ import annotations

import logging
from pathlib import Path

from processor.config import EngineSettings
from processor.engine.base import Engine

log = logging.getLogger(__name__)

HUB_REPO = "IndexTeam/IndexTTS-2"
REQUIRED = ("config.yaml", "gpt.pth", "s2mel.pth", "bpe.model")


class ModelMissingError(RuntimeError):
    pass


def missing_files(model_dir: Path) -> list[str]:
    return [name for name in REQUIRED if not (model_dir / name).is_file()]


def ensure_weights(settings: EngineSettings) -> Path:
    model_dir = Path(settings.model_dir)
    missing = missing_files(model_dir)
    if missing and settings.auto_download:
        from huggingface_hub import snapshot_download

        log.info("downloading %s into %s (INDEX_TTS_AUTO_DOWNLOAD=true)", HUB_REPO, model_dir)
        snapshot_download(HUB_REPO, local_dir=str(model_dir))
        missing = missing_files(model_dir)
    if missing:
        raise ModelMissingError(
            f"model dir {model_dir} lacks {', '.join(missing)}: put IndexTTS-2 checkpoints there, "
            "or set INDEX_TTS_AUTO_DOWNLOAD=true where the hub is reachable"
        )
    return model_dir


def indextts2(settings: EngineSettings) -> Engine:
    model_dir = ensure_weights(settings)
    from processor.engine.indextts2 import IndexTTS2Engine

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
