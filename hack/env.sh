# shellcheck shell=bash
# Sourced by hack/test.sh and hack/demo.sh: a Python venv (cached outside the repo, keyed by
# pyproject.toml) with kubepam installed, and the Go-built control plane. Recreated from nothing when
# the cache is empty; reused when present.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export KUBEPAM_REPO="$ROOT"
CACHE=${KUBEPAM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubepam}
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
key=$( (cat "$ROOT/pyproject.toml"; "$PY" --version) | sha256sum | cut -c1-12)
VENV="$CACHE/venv-$key"
if [[ ! -x "$VENV/bin/kubepam" || ! -f "$VENV/.complete" ]]; then
  echo "creating $VENV" >&2
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip==25.3
  "$VENV/bin/pip" install --quiet -e "$ROOT[test]"
  touch "$VENV/.complete"
else
  # The package is installed editable; only re-link it if this checkout moved.
  "$VENV/bin/python" -c "import kubepam, sys; sys.exit(0 if kubepam.__file__.startswith('$ROOT/') else 1)" \
    || "$VENV/bin/pip" install --quiet --no-deps -e "$ROOT"
fi
export PATH="$VENV/bin:$PATH"
# hack/image.sh needs only the venv: it sets KUBEPAM_ENV_ONLY_PYTHON to skip the control-plane build.
if [[ -z ${KUBEPAM_ENV_ONLY_PYTHON:-} ]]; then
  KUBEPAM_BIN=$(bash "$ROOT/hack/k8s/build.sh")
  export KUBEPAM_BIN
  export PATH="$KUBEPAM_BIN:$PATH"
fi
