#!/usr/bin/env bash
# Set the machine up (hack/setup.sh) and run every test tier, or the tiers named:
#   hack/test.sh [lint] [unit] [fuzz] [netns] [multinode] [containerd] [vm] [cluster]
# Each tier's output goes to the terminal and to target/test-logs/<tier>.log; the
# summary at the end gives per-tier time and test counts. Exit status is 0 only when
# every selected tier passed.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
ALL_TIERS=(lint unit fuzz netns multinode containerd vm cluster)

usage() { echo "usage: $0 [$(IFS='|'; echo "${ALL_TIERS[*]}")]..." >&2; exit 2; }

tiers=("$@")
[ "${#tiers[@]}" -gt 0 ] || tiers=("${ALL_TIERS[@]}")
for t in "${tiers[@]}"; do
    case " ${ALL_TIERS[*]} " in *" $t "*) ;; *) echo "unknown tier: $t" >&2; usage ;; esac
done

if [ -z "${NETKIT_SKIP_SETUP:-}" ]; then
    "$REPO/hack/setup.sh"
fi

LOGS="$REPO/target/test-logs"
mkdir -p "$LOGS"
export NETKIT_BIN_DIR="$REPO/target/debug"
export CARGO_TERM_COLOR=never

echo
echo "==> building binaries and test executables"
build_start=$(date +%s)
cargo build --workspace --exclude netkit-bpf --bins --tests
build_secs=$(( $(date +%s) - build_start ))

# Every cargo call selects the same packages as the build above, so features unify the
# same way and nothing is compiled twice.
WS=(--workspace --exclude netkit-bpf)

# The guest half of the VM tier: the host-side test boots it inside the VM.
vm_guest_bin() {
    cargo test "${WS[@]}" --test vm_guest --no-run --message-format=json 2>/dev/null \
        | grep -o '"executable":"[^"]*vm_guest[^"]*"' | tail -n1 | cut -d'"' -f4
}

run_tier() {
    case "$1" in
        lint)
            cargo fmt --all --check &&
            cargo clippy "${WS[@]}" --all-targets -- -D warnings ;;
        unit) cargo test "${WS[@]}" --lib --bins ;;
        fuzz) hack/fuzz.sh ;;
        netns) cargo test "${WS[@]}" --test netns ;;
        multinode) cargo test "${WS[@]}" --test multinode ;;
        containerd) cargo test "${WS[@]}" --test containerd ;;
        vm) NETKIT_VM_GUEST_BIN="$(vm_guest_bin)" cargo test "${WS[@]}" --test vm -- --nocapture ;;
        # A real two-node Kubernetes (hack/cluster/run.sh): our checks and the upstream
        # sig-network conformance tests; each prints a cargo-style result line.
        cluster) hack/cluster/run.sh ;;
    esac
}

declare -A status seconds counts
failed=0
total_passed=0
total_failed=0
total_ignored=0
for t in "${tiers[@]}"; do
    echo
    echo "==> tier: $t"
    start=$(date +%s)
    if run_tier "$t" 2>&1 | tee "$LOGS/$t.log"; then status[$t]=ok; else status[$t]=FAILED; failed=1; fi
    seconds[$t]=$(( $(date +%s) - start ))
    # Count cargo's own result lines only (guest output inside the VM tier is prefixed,
    # so it is not counted twice).
    p=$(grep -E '^test result:' "$LOGS/$t.log" | sed -E 's/.* ([0-9]+) passed.*/\1/' | paste -sd+ - | bc 2>/dev/null || true)
    f=$(grep -E '^test result:' "$LOGS/$t.log" | sed -E 's/.* ([0-9]+) failed.*/\1/' | paste -sd+ - | bc 2>/dev/null || true)
    i=$(grep -E '^test result:' "$LOGS/$t.log" | sed -E 's/.* ([0-9]+) ignored.*/\1/' | paste -sd+ - | bc 2>/dev/null || true)
    counts[$t]="${p:-0} passed, ${f:-0} failed, ${i:-0} ignored"
    total_passed=$(( total_passed + ${p:-0} ))
    total_failed=$(( total_failed + ${f:-0} ))
    total_ignored=$(( total_ignored + ${i:-0} ))
done

echo
echo "==> summary (build: ${build_secs}s)"
printf '%-12s %-7s %6s  %s\n' tier status time tests
for t in "${tiers[@]}"; do
    printf '%-12s %-7s %5ss  %s\n' "$t" "${status[$t]}" "${seconds[$t]}" "${counts[$t]}"
done
if [ "$failed" -ne 0 ] && [ "$total_failed" -eq 0 ]; then
    # A tier can fail without a failing test (a build or lint error): count it.
    total_failed=1
fi
echo "total: ${total_passed} passed, ${total_failed} failed, ${total_ignored} skipped"
exit "$failed"
