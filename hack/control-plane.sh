#!/usr/bin/env bash
# Builds the real control plane from source through the Go module proxy and
# caches it in bin/, keyed by version. Rebuilds only what is missing.
#
#   hack/control-plane.sh          build what is missing, print the k8s dir
#   hack/control-plane.sh --print  print the directory only (no build)
#   hack/control-plane.sh --node   also build the real node of make cluster
#                                  (kubelet, kube-proxy, kube-scheduler,
#                                  containerd 2 and kube-router)
#
# Layout: bin/k8s/<k8s version>/{kube-apiserver,kube-controller-manager,kubectl,etcd}
# (etcd is built into bin/etcd/<etcd version>/ and linked in, so a new
# Kubernetes version reuses a built etcd); with --node also
# bin/k8s/<k8s version>/{kubelet,kube-proxy,kube-scheduler},
# bin/containerd/<version>/{containerd,containerd-shim-runc-v2,ctr} and
# bin/kube-router/<version>/kube-router.
set -euo pipefail

K8S_VERSION=v1.36.3
ETCD_VERSION=v3.6.16
CONTAINERD_VERSION=v2.4.2
KUBE_ROUTER_VERSION=v2.1.0

root=$(cd "$(dirname "$0")/.." && pwd)
k8s_dir="$root/bin/k8s/$K8S_VERSION"
etcd_dir="$root/bin/etcd/$ETCD_VERSION"

if [[ "${1:-}" == "--print" ]]; then
  echo "$k8s_dir"
  exit 0
fi
node=false
[[ "${1:-}" == "--node" ]] && node=true

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

if $node; then
  build_k8s kubelet
  build_k8s kube-proxy
  build_k8s kube-scheduler

  # containerd 2 (Kubernetes 1.36's kubelet needs 2.x; Debian's 1.6 is too
  # old), with the graph drivers this node does not use left out.
  ctr_dir="$root/bin/containerd/$CONTAINERD_VERSION"
  for cmd in containerd containerd-shim-runc-v2 ctr; do
    [[ -x "$ctr_dir/$cmd" ]] && continue
    log "building $cmd $CONTAINERD_VERSION from source"
    mkdir -p "$ctr_dir/.tmp"
    CGO_ENABLED=0 GOBIN="$ctr_dir/.tmp" go install -trimpath \
      -tags "no_btrfs no_zfs no_devmapper no_aufs urfave_cli_no_docs" \
      -ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION" \
      "github.com/containerd/containerd/v2/cmd/$cmd@$CONTAINERD_VERSION"
    mv "$ctr_dir/.tmp/$cmd" "$ctr_dir/$cmd"
  done
  rm -rf "$ctr_dir/.tmp"

  # kube-router enforces NetworkPolicies on the node: a test fixture of
  # make cluster, never shipped by itmanager (hack/tools/kube-router).
  kr_dir="$root/bin/kube-router/$KUBE_ROUTER_VERSION"
  if [[ ! -x "$kr_dir/kube-router" ]]; then
    log "building kube-router $KUBE_ROUTER_VERSION from source"
    mkdir -p "$kr_dir"
    (cd "$root/hack/tools/kube-router" &&
      CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$kr_dir/kube-router.tmp" github.com/cloudnativelabs/kube-router/v2/cmd/kube-router)
    mv "$kr_dir/kube-router.tmp" "$kr_dir/kube-router"
  fi
fi

# bin/kubectl is what the README and `make dev` tell people to use.
ln -sfn "k8s/$K8S_VERSION/kubectl" "$root/bin/kubectl"

echo "$k8s_dir"
