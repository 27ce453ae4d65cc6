#!/usr/bin/env bash
# The main job end to end on the local stack: real Kafka + S3 (local processes), one worker with
# IndexTTS2, one request submitted, its result event printed with the WAV's location.
#
# Weights: real IndexTTS-2 checkpoints are used when INDEX_TTS_MODEL_DIR (default ./checkpoints)
# holds them (set INDEX_TTS_AUTO_DOWNLOAD=true to fetch them where the hub is reachable). Otherwise
# the demo runs the real IndexTTS2 code on the tiny random model and says plainly that the audio is noise.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export TTS_CALLER_PATH="${TTS_CALLER_PATH:-$PATH}"  # so install.sh can tell whether uv is on yours
export PATH="$HOME/.local/bin:$PATH"
bash scripts/install.sh --runtime
exec uv run python -m devstack.demo "$@"
