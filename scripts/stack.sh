#!/usr/bin/env bash
# The local Kafka + S3 stack (devstack/stack.py) from a shell.
#   scripts/stack.sh              start, create the default topics + bucket, print exports; Ctrl-C stops
#   scripts/stack.sh up --topic tts.requests:8 --env-file .stack/env
#   scripts/stack.sh up --registry  also start a schema registry (exports SCHEMA_REGISTRY_URL)
#   scripts/stack.sh fetch        only download the jars and build the registry into .cache/jars (install step)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
[ $# -eq 0 ] && set -- up
if [ -x .venv/bin/python ]; then
  exec .venv/bin/python -m devstack.stack "$@"
fi
exec uv run python -m devstack.stack "$@"
