#!/usr/bin/env bash
# The cluster tier (hack/test.sh cluster): build the pinned Kubernetes components
# (cached), build the images, start the local two-node cluster, deploy netkit-cni with
# `kubectl apply -f manifests/`, run our own checks and the upstream sig-network
# conformance tests, and tear everything down even when a step fails. Prints each
# phase's time. Logs and reports: target/test-logs/cluster/.
#   hack/cluster/run.sh [--keep]      (--keep: leave the cluster up for debugging)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

keep=false; [ "${1:-}" = --keep ] && keep=true
OUT="$REPO/target/test-logs/cluster"
rm -rf "$OUT"; mkdir -p "$OUT"
export PHASE_LOG="$OUT/phases"

collect_logs() {
    [ -d "$NKC_DIR/logs" ] && cp -r "$NKC_DIR/logs" "$OUT/daemons" 2>/dev/null
    local n
    for n in "${NKC_NODES[@]}"; do
        [ -d "$(node_dir "$n")/var-log-pods" ] && cp -rL "$(node_dir "$n")/var-log-pods" "$OUT/pods-$n" 2>/dev/null
    done
    return 0
}
STRIPPED=""
finish() {
    local status=$?
    [ -z "$STRIPPED" ] || rm -rf "$STRIPPED"
    phase ""
    collect_logs
    if $keep; then
        log "leaving the cluster up (--keep): hack/cluster/kubectl.sh, hack/cluster/down.sh"
    else
        "$CLUSTER_DIR/down.sh" || status=1
    fi
    log "phase times (s):"; cat "$PHASE_LOG" >&2 2>/dev/null || true
    exit "$status"
}
trap finish EXIT

phase "build Kubernetes components"
"$CLUSTER_DIR/build.sh" >/dev/null
# The agent image carries the binaries as we ship them (hack/release.sh: the plugin
# statically linked against musl), in the debug profile, stripped, as the VM tier does:
# a release build would add minutes to every CI run and test no other code.
# NETKIT_CLUSTER_PROFILE=release tests release binaries instead.
profile="${NETKIT_CLUSTER_PROFILE:-debug}"
phase "build netkit-cni binaries ($profile)"
STRIPPED="$(mktemp -d)"
release_flags=(--out "$STRIPPED")
[ "$profile" = release ] || release_flags+=(--debug)
"$REPO/hack/release.sh" "${release_flags[@]}"
for b in netkit-agent netkit-cni; do
    strip --strip-debug "$STRIPPED/$b"
done
phase "build images"
NETKIT_RELEASE_DIR="$STRIPPED" "$CLUSTER_DIR/images.sh" "$NKC_IMAGES"
phase ""  # up.sh times its own phases into the same log
"$CLUSTER_DIR/up.sh"

phase "our checks"
checks_status=0
KUBECTL="$CLUSTER_DIR/kubectl.sh" "$CLUSTER_DIR/checks.sh" || checks_status=$?

phase "pod start as the kubelet sees it (30 pods at once)"
KUBECTL="$CLUSTER_DIR/kubectl.sh" "$CLUSTER_DIR/pod-start.sh" 30 | tee "$OUT/pod-start.txt" || true

phase "upstream sig-network conformance"
conformance_status=0
E2E_PREFIX="ip netns exec $NKC_CP_NS" KUBECONFIG="$NKC_KUBECONFIG" \
    "$CLUSTER_DIR/conformance.sh" "$OUT/conformance" || conformance_status=$?

[ "$checks_status" = 0 ] && [ "$conformance_status" = 0 ]
