#!/usr/bin/env bash
# The whole test suite from a fresh clone: installs what it needs, lints, type-checks, validates the
# chart, then runs every test against a real local Kafka + S3 (started by the tests themselves).
#
#   bash scripts/test.sh [extra pytest args]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export TTS_CALLER_PATH="${TTS_CALLER_PATH:-$PATH}"  # so install.sh can tell whether uv is on yours
export PATH="$HOME/.local/bin:$PATH"
bash scripts/install.sh

echo "== ruff"; uv run ruff check .
echo "== mypy --strict (processor/)"; uv run mypy
echo "== chart: helm lint/template, kubernetes-validate, checkov, hadolint"; bash scripts/check_chart.sh
echo "== pytest"
mkdir -p artifacts
uv run pytest -q -p no:cacheprovider --junitxml=artifacts/junit.xml "$@"
