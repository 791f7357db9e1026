#!/usr/bin/env bash
# Cross-node benchmark, measured in one run: two "nodes" (network namespaces joined by a
# bridge, as the multi-node tier builds them), an agent on each routing the other's pod
# CIDR from a node file, one pod on each; then
#   TCP throughput (iperf3, 1 stream) and ICMP round-trip time (ping, 500 at 5 ms),
#   pod -> remote pod against node -> node over the same wire.
# Prints both and their ratios, plus the datapath counters that prove the fast path ran.
#
#   hack/bench-crossnode.sh        on this kernel (veth here) (NETKIT_BENCH_SECS=5 per run)
#   hack/bench-crossnode.sh --vm   inside the netkit VM (TCG: read the ratios)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${NETKIT_VM_GUEST:-}" ]; then
    (cd "$REPO" && cargo build --release --bins -p netkit-cni -p netkit-agent >/dev/null 2>&1)
    BIN="$REPO/target/release"
    if [ "${1:-}" = "--vm" ]; then
        # The same measurement inside the netkit VM: pods on netkit there.
        exec "$REPO/hack/vm/run.sh" --bin "$BIN/netkit-cni" --bin "$BIN/netkit-agent" \
            --bin "$REPO/hack/bench-crossnode.sh" --bin "$(command -v iperf3)" \
            --bin "$(command -v bc)" --bin "$(command -v nsenter)" -- bench-crossnode.sh
    fi
else
    BIN="${NETKIT_BIN_DIR:-/opt/netkit/bin}"
fi
SECS="${NETKIT_BENCH_SECS:-5}"
TAG="nkx$$"
RUN="/run/$TAG"
PIDS=()

cleanup() {
    set +e
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
    for ns in $(ip netns list | awk '{print $1}' | grep "^$TAG"); do ip netns del "$ns"; done
    rm -rf "/sys/fs/bpf/$TAG-"* "$RUN"
}
trap cleanup EXIT
mkdir -p "$RUN"

ip netns add "$TAG-wire"
ip -n "$TAG-wire" link add br0 type bridge
ip -n "$TAG-wire" link set br0 up
for i in 1 2; do
    n="$TAG-n$i"
    ip netns add "$n"
    ip -n "$n" link set lo up
    ip netns exec "$n" sh -c 'echo 1 > /proc/sys/net/ipv4/ip_forward'
    ip link add "${TAG}p$i" netns "$TAG-wire" type veth peer eth0 netns "$n"
    ip -n "$TAG-wire" link set "${TAG}p$i" master br0 up
    ip -n "$n" addr add "192.0.2.$i/24" dev eth0
    ip -n "$n" link set eth0 up
done
cat >"$RUN/nodes.yaml" <<EOF
nodes:
  - name: n1
    addresses: [192.0.2.1]
    podCIDRs: [10.201.1.0/24]
  - name: n2
    addresses: [192.0.2.2]
    podCIDRs: [10.201.2.0/24]
EOF
for i in 1 2; do
    n="$TAG-n$i"
    nsenter --net="/run/netns/$n" "$BIN/netkit-agent" run --socket "$RUN/n$i.sock" \
        --bpffs-root "/sys/fs/bpf/$TAG-n$i" --state-dir "$RUN/n$i-state" \
        --node-name "n$i" --nodes-file "$RUN/nodes.yaml" --uplink eth0 \
        --log-level warn --log-file "$RUN/n$i.log" &
    PIDS+=($!)
    for _ in $(seq 100); do "$BIN/netkit-agent" status --socket "$RUN/n$i.sock" >/dev/null 2>&1 && break; sleep 0.1; done
    printf '{"cniVersion":"1.1.0","name":"x","type":"netkit-cni","agentSocket":"%s","stateDir":"%s"}\n' \
        "$RUN/n$i.sock" "$RUN/n$i-cni" >"$RUN/n$i.conf"
    ip netns add "$TAG-pod$i"
    nsenter --net="/run/netns/$n" env CNI_COMMAND=ADD CNI_CONTAINERID="$TAG-pod$i" \
        CNI_NETNS="/run/netns/$TAG-pod$i" CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni \
        "$BIN/netkit-cni" <"$RUN/n$i.conf" >"$RUN/pod$i.json"
done
# Routes take a moment to appear (the agents poll the file every second).
for _ in $(seq 50); do
    [ "$(ip -n "$TAG-n1" route show proto 197 | wc -l)" -ge 1 ] && break
    sleep 0.2
done
pod_ip() { ip -n "$TAG-pod$1" -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1; }
P2="$(pod_ip 2)"
stat() { "$BIN/netkit-agent" stats --json --socket "$RUN/$1.sock" | sed -n "s/.*\"$2\":[[:space:]]*\([0-9]*\).*/\1/p"; }

# iperf3 CLIENT_NS SERVER_NS ADDR -> Gbit/s
iperf() {
    ip netns exec "$2" iperf3 -s -1 -D -B "$3" -I "$RUN/iperf.pid" >/dev/null
    sleep 0.3
    ip netns exec "$1" iperf3 -c "$3" -t "$SECS" -J |
        sed -n 's/.*"bits_per_second":[[:space:]]*\([0-9.e+]*\).*/\1/p' | tail -n1 |
        awk '{printf "%.2f", $1 / 1e9}'
}
# rtt FROM_NS ADDR -> average RTT in microseconds over 500 pings
rtt() {
    ip netns exec "$1" ping -q -c 500 -i 0.005 "$2" | sed -n 's|.*= [0-9.]*/\([0-9.]*\)/.*|\1|p' |
        awk '{printf "%.0f", $1 * 1000}'
}

ip netns exec "$TAG-pod1" ping -c 3 -W 1 -q "$P2" >/dev/null || { echo "bench: pods cannot reach each other" >&2; exit 1; }
sent0=$(( $(stat n1 fib_ok) + $(stat n1 redirect_neigh) ))
recv0=$(stat n2 redirect_peer)
pod_bw=$(iperf "$TAG-pod1" "$TAG-pod2" "$P2")
pod_rtt=$(rtt "$TAG-pod1" "$P2")
sent=$(( $(stat n1 fib_ok) + $(stat n1 redirect_neigh) - sent0 ))
recv=$(( $(stat n2 redirect_peer) - recv0 ))
node_bw=$(iperf "$TAG-n1" "$TAG-n2" 192.0.2.2)
node_rtt=$(rtt "$TAG-n1" 192.0.2.2)

mode=$([ -n "${NETKIT_VM_GUEST:-}" ] && echo "netkit (VM)" || echo "veth fallback")
printf 'cross-node, %s, pods on %s, %s s per run\n' "$(uname -r)" "$mode" "$SECS"
printf '  TCP throughput   pod -> remote pod %7s Gbit/s   node -> node %7s Gbit/s   ratio %.2f\n' \
    "$pod_bw" "$node_bw" "$(echo "$pod_bw/$node_bw" | bc -l)"
printf '  ICMP RTT (avg)   pod -> remote pod %7s us       node -> node %7s us       ratio %.2f\n' \
    "$pod_rtt" "$node_rtt" "$(echo "$pod_rtt/$node_rtt" | bc -l)"
printf '  fast path: %s packets routed by pod egress on n1 (fib_ok + redirect_neigh), %s put into the pod by n2 uplink (redirect_peer)\n' \
    "$sent" "$recv"
