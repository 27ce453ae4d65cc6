#!/usr/bin/env bash
# Everything the demo and the tests need, from a fresh clone on a fresh machine. Idempotent: a second
# run takes seconds. Nothing here downloads model weights: the tiny random IndexTTS2 is built locally.
#
#   bash scripts/install.sh            # all
#   bash scripts/install.sh --runtime  # only what the demo needs (no ops tools, no browser)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
runtime_only=0
[ "${1:-}" = "--runtime" ] && runtime_only=1

ORIGINAL_PATH="${TTS_CALLER_PATH:-$PATH}"
step() { printf '\n== %s\n' "$*"; }

export PATH="$HOME/.local/bin:$PATH"  # where `pip install --user` puts uv (an earlier run's, too)
if ! command -v uv >/dev/null 2>&1; then
    step "installing uv (PyPI)"
    python3 -m pip install --quiet --user uv 2>/dev/null || python3 -m pip install --quiet uv
fi

step "python environment (uv sync --locked: a lock out of step with pyproject.toml fails; torch is large, uv caches it)"
uv sync --locked

step "Kafka + S3Proxy jars and the Apicurio schema registry (Maven Central, cached in .cache/jars; the registry build takes 1-2 min, once)"
uv run python -m devstack.stack fetch

step "tiny random IndexTTS2 (built locally, seconds) and one-time NeMo/numba cache warm-up"
uv run python -m devstack.tiny_model .cache/tiny-model
if [ ! -f .cache/warm-caches.done ]; then
    HF_HOME="$ROOT/.cache/tiny-model/hf" HF_HUB_OFFLINE=1 uv run python scripts/warm_caches.py
    touch .cache/warm-caches.done
fi

step "tiny random IndexTTS-2.5 (built locally, seconds) and its NeMo grammars (en, es, zh, ar; once)"
uv run python -m devstack.tiny_model25 .cache/tiny-model25
if [ ! -f .cache/warm-caches25.done ]; then
    uv run python scripts/warm_caches.py --only nemo25
    touch .cache/warm-caches25.done
fi

if [ "$runtime_only" = 0 ]; then
    step "ops tools (helm from the Go module proxy, checkov in its own venv)"
    bash scripts/install_ops_tools.sh
    step "Debian chromium + chromedriver for the console's browser test"
    bash scripts/install_browser.sh
fi

if ! (PATH="$ORIGINAL_PATH"; hash -r; command -v uv >/dev/null 2>&1); then
    printf '\nnote: uv was installed into %s, which is not on your PATH; to use `uv run ...` in this shell:\n' \
        "$HOME/.local/bin"
    printf '  export PATH="$HOME/.local/bin:$PATH"\n'
fi
