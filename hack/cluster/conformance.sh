#!/usr/bin/env bash
# The upstream sig-network conformance tests against a cluster running netkit-cni, with
# the skip list both the local cluster tier and hack/kind-e2e.sh use:
#   KUBECONFIG=... hack/cluster/conformance.sh REPORT_DIR
# Runs the e2e.test and ginkgo that build.sh built (same pinned Kubernetes release) in
# parallel ginkgo processes and prints ginkgo's summary. Exit status: ginkgo's.
# E2E_PREFIX (optional) is a command prefix to run them under, e.g. `ip netns exec nkc-cp`
# where the API server is only reachable from the control-plane namespace.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REPORT_DIR="${1:?usage: conformance.sh REPORT_DIR}"
BIN="${E2E_BIN:-$CLUSTER_BIN}"
[ -x "$BIN/e2e.test" ] || die "no e2e.test in $BIN: run hack/cluster/build.sh"
: "${KUBECONFIG:?KUBECONFIG must name the kubeconfig of the cluster}"
read -r -a PREFIX <<<"${E2E_PREFIX:-}"
mkdir -p "$REPORT_DIR"

FOCUS='\[sig-network\].*\[Conformance\]'
# Skipped, as kindnet's and Cilium's CI skip them: tests that need a cloud provider or
# a load balancer, and Serial/Disruptive ones (they restart or reconfigure nodes and
# cannot share the cluster with parallel tests). Nothing is skipped for being a network
# test our CNI fails: those are bugs.
SKIP='\[Serial\]|\[Disruptive\]|LoadBalancer|\[Feature:.*\]|\[Flaky\]'

# The tests shell out to kubectl: use the one built for this release.
export PATH="$BIN:$PATH"
"${PREFIX[@]}" "$BIN/ginkgo" --nodes="${E2E_PARALLEL:-4}" --timeout=90m --no-color --silence-skips \
    --focus="$FOCUS" --skip="$SKIP" \
    "$BIN/e2e.test" -- \
    --kubeconfig="$KUBECONFIG" \
    --kubectl-path="$BIN/kubectl" \
    --provider=local \
    --report-dir="$REPORT_DIR" \
    --dns-domain=cluster.local \
    --e2e-output-dir="$REPORT_DIR" \
    --non-blocking-taints='node-role.kubernetes.io/control-plane' \
    2>&1 | tee "$REPORT_DIR/ginkgo.log"
status=${PIPESTATUS[0]}
echo "conformance: ginkgo exit status $status; summary:"
grep -E '^(Ran [0-9]+ of [0-9]+ Specs|SUCCESS!|FAIL!|  \[FAIL\])' "$REPORT_DIR/ginkgo.log" || true

# Counts for hack/test.sh, in cargo's format: the specs in the focus, how many the skip
# list left out (a dry run of the focus alone tells the total), passed and failed.
in_focus="$("${PREFIX[@]}" "$BIN/e2e.test" --ginkgo.dry-run --ginkgo.focus="$FOCUS" \
    --ginkgo.no-color --kubeconfig="$KUBECONFIG" 2>/dev/null | grep -oE '^Ran [0-9]+' | grep -oE '[0-9]+' || echo 0)"
passed="$(grep -oE '[0-9]+ Passed' "$REPORT_DIR/ginkgo.log" | awk '{s+=$1} END {print s+0}')"
failed="$(grep -oE '[0-9]+ Failed' "$REPORT_DIR/ginkgo.log" | awk '{s+=$1} END {print s+0}')"
ran="$(grep -oE '^Ran [0-9]+' "$REPORT_DIR/ginkgo.log" | grep -oE '[0-9]+' | awk '{s+=$1} END {print s+0}')"
skipped=$(( in_focus > ran ? in_focus - ran : 0 ))
[ "$status" = 0 ] || [ "$failed" -gt 0 ] || failed=1
echo "test result: $([ "$status" = 0 ] && echo ok || echo FAILED). $passed passed; $failed failed; $skipped ignored (sig-network conformance: $in_focus in focus, $skipped skipped by the skip list)"
exit "$status"
