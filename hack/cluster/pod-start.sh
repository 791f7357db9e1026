#!/usr/bin/env bash
# Pod start as the kubelet sees it: create N pods at once (a Deployment spread over the
# nodes), wait until all run, and read each kubelet's histogram of RunPodSandbox calls
# (the runtime's sandbox creation, the CNI ADD included) before and after. Prints p50/p99
# estimated from the histogram's buckets (linear within a bucket, as Prometheus'
# histogram_quantile does).
# A measurement, not a test: it fails only when the pods do not start.
#   KUBECTL=... hack/cluster/pod-start.sh [N]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

N="${1:-30}"
NS="netkit-pod-start-$$"
trap 'k delete namespace "$NS" --wait=false >/dev/null 2>&1 || true' EXIT

mapfile -t NODES < <(k get nodes -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}')
# Cumulative bucket counts "le count" of the kubelet's RunPodSandbox CRI call histogram
# (kubelet_runtime_operations_duration_seconds{operation_type="run_podsandbox"}),
# summed over the nodes. (kubelet_run_podsandbox_duration_seconds would be the obvious
# one, but in this release it times only the call's set-up, microseconds.)
buckets() {
    local n
    for n in "${NODES[@]}"; do
        k get --raw "/api/v1/nodes/$n/proxy/metrics"
    done | sed -nE 's/^kubelet_runtime_operations_duration_seconds_bucket\{operation_type="run_podsandbox",le="([^"]+)"\} ([0-9]+)$/\1 \2/p' \
        | awk '{count[$1] += $2} END {for (le in count) print le, count[le]}' | sort -g
}
before="$(buckets)"

k create namespace "$NS" >/dev/null
start=$(date +%s.%N)
k -n "$NS" create deployment starters --image="$PAUSE_IMAGE" --replicas="$N" >/dev/null
k -n "$NS" rollout status deployment/starters --timeout=300s >/dev/null
wall=$(echo "$(date +%s.%N) - $start" | bc)
after="$(buckets)"

# The histogram of this run: after minus before, per bucket, then quantiles.
join <(echo "$before") <(echo "$after") | awk -v n="$N" -v wall="$wall" '
    { le[NR] = $1; c[NR] = $3 - $2 }
    END {
        total = c[NR]
        printf "pod start, %d pods at once: all running after %.1f s; %d sandboxes created\n", n, wall, total
        split("0.5 0.99", qs, " ")
        for (qi = 1; qi <= 2; qi++) {
            rank = qs[qi] * total; prev_le = 0; prev_c = 0
            for (i = 1; i <= NR; i++) {
                if (c[i] >= rank) {
                    if (le[i] == "+Inf") { v = prev_le } else if (c[i] == prev_c) { v = le[i] }
                    else { v = prev_le + (le[i] - prev_le) * (rank - prev_c) / (c[i] - prev_c) }
                    printf "  RunPodSandbox p%g: %.0f ms (bucket <= %s s)\n", qs[qi] * 100, v * 1000, le[i]
                    break
                }
                prev_le = le[i]; prev_c = c[i]
            }
        }
    }'
