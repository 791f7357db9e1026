#!/usr/bin/env bash
# Benchmarks, each measured in one run against peers on the same machine:
#  1. pod start/stop: CNI ADD and DEL per pod for netkit-cni (built-in IPAM; the agent has
#     programmed the datapath before ADD returns) and for the reference ptp + host-local;
#  2. pod-to-pod TCP throughput (iperf3, one stream) for both, against loopback inside
#     one namespace (the physical limit of this machine).
# Prints medians, throughputs and ratios.
#
#   hack/bench.sh [PODS]          on this kernel (default 20 pods each for 1.)
#   hack/bench.sh --vm [PODS]     inside the netkit VM (TCG: absolute figures are
#                                 emulation-bound, the ratios are what to read)
#
# Runs in namespaces it creates; needs the release binaries (it builds them) and
# Debian's containernetworking-plugins. Inside the netkit VM (NETKIT_VM_GUEST=1) it uses
# the binaries in NETKIT_BIN_DIR and skips ptp when /usr/lib/cni is absent.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${NETKIT_VM_GUEST:-}" ]; then
    (cd "$REPO" && cargo build --release --bins -p netkit-cni -p netkit-agent >/dev/null 2>&1)
    BIN="$REPO/target/release"
    if [ "${1:-}" = "--vm" ]; then
        shift
        # The reference plugins and every tool the script uses go in with it.
        exec "$REPO/hack/vm/run.sh" --bin "$BIN/netkit-cni" --bin "$BIN/netkit-agent" \
            --bin "$REPO/hack/bench.sh" --bin /usr/lib/cni/ptp --bin /usr/lib/cni/host-local \
            --bin "$(command -v iperf3)" --bin "$(command -v bc)" --bin "$(command -v nsenter)" \
            --bin "$(command -v date)" --env NETKIT_REF_CNI=/opt/netkit/bin -- bench.sh "$@"
    fi
else
    BIN="${NETKIT_BIN_DIR:-/opt/netkit/bin}"
fi
REF="${NETKIT_REF_CNI:-/usr/lib/cni}"
PODS="${1:-20}"
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
        CNI_NETNS="/run/netns/$pod" CNI_IFNAME=eth0 CNI_PATH="$REF" "$plugin" <"$conf" >"$RUN/out" \
        || { echo "bench: $cmd failed for $pod with $plugin: $(cat "$RUN/out")" >&2; exit 1; }
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
mode=$([ -n "${NETKIT_VM_GUEST:-}" ] && echo netkit || echo "auto: veth here")
printf 'netkit-cni (%s, built-in IPAM, dual-stack): ADD median %6.1f ms   DEL median %6.1f ms   (%s pods)\n' \
    "$mode" "$(echo "$nk_add/1000" | bc -l)" "$(echo "$nk_del/1000" | bc -l)" "$PODS"
if [ -x "$REF/ptp" ]; then
    read -r ptp_add ptp_del < <(bench ptp "$REF/ptp" "$RUN/ptp.conf")
    printf 'ptp + host-local (IPv4 only):              ADD median %6.1f ms   DEL median %6.1f ms\n' \
        "$(echo "$ptp_add/1000" | bc -l)" "$(echo "$ptp_del/1000" | bc -l)"
    printf 'ratio netkit-cni / ptp:                     ADD %.2f   DEL %.2f\n' \
        "$(echo "$nk_add/$ptp_add" | bc -l)" "$(echo "$nk_del/$ptp_del" | bc -l)"
fi

# --- throughput ------------------------------------------------------------------------
SECS="${NETKIT_BENCH_SECS:-5}"
# iperf3 from pod CLIENT to pod SERVER at ADDR, one TCP stream -> Gbit/s
iperf() {
    local client="$1" server="$2" addr="$3"
    ip netns exec "$server" iperf3 -s -1 -D -B "$addr" -I "$RUN/iperf.pid" >/dev/null
    sleep 0.3
    ip netns exec "$client" iperf3 -c "$addr" -t "$SECS" -J \
        | sed -n 's/.*"bits_per_second":[[:space:]]*\([0-9.e+]*\).*/\1/p' | tail -n1 \
        | awk '{printf "%.2f", $1 / 1e9}'
}
pod_addr() { ip -n "$1" -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1; }

two_pods() { # NAME PLUGIN CONF -> creates $TAG-NAME-t1/t2
    local name="$1" plugin="$2" conf="$3" i
    for i in 1 2; do
        ip netns add "$TAG-$name-t$i"
        time_cni "$plugin" "$conf" ADD "$TAG-$name-t$i" >/dev/null
    done
}

if command -v iperf3 >/dev/null; then
    two_pods netkit "$BIN/netkit-cni" "$RUN/netkit.conf"
    nk_bw=$(iperf "$TAG-netkit-t1" "$TAG-netkit-t2" "$(pod_addr "$TAG-netkit-t2")")
    ip netns add "$TAG-lo"; ip -n "$TAG-lo" link set lo up
    lo_bw=$(iperf "$TAG-lo" "$TAG-lo" 127.0.0.1)
    printf 'pod-to-pod TCP, netkit-cni:                 %6s Gbit/s\n' "$nk_bw"
    printf 'loopback in one namespace (limit):          %6s Gbit/s\n' "$lo_bw"
    if [ -x "$REF/ptp" ]; then
        two_pods ptp "$REF/ptp" "$RUN/ptp.conf"
        ptp_bw=$(iperf "$TAG-ptp-t1" "$TAG-ptp-t2" "$(pod_addr "$TAG-ptp-t2")")
        printf 'pod-to-pod TCP, ptp:                        %6s Gbit/s\n' "$ptp_bw"
        printf 'ratio netkit-cni / ptp:                     %.2f\n' "$(echo "$nk_bw/$ptp_bw" | bc -l)"
    fi
    printf 'ratio netkit-cni / loopback:                %.2f\n' "$(echo "$nk_bw/$lo_bw" | bc -l)"
fi
