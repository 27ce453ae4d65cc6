#!/usr/bin/env bash
# Static checks of the deployment artefacts: Helm chart + Dockerfile. Runs offline.
#
#   1. helm lint (default values and ci/full-values.yaml)
#   2. helm template with both values files (+ render-time guards must reject bad values)
#   3. kubernetes-validate --strict of every rendered built-in kind, against the oldest
#      supported (Chart.yaml kubeVersion) and the newest bundled Kubernetes schemas;
#      CRD kinds (KEDA, Prometheus Operator) are skipped here and checked structurally in
#      tests/ops/test_chart.py
#   4. checkov on the rendered manifests and the Dockerfile (.checkov.yaml lists the only
#      accepted findings, each with its reason; any other failed check fails)
#   5. hadolint on the Dockerfile (.hadolint.yaml)
#
# Exits non-zero if any step fails. Tools come from scripts/install_ops_tools.sh (.cache/bin).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CHART=helm/tts-processor
FULL_VALUES=$CHART/ci/full-values.yaml
BIN=$ROOT/.cache/bin
PY=$ROOT/.venv/bin/python
K8S_VERSIONS=(${K8S_VERSIONS:-1.27.0 1.37.0})
CRD_KINDS="ScaledObject TriggerAuthentication ServiceMonitor"

bash scripts/install_ops_tools.sh || { echo "FAIL: could not install ops tools" >&2; exit 1; }
HELM=$BIN/helm
CHECKOV=$BIN/checkov
HADOLINT=$ROOT/.venv/bin/hadolint
KV=$ROOT/.venv/bin/kubernetes-validate

OUT="$(mktemp -d "${TMPDIR:-/tmp}/check_chart.XXXXXX")"
trap 'rm -rf "$OUT"' EXIT

failures=()
step() { printf '\n=== %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; failures+=("$*"); }

# ----------------------------------------------------------------------------- lint
step "helm lint"
$HELM lint --strict "$CHART" || fail "helm lint (default values)"
$HELM lint --strict "$CHART" -f "$FULL_VALUES" || fail "helm lint (full values)"

# ----------------------------------------------------------------------------- template
step "helm template"
mkdir -p "$OUT/rendered"
$HELM template tts "$CHART" --namespace tts >"$OUT/rendered/default.yaml" \
  || fail "helm template (default values)"
$HELM template tts "$CHART" --namespace tts -f "$FULL_VALUES" >"$OUT/rendered/full.yaml" \
  || fail "helm template (full values)"
wc -l "$OUT"/rendered/*.yaml

step "render-time guards reject invalid values"
expect_render_failure() {
  local why=$1; shift
  if $HELM template tts "$CHART" --namespace tts "$@" >/dev/null 2>"$OUT/err.txt"; then
    fail "rendering should fail: $why"
  else
    echo "ok, rejected ($why): $(grep -m1 -i error "$OUT/err.txt" | cut -c1-200)"
  fi
}
expect_render_failure "KEDA maxReplicaCount > partitions" \
  --set autoscaling.enabled=true --set autoscaling.maxReplicaCount=9 --set kafka.topics.partitions=8
expect_render_failure "replicaCount > partitions" \
  --set replicaCount=5 --set kafka.topics.partitions=4
expect_render_failure "SASL without existingSecret" \
  --set kafka.security.protocol=SASL_SSL --set kafka.security.saslMechanism=PLAIN
expect_render_failure "gpu.count != 1 (schema)" --set gpu.count=2

# ----------------------------------------------------------------------------- kubernetes-validate
step "kubernetes-validate (strict, offline schemas)"
for f in "$OUT"/rendered/*.yaml; do
  # Drop CRD kinds (no bundled schema); they are checked structurally by tests/ops.
  "$PY" - "$f" "$f.builtin" "$CRD_KINDS" <<'EOF' || fail "splitting $f"
import sys, yaml
src, dst, crds = sys.argv[1], sys.argv[2], set(sys.argv[3].split())
docs = [d for d in yaml.safe_load_all(open(src)) if d]
keep = [d for d in docs if d.get("kind") not in crds]
print(f"{src}: {len(docs)} documents, {len(docs) - len(keep)} CRD objects skipped")
yaml.safe_dump_all(keep, open(dst, "w"), sort_keys=False)
EOF
  for v in "${K8S_VERSIONS[@]}"; do
    log="$OUT/kv.log"
    if ! $KV --strict -k "$v" "$f.builtin" >"$log" 2>&1; then
      cat "$log"; fail "kubernetes-validate $v $(basename "$f")"
    elif grep -q "Couldn't find schema" "$log"; then
      cat "$log"; fail "kubernetes-validate $v $(basename "$f"): kind without schema"
    else
      echo "ok: $(basename "$f") valid against Kubernetes $v ($(grep -c passed "$log") objects)"
    fi
  done
  rm -f "$f.builtin"
done

# ----------------------------------------------------------------------------- checkov
step "checkov (kubernetes: rendered manifests)"
$CHECKOV --config-file .checkov.yaml --framework kubernetes -d "$OUT/rendered" \
  || fail "checkov kubernetes"
step "checkov (dockerfile)"
$CHECKOV --config-file .checkov.yaml --framework dockerfile -f Dockerfile \
  || fail "checkov dockerfile"

# ----------------------------------------------------------------------------- hadolint
step "hadolint"
$HADOLINT --config .hadolint.yaml Dockerfile && echo "ok: hadolint" || fail "hadolint"

# ----------------------------------------------------------------------------- summary
echo
if ((${#failures[@]})); then
  printf 'check_chart: %d failure(s):\n' "${#failures[@]}" >&2
  printf '  - %s\n' "${failures[@]}" >&2
  exit 1
fi
echo "check_chart: all checks passed"
