#!/usr/bin/env bash
# kubectl for the local cluster: the API server is reachable only from the control-plane
# namespace, so run the built kubectl there with the rig's admin kubeconfig.
#   hack/cluster/kubectl.sh get nodes -o wide
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
exec ip netns exec "$NKC_CP_NS" "$CLUSTER_BIN/kubectl" --kubeconfig "$NKC_KUBECONFIG" "$@"
