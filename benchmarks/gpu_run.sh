#!/usr/bin/env bash
# The one command for the GPU machine (one H200, Python 3.12 with torch 2.11, no network):
#
#   bash benchmarks/gpu_run.sh          # with .gpu-wheels/ (bash benchmarks/gpu_wheels.sh) in the tree
#
# Installs the carried wheels into /tmp/site, builds the full-size random IndexTTS2 into /tmp, runs
# benchmarks/gpu_engine.py under a time budget (BENCH_BUDGET seconds, default 330, model build
# included) and writes gpu_engine.json, gpu_engine.txt (the table), gpu_engine.log and nvidia-smi.txt
# into $OUT (or artifacts/bench/gpu when OUT is unset). Extra arguments go to gpu_engine.py (later
# ones win: `--device cpu --smoke --size tiny` rehearses the whole path on a CPU; BENCH_SITE then
# moves the install away from /tmp/site).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
out="${OUT:-artifacts/bench/gpu}"
site="${BENCH_SITE:-/tmp/site}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
{
    date -u +"start %FT%TZ"
    nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version,clocks.max.sm --format=csv || true
    ls .gpu-wheels/*.whl >/dev/null || { echo "no .gpu-wheels/: run benchmarks/gpu_wheels.sh and carry it"; exit 3; }
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
        .gpu-wheels/*.whl || exit 3
    export PYTHONPATH="$site:$PWD"
    # The lock's transformers is what the product runs; should it not import on this image, fall back
    # to the image's own (the JSON's environment.transformers says which ran).
    if ! python3 -c "import transformers, indextts.infer_v2"; then
        echo "carried transformers does not import here; using the image's"
        rm -rf "$site"/transformers "$site"/transformers-*.dist-info
        python3 -c "import indextts.infer_v2" || exit 4
    fi
    python3 -m benchmarks.gpu_engine --device cuda --budget "${BENCH_BUDGET:-330}" \
        --model-dir /tmp/full-random-model --out "$out/gpu_engine.json" "$@"
    code=$?
    nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || true
    date -u +"end %FT%TZ (exit $code)"
    exit $code
} 2>&1 | tee "$out/gpu_engine.log"
exit "${PIPESTATUS[0]}"
