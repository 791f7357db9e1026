#!/usr/bin/env bash
# End-to-end on kind, for a user with Docker and kind (our CI machines have no Docker
# engine; the local cluster tier, hack/test.sh cluster, runs the same checks and the
# same conformance subset on a Docker-less cluster):
#   hack/kind-e2e.sh [--keep]
# Builds the agent image from the Dockerfile and loads it into kind, creates a 3-node
# cluster with the default CNI disabled (hack/kind-config.yaml), applies manifests/,
# waits for every node to turn Ready, then runs hack/cluster/checks.sh and
# hack/cluster/conformance.sh. The test images (agnhost, ...) are pulled by the nodes
# from registry.k8s.io as usual.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/cluster/lib.sh"

NAME="${KIND_CLUSTER_NAME:-netkit}"
keep=false; [ "${1:-}" = --keep ] && keep=true
for tool in docker kind kubectl go; do
    command -v "$tool" >/dev/null || die "$tool is required"
done
# The kind node image of the same Kubernetes release the local tier pins.
NODE_IMAGE="${KIND_NODE_IMAGE:-kindest/node:$K8S_VERSION}"
OUT="$REPO/target/test-logs/kind"
mkdir -p "$OUT"
KUBECONFIG_FILE="$OUT/kubeconfig"

cleanup() {
    local status=$?
    if $keep; then
        log "leaving kind cluster $NAME up (--keep); KUBECONFIG=$KUBECONFIG_FILE"
    else
        kind delete cluster --name "$NAME" || true
    fi
    exit "$status"
}
trap cleanup EXIT

phase "build e2e.test and ginkgo ($K8S_VERSION)"
"$CLUSTER_DIR/build.sh" >/dev/null
phase "build the agent image"
docker build -t "$AGENT_IMAGE" "$REPO"
phase "create the kind cluster"
kind create cluster --name "$NAME" --image "$NODE_IMAGE" \
    --config "$REPO/hack/kind-config.yaml" --kubeconfig "$KUBECONFIG_FILE" --wait 0s
kind load docker-image --name "$NAME" "$AGENT_IMAGE"
export KUBECONFIG="$KUBECONFIG_FILE"

phase "deploy netkit-cni (kubectl apply -f manifests/)"
kubectl apply -f "$REPO/manifests/"
kubectl -n netkit-system rollout status daemonset/netkit-agent --timeout=300s
kubectl wait --for=condition=Ready node --all --timeout=300s
kubectl -n kube-system rollout status deployment/coredns --timeout=300s

phase "our checks"
checks_status=0
KUBECTL="kubectl" "$CLUSTER_DIR/checks.sh" || checks_status=$?
phase "upstream sig-network conformance"
conformance_status=0
"$CLUSTER_DIR/conformance.sh" "$OUT/conformance" || conformance_status=$?
phase ""
[ "$checks_status" = 0 ] && [ "$conformance_status" = 0 ]
