"""Pay IndexTTS2's one-time first-use costs at install / image-build time, not on the first request.

    python scripts/warm_caches.py [--model-dir DIR] [--device cpu]

Always (no model, no GPU, no network needed):
- librosa's numba kernels (compiled on first import/use, cached under NUMBA_CACHE_DIR or the
  package's __pycache__): ~17 s on 2 cores;
- NeMo text-normalisation grammars for zh and en (compiled to .far files in
  ``indextts/utils/nemo_cache`` inside the installed package, so run this as the user that owns
  the environment): ~60 s.

With ``--model-dir`` (a complete model; hub parts from ``--hf-home`` or $HF_HOME), it also loads
``IndexTTS2Engine`` and runs its ``warm_up()`` synthesis, which exercises everything else.

Self-contained on purpose (numpy + stdlib for the test clip): the container image copies only this
file next to the virtual environment.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import wave
from collections.abc import Callable
from pathlib import Path


def _write_clip(path: Path, sample_rate: int = 22050, seconds: float = 1.5) -> None:
    import numpy as np

    t = np.arange(int(seconds * sample_rate)) / sample_rate
    phase = 2 * np.pi * np.cumsum(140.0 * (1 + 0.05 * np.sin(2 * np.pi * 5 * t))) / sample_rate
    signal = sum(np.sin(k * phase) / k for k in range(1, 10)) * (0.5 - 0.5 * np.cos(2 * np.pi * 3 * t))
    pcm = (signal / np.abs(signal).max() * 0.7 * 32767).astype(np.int16)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm.tobytes())


def warm_numba() -> None:
    """Run the librosa paths IndexTTS2 uses (load + resample, mel filterbank) once."""
    import librosa
    import torch
    from indextts.s2mel.modules.audio import mel_spectrogram

    with tempfile.TemporaryDirectory(prefix="warm-") as tmp:
        clip = Path(tmp) / "clip.wav"
        _write_clip(clip)
        audio, sr = librosa.load(str(clip))
        librosa.load(str(clip), sr=16000)
    mel_spectrogram(
        torch.tensor(audio).unsqueeze(0),
        n_fft=1024,
        num_mels=80,
        sampling_rate=sr,
        hop_size=256,
        win_size=1024,
        fmin=0,
        fmax=None,
        center=False,
    )


def warm_nemo() -> None:
    """Compile (or verify) the zh + en NeMo grammars exactly as IndexTTS2 loads them."""
    from indextts.utils.front import TextNormalizer

    normalizer = TextNormalizer(enable_glossary=True)
    normalizer.load()
    for text in ("Hello world, it is 10:30 on May 5th, 2024.", "你好, 今天是2024年5月5日."):
        if not normalizer.normalize(text):
            raise RuntimeError(f"text normaliser returned nothing for {text!r}")


def warm_nemo25() -> None:
    """Build (or load) IndexTTS-2.5's NeMo grammars for the languages it normalises.

    ``indextts25`` pickles each built grammar under ``$XDG_CACHE_HOME/indextts25/nemo_tn`` (default
    ``~/.cache``); Japanese has no grammar (its text goes through the kana G2P instead).
    """
    from indextts25.utils.nemo_tn import get_text_normalizer

    normalizer = get_text_normalizer()
    for lang, text in (("en", "It is 10:30."), ("es", "Son las 10:30."), ("zh", "今天是5月5日."), ("ar", "العدد 5.")):
        if normalizer._get_normalizer(lang) is None:  # the package degrades to raw text; here that is an error
            raise RuntimeError(f"IndexTTS-2.5 NeMo grammar for {lang!r} could not be built")
        normalizer.normalize(text, lang)


def warm_engine(model_dir: Path, device: str, hf_home: Path | None) -> None:
    from processor.engine.indextts2 import IndexTTS2Engine

    engine = IndexTTS2Engine(model_dir, device=device, hf_home=hf_home)
    engine.warm_up()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=None, help="also load this model and run warm_up()")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--hf-home", type=Path, default=None, help="hub cache (offline); default: $HF_HOME")
    parser.add_argument("--only", choices=["nemo25"], default=None,
                        help="nemo25: only IndexTTS-2.5's grammars (en, es, zh, ar)")
    args = parser.parse_args(argv)

    steps: list[tuple[str, Callable[[], None]]] = [("numba (librosa)", warm_numba), ("NeMo grammars", warm_nemo)]
    if args.only == "nemo25":
        steps = [("IndexTTS-2.5 NeMo grammars", warm_nemo25)]
    if args.model_dir is not None:
        steps.append(("engine warm-up", lambda: warm_engine(args.model_dir, args.device, args.hf_home)))
    for name, step in steps:
        started = time.perf_counter()
        step()
        print(f"warm_caches: {name}: {time.perf_counter() - started:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
