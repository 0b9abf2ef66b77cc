#!/usr/bin/env bash
# Build the real control plane (etcd, kube-apiserver, kube-controller-manager, kubectl) and helm from Go
# modules, into a cache outside the repository keyed by version. Prints the bin directory on stdout.
# Cached binaries are reused; delete the directory (or set KUBEPAM_REBUILD=1) to rebuild.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
cache=${KUBEPAM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubepam}
bin="$cache/k8s-$K8S_VERSION-helm-$HELM_VERSION/bin"
export GOWORK=off GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
mkdir -p "$bin"
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2) -X k8s.io/component-base/version.gitTreeState=clean"
build() {  # name, package
  if [[ -x "$bin/$1" && -z "${KUBEPAM_REBUILD:-}" ]]; then return; fi
  echo "building $1 ($2)" >&2
  local start=$SECONDS
  (cd "$here" && go build -trimpath -ldflags "$ldflags" -o "$bin/$1.tmp" "$2")
  mv "$bin/$1.tmp" "$bin/$1"
  echo "built $1 in $((SECONDS - start))s" >&2
}
build etcd ./cmd/etcd
build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
build kubectl k8s.io/kubernetes/cmd/kubectl
build kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager
if [[ ! -x "$bin/helm" || -n "${KUBEPAM_REBUILD:-}" ]]; then
  echo "building helm $HELM_VERSION" >&2
  start=$SECONDS
  # helm pins its own k8s.io libraries, so it is built from its module, not from this one.
  GOBIN="$bin" GOFLAGS= go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  echo "built helm in $((SECONDS - start))s" >&2
fi
echo "$bin"
