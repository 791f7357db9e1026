#!/usr/bin/env bash
# Build the real Kubernetes components the cluster tier runs, from their Go modules at
# the versions pinned in lib.sh, into the machine-wide cache (`$CLUSTER_BIN`). A warm
# cache rebuilds nothing; the Go module and build caches live beside it.
#   hack/cluster/build.sh          build what is missing, print the bin dir
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

command -v go >/dev/null || die "go is not installed (the polyglot machines have Go 1.26)"

if [ "${1:-}" = --download-only ]; then
    for m in k8s etcd coredns; do (cd "$CLUSTER_DIR/$m" && go mod download) || die "go mod download in hack/cluster/$m"; done
    log "Go modules for the cluster tier are in $GOMODCACHE"
    exit 0
fi

if [ -f "$CLUSTER_BIN/.complete" ]; then
    log "components cached in $CLUSTER_BIN"
    echo "$CLUSTER_BIN"
    exit 0
fi

mkdir -p "$CLUSTER_BIN"
# Static binaries: several of them go into images with no libc, and the host ones must
# not depend on what the machine's libc happens to be.
export CGO_ENABLED=0
VERSION_PKG=k8s.io/component-base/version
minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
# What `kubectl version` and the nodes report; without it they say v0.0.0-master.
K8S_LDFLAGS="-s -w -X $VERSION_PKG.gitVersion=$K8S_VERSION -X $VERSION_PKG.gitMajor=1 -X $VERSION_PKG.gitMinor=$minor -X $VERSION_PKG.gitTreeState=clean -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"

timed() { # what command...
    local what="$1" start; shift
    start=$(date +%s)
    "$@"
    log "  $what: $(( $(date +%s) - start )) s"
}

log "building Kubernetes $K8S_VERSION components (cold: about 10 minutes on 2 idle cores)"
cd "$CLUSTER_DIR/k8s"
timed "Kubernetes components, ginkgo, pause" go build -trimpath -ldflags "$K8S_LDFLAGS" -o "$CLUSTER_BIN/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler \
    k8s.io/kubernetes/cmd/kubelet \
    k8s.io/kubernetes/cmd/kube-proxy \
    k8s.io/kubernetes/cmd/kubectl \
    k8s.io/kubernetes/test/images/agnhost \
    github.com/onsi/ginkgo/v2/ginkgo \
    ./pause
timed e2e.test go test -c -trimpath -ldflags "$K8S_LDFLAGS" -o "$CLUSTER_BIN/e2e.test" k8s.io/kubernetes/test/e2e

log "building etcd $ETCD_VERSION"
cd "$CLUSTER_DIR/etcd"
timed etcd go build -trimpath -ldflags "-s -w" -o "$CLUSTER_BIN/etcd" .

log "building CoreDNS $COREDNS_VERSION"
cd "$CLUSTER_DIR/coredns"
timed CoreDNS go build -trimpath -ldflags "-s -w" -o "$CLUSTER_BIN/coredns" github.com/coredns/coredns

touch "$CLUSTER_BIN/.complete"
echo "$CLUSTER_BIN"
