#!/usr/bin/env bash
# Builds the real control plane from source through the Go module proxy and
# caches it in bin/, keyed by version. Rebuilds only what is missing.
#
#   hack/control-plane.sh          build what is missing, print the k8s dir
#   hack/control-plane.sh --print  print the directory only (no build)
#
# Layout: bin/k8s/<k8s version>/{kube-apiserver,kube-controller-manager,kubectl,etcd}
# (etcd is built into bin/etcd/<etcd version>/ and linked in, so a new
# Kubernetes version reuses a built etcd).
set -euo pipefail

K8S_VERSION=v1.36.3
ETCD_VERSION=v3.6.16

root=$(cd "$(dirname "$0")/.." && pwd)
k8s_dir="$root/bin/k8s/$K8S_VERSION"
etcd_dir="$root/bin/etcd/$ETCD_VERSION"

if [[ "${1:-}" == "--print" ]]; then
  echo "$k8s_dir"
  exit 0
fi

mkdir -p "$k8s_dir" "$etcd_dir"

log() { echo "control-plane: $*" >&2; }

# Version stamps, as hack/lib/version.sh of Kubernetes sets them, so the
# binaries report v1.36.3 instead of v0.0.0-master (Helm kubeVersion checks
# and kubectl's skew warning read it).
minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

build_k8s() {
  local name=$1
  [[ -x "$k8s_dir/$name" ]] && return 0
  log "building $name $K8S_VERSION from source (several minutes on a cold cache)"
  (cd "$root/hack/tools/kubernetes" &&
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w $ldflags" -o "$k8s_dir/$name.tmp" "k8s.io/kubernetes/cmd/$name")
  mv "$k8s_dir/$name.tmp" "$k8s_dir/$name"
}

if [[ ! -x "$etcd_dir/etcd" ]]; then
  log "building etcd $ETCD_VERSION from source"
  (cd "$root/hack/tools/etcd" &&
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$etcd_dir/etcd.tmp" go.etcd.io/etcd/server/v3)
  mv "$etcd_dir/etcd.tmp" "$etcd_dir/etcd"
fi
ln -sfn "../../etcd/$ETCD_VERSION/etcd" "$k8s_dir/etcd"

build_k8s kube-apiserver
build_k8s kube-controller-manager
build_k8s kubectl

# bin/kubectl is what the README and `make dev` tell people to use.
ln -sfn "k8s/$K8S_VERSION/kubectl" "$root/bin/kubectl"

echo "$k8s_dir"
