# Shared definitions of the cluster tier (sourced, not run): pinned versions, where the
# built components are cached, the rig's names and address plan, and small helpers.
# hack/cluster/{build,images,up,down,checks,conformance}.sh and hack/kind-e2e.sh source it.

CLUSTER_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$CLUSTER_DIR/../.." && pwd)"

# Pinned versions. Kubernetes 1.34 is the newest release whose kubelet runs on a cgroup v1
# host without `failCgroupV1: false` (the machines' hierarchy is v1); etcd and CoreDNS
# are the versions that release is tested with and ships.
K8S_VERSION=v1.34.2
ETCD_VERSION=v3.6.4
COREDNS_VERSION=v1.12.1
GINKGO_VERSION=v2.21.0

# Machine-wide cache, outside the clone (CI clones fresh, so a cache inside it is always
# cold), keyed on the pinned versions and on the Go toolchain: a warm run rebuilds nothing.
NETKIT_CACHE="${NETKIT_CACHE:-/var/cache/netkit-cni}"
export GOPATH="$NETKIT_CACHE/go"
export GOMODCACHE="$NETKIT_CACHE/go/mod"
export GOCACHE="$NETKIT_CACHE/go/build"
export GOTOOLCHAIN=local
export GOFLAGS=-mod=mod
go_version() { go env GOVERSION 2>/dev/null || echo go-missing; }
# The wrapper modules' files are part of the key, so a change to them rebuilds.
wrapper_hash() { cat "$CLUSTER_DIR"/{k8s,etcd,coredns}/go.{mod,sum} "$CLUSTER_DIR"/k8s/pause/*.go 2>/dev/null | sha256sum | cut -c1-12; }
CLUSTER_BIN="${CLUSTER_BIN:-$NETKIT_CACHE/cluster/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-coredns-$COREDNS_VERSION-$(go_version)-$(wrapper_hash)/bin}"

# The images the rig builds and imports into each node's containerd. The upstream names
# are what the conformance tests ask for (e2e.test --list-images); the pods use them with
# IfNotPresent, so an imported image is used and nothing is pulled.
AGENT_IMAGE=netkit-cni/agent:dev
PAUSE_IMAGE=registry.k8s.io/pause:3.10.1
AGNHOST_IMAGE=registry.k8s.io/e2e-test-images/agnhost:2.56
BUSYBOX_IMAGE=registry.k8s.io/e2e-test-images/busybox:1.37.0-1
DNSUTILS_IMAGE=registry.k8s.io/e2e-test-images/jessie-dnsutils:1.7
COREDNS_IMAGE=netkit-cni/coredns:$COREDNS_VERSION
# Where images.sh writes the archives up.sh imports (rebuilt each run: the agent image
# is the code under test).
NKC_IMAGES="${NKC_IMAGES:-/var/lib/netkit-cluster-images}"

# The local rig: a control-plane namespace that also carries the node wire (a bridge),
# and one namespace + mount namespace per node. Fixed names: one local cluster per
# machine; down.sh removes a previous run's leftovers before up.sh starts.
NKC_DIR="${NKC_DIR:-/var/lib/netkit-cluster}"
NKC_CP_NS=nkc-cp
NKC_BRIDGE=nkc-br
NKC_NODES=(node-a node-b)
# Dual-stack: IPv4 first (the primary family of nodes, pods and Services), IPv6 second.
NKC_CP_V4=198.19.0.1
NKC_CP_V6=fd00:6e6b:c::1
NKC_NODE_V4_PREFIX=198.19.0.
NKC_NODE_V6_PREFIX=fd00:6e6b:c::
NKC_CLUSTER_CIDR=10.244.0.0/16,fd00:6e6b:244::/56
NKC_SERVICE_CIDR=10.96.0.0/16,fd00:6e6b:96::/112
NKC_API_SERVICE_IP=10.96.0.1
NKC_DNS_SERVICE_IP=10.96.0.10
NKC_KUBECONFIG="$NKC_DIR/admin.kubeconfig"

node_ns() { echo "nkc-$1"; }
node_index() { local i; for i in "${!NKC_NODES[@]}"; do [ "${NKC_NODES[$i]}" = "$1" ] && { echo "$i"; return; }; done; return 1; }
node_ip() { echo "$NKC_NODE_V4_PREFIX$((11 + $(node_index "$1")))"; }
node_ip6() { echo "$NKC_NODE_V6_PREFIX$((11 + $(node_index "$1")))"; }
node_dir() { echo "$NKC_DIR/nodes/$1"; }
node_mnt() { echo "$NKC_DIR/ns/$1.mnt"; }
# Run a command inside node $1: its network and mount namespaces.
in_node() { local n="$1"; shift; nsenter --net="/run/netns/$(node_ns "$n")" --mount="$(node_mnt "$n")" -- "$@"; }
in_cp() { ip netns exec "$NKC_CP_NS" "$@"; }

# k ARGS...: kubectl as the caller chose it, $KUBECTL (a command line: the local tier's
# hack/cluster/kubectl.sh, or `kubectl --context ...`), default plain kubectl.
read -r -a KUBECTL_CMD <<<"${KUBECTL:-kubectl}"
k() { "${KUBECTL_CMD[@]}" "$@"; }

log() { printf '[cluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Phase timing: `phase NAME` ends the previous phase and prints its time.
PHASE_NAME=""
PHASE_START=0
phase() {
    local now; now=$(date +%s)
    if [ -n "$PHASE_NAME" ]; then
        log "phase '$PHASE_NAME' took $((now - PHASE_START)) s"
        echo "$PHASE_NAME $((now - PHASE_START))" >>"${PHASE_LOG:-/dev/null}"
    fi
    PHASE_NAME="$1"; PHASE_START=$now
    [ -z "$1" ] || log "phase '$1'"
}

# wait_for SECONDS DESCRIPTION COMMAND...: poll until COMMAND succeeds.
wait_for() {
    local secs="$1" what="$2"; shift 2
    local deadline=$(( $(date +%s) + secs ))
    until "$@" >/dev/null 2>&1; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            log "timed out after ${secs}s waiting for: $what"
            return 1
        fi
        sleep 1
    done
}
