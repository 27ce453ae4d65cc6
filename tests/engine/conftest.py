"""Engine-test fixtures: the tiny random IndexTTS2, built once and loaded ONCE per session.

The tiny model is built by a subprocess (``python -m devstack.tiny_model``) into
``.cache/tiny-model`` (idempotent: a complete build is reused), so this process imports
huggingface_hub only after the engine has pointed it at the model's offline hub cache.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from processor.engine.base import GenerationSettings, LocalAudio, SynthesisSpec

ROOT = Path(__file__).resolve().parents[2]
TINY_DIR = ROOT / ".cache" / "tiny-model"


@dataclass
class LoadCounter:
    """How often the model class was instantiated (i.e. weights loaded) this session."""

    constructions: int = 0


@dataclass
class Clips:
    directory: Path
    made: dict[str, LocalAudio] = field(default_factory=dict)

    def audio(self, name: str, data: bytes) -> LocalAudio:
        path = self.directory / name
        path.write_bytes(data)
        return LocalAudio(path=path, sha256=hashlib.sha256(data).hexdigest())

    def voice(self, name: str, *, f0: float, seconds: float = 2.5, seed: int = 0) -> LocalAudio:
        """A speech-like clip: harmonics with vibrato and a syllable-rate envelope."""
        from processor.engine.indextts2 import write_harmonic_wav

        if name not in self.made:
            path = self.directory / name
            write_harmonic_wav(path, seconds=seconds, f0=f0, seed=seed)
            self.made[name] = LocalAudio(path=path, sha256=hashlib.sha256(path.read_bytes()).hexdigest())
        return self.made[name]


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    proc = subprocess.run(
        [sys.executable, "-m", "devstack.tiny_model", str(TINY_DIR)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return TINY_DIR


@pytest.fixture(scope="session")
def load_counter() -> LoadCounter:
    return LoadCounter()


@pytest.fixture(scope="session")
def engine(tiny_model_dir: Path, load_counter: LoadCounter) -> Any:
    import processor.engine.indextts2 as module

    original = module._build_model_class

    def counting_model_class() -> type[Any]:
        cls = original()
        init = cls.__init__

        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            load_counter.constructions += 1
            init(self, *args, **kwargs)

        cls.__init__ = __init__
        return cls

    patch = pytest.MonkeyPatch()
    patch.setattr(module, "_build_model_class", counting_model_class)
    try:
        eng = module.IndexTTS2Engine(tiny_model_dir, device="cpu", hf_home=tiny_model_dir / "hf")
    finally:
        patch.undo()
    eng.warm_up()
    return eng


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Clips:
    return Clips(tmp_path_factory.mktemp("clips"))


@pytest.fixture(scope="session")
def voice(clips: Clips) -> LocalAudio:
    return clips.voice("voice-a.wav", f0=120.0, seed=1)


@pytest.fixture(scope="session")
def other_voice(clips: Clips) -> LocalAudio:
    return clips.voice("voice-b.wav", f0=220.0, seconds=3.0, seed=2)


# Short generations keep the suite fast; tests about defaults pass their own settings.
FAST = GenerationSettings(max_mel_tokens=24, num_beams=1)


@pytest.fixture
def make_spec(voice: LocalAudio) -> Callable[..., SynthesisSpec]:
    def make(text: str = "Hello world.", **kwargs: Any) -> SynthesisSpec:
        kwargs.setdefault("voice", voice)
        kwargs.setdefault("generation", FAST)
        return SynthesisSpec(request_id="test", text=text, **kwargs)

    return make


def pcm_equal(a: Any, b: Any) -> bool:
    return bool(a.pcm.shape == b.pcm.shape and np.array_equal(a.pcm, b.pcm))
