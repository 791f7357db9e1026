#!/usr/bin/env bash
# Pod start/stop cost: time CNI ADD and DEL per pod for netkit-cni (built-in IPAM, the
# agent programs the datapath before ADD returns) and, in the same run on the same
# machine, for the reference ptp + host-local plugins. Prints medians and the ratio.
#
#   hack/bench-podstart.sh [PODS]        (default 20 pods each)
#
# Runs in namespaces it creates; needs the release binaries (it builds them) and
# Debian's containernetworking-plugins. Inside the netkit VM (NETKIT_VM_GUEST=1) it uses
# the binaries in NETKIT_BIN_DIR and skips ptp when /usr/lib/cni is absent.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PODS="${1:-20}"
if [ -z "${NETKIT_VM_GUEST:-}" ]; then
    (cd "$REPO" && cargo build --release --bins -p netkit-cni -p netkit-agent >/dev/null 2>&1)
    BIN="$REPO/target/release"
else
    BIN="${NETKIT_BIN_DIR:-/opt/netkit/bin}"
fi
REF=/usr/lib/cni
TAG="nkbench$$"
NODE="$TAG-node"
RUN="/run/$TAG"
SOCK="$RUN/agent.sock"
AGENT_PID=""

cleanup() {
    set +e
    [ -n "$AGENT_PID" ] && kill "$AGENT_PID" 2>/dev/null && wait "$AGENT_PID" 2>/dev/null
    for ns in $(ip netns list | awk '{print $1}' | grep "^$TAG"); do ip netns del "$ns"; done
    rm -rf "/sys/fs/bpf/$TAG" "$RUN"
}
trap cleanup EXIT
mkdir -p "$RUN"
ip netns add "$NODE"
ip -n "$NODE" link set lo up
nsenter --net="/run/netns/$NODE" "$BIN/netkit-agent" run --socket "$SOCK" --bpffs-root "/sys/fs/bpf/$TAG" \
    --state-dir "$RUN/state" --pod-cidr 10.250.0.0/16 --pod-cidr fd00:250::/64 --no-uplink \
    --log-level warn --log-file "$RUN/agent.log" &
AGENT_PID=$!
for _ in $(seq 100); do "$BIN/netkit-agent" status --socket "$SOCK" >/dev/null 2>&1 && break; sleep 0.1; done

cat >"$RUN/netkit.conf" <<CONF
{"cniVersion":"1.1.0","name":"bench","type":"netkit-cni","agentSocket":"$SOCK","stateDir":"$RUN/cni"}
CONF
cat >"$RUN/ptp.conf" <<CONF
{"cniVersion":"1.0.0","name":"benchptp","type":"ptp","ipMasq":false,
 "ipam":{"type":"host-local","subnet":"10.251.0.0/16","dataDir":"$RUN/host-local"}}
CONF

now_us() { echo $(( $(date +%s%N) / 1000 )); }

# time_cni PLUGIN CONF CMD POD -> microseconds on stdout
time_cni() {
    local plugin="$1" conf="$2" cmd="$3" pod="$4" start end
    start=$(now_us)
    nsenter --net="/run/netns/$NODE" env CNI_COMMAND="$cmd" CNI_CONTAINERID="$pod" \
        CNI_NETNS="/run/netns/$pod" CNI_IFNAME=eth0 CNI_PATH="$REF" "$plugin" <"$conf" >/dev/null \
        || { echo "bench: $cmd failed for $pod with $plugin" >&2; exit 1; }
    end=$(now_us)
    echo $(( end - start ))
}

median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print int((a[NR/2]+a[NR/2+1])/2)}'; }

# bench NAME PLUGIN CONF -> "add_median del_median" (microseconds)
bench() {
    local name="$1" plugin="$2" conf="$3" i pod
    : >"$RUN/$name.add"; : >"$RUN/$name.del"
    for i in $(seq "$PODS"); do
        pod="$TAG-$name-$i"; ip netns add "$pod"
        time_cni "$plugin" "$conf" ADD "$pod" >>"$RUN/$name.add"
    done
    for i in $(seq "$PODS"); do
        pod="$TAG-$name-$i"
        time_cni "$plugin" "$conf" DEL "$pod" >>"$RUN/$name.del"
        ip netns del "$pod"
    done
    echo "$(median <"$RUN/$name.add") $(median <"$RUN/$name.del")"
}

read -r nk_add nk_del < <(bench netkit "$BIN/netkit-cni" "$RUN/netkit.conf")
mode=$("$BIN/netkit-agent" endpoints --socket "$SOCK" >/dev/null; echo "$( [ -n "${NETKIT_VM_GUEST:-}" ] && echo netkit || echo auto)")
printf 'netkit-cni (%s, built-in IPAM, dual-stack): ADD median %6.1f ms   DEL median %6.1f ms   (%s pods)\n' \
    "$mode" "$(echo "$nk_add/1000" | bc -l)" "$(echo "$nk_del/1000" | bc -l)" "$PODS"
if [ -x "$REF/ptp" ]; then
    read -r ptp_add ptp_del < <(bench ptp "$REF/ptp" "$RUN/ptp.conf")
    printf 'ptp + host-local (IPv4 only):              ADD median %6.1f ms   DEL median %6.1f ms\n' \
        "$(echo "$ptp_add/1000" | bc -l)" "$(echo "$ptp_del/1000" | bc -l)"
    printf 'ratio netkit-cni / ptp:                     ADD %.2f   DEL %.2f\n' \
        "$(echo "$nk_add/$ptp_add" | bc -l)" "$(echo "$nk_del/$ptp_del" | bc -l)"
fi
