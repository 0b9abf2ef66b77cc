#!/usr/bin/env bash
# Set up and run the main job: build (or reuse) the control plane, start it on 127.0.0.1 (or use the
# cluster KUBECONFIG points to), install kubepam with its examples, and run the operator as its own
# least-privileged identity. Ctrl-C stops it all.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
exec kubepam demo "$@"
