#!/usr/bin/env bash
# The main job, end to end: set the machine up, build, start the agents of two nodes joined
# by a wire (routed to each other from one node file), create three pods with the real
# netkit-cni plugin (invoked exactly as a runtime invokes it), and show traffic taking the
# BPF fast path — pod to pod on one node, and pod to pod across the wire — with the
# datapath counters that prove it. Then delete the pods and clean up.
#
#   hack/demo.sh          on this kernel (netkit if it has it, else the veth fallback)
#   hack/demo.sh --vm     inside the netkit VM (Debian's kernel with CONFIG_NETKIT=y)
#
# Everything lives in network namespaces the demo creates (two nodes, three pods), so the
# machine's own network is untouched.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IN_VM="${NETKIT_VM_GUEST:-}"

if [ -z "$IN_VM" ]; then
    [ -n "${NETKIT_SKIP_SETUP:-}" ] || "$REPO/hack/setup.sh"
    echo "==> building (release, the plugin static: hack/release.sh)"
    "$REPO/hack/release.sh"
    BIN="$REPO/target/dist"
    if [ "${1:-}" = "--vm" ]; then
        echo "==> booting the netkit VM and running the demo inside"
        exec "$REPO/hack/vm/run.sh" --bin "$BIN/netkit-cni" --bin "$BIN/netkit-agent" \
            --bin "$(command -v iperf3)" --bin "$(command -v nsenter)" --bin "$(command -v ping)" \
            --bin "$REPO/hack/demo.sh" -- demo.sh
    fi
else
    BIN="${NETKIT_BIN_DIR:-/opt/netkit/bin}"
fi
CNI="$BIN/netkit-cni"
AGENT="$BIN/netkit-agent"
TAG="nkdemo$$"
RUN="/run/$TAG"
# Two nodes joined by a wire (their eth0 uplinks), routed to each other from one node file:
# pods A and B on node a, pod C on node b.
NODES=(a b)
declare -A NODE_NS=([a]="$TAG-node-a" [b]="$TAG-node-b")
declare -A WIRE4=([a]=198.18.0.1 [b]=198.18.0.2)
declare -A WIRE6=([a]=fd00:18::1 [b]=fd00:18::2)
declare -A AGENT_PID=()
POD_A="$TAG-pod-a" POD_B="$TAG-pod-b" POD_C="$TAG-pod-c"
declare -A POD_NODE=([$POD_A]=a [$POD_B]=a [$POD_C]=b)
PODS=("$POD_A" "$POD_B" "$POD_C")

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
# on NODE CMD...: run CMD in that node's network namespace.
on() {
    local n="$1"
    shift
    nsenter --net="/run/netns/${NODE_NS[$n]}" "$@"
}
sock() { echo "$RUN/$1/agent.sock"; }
bpf_root() { echo "/sys/fs/bpf/$TAG-$1"; }

cleanup() {
    set +e
    for pod in "${PODS[@]}"; do
        [ -e "/run/netns/$pod" ] && cni DEL "$pod" >/dev/null 2>&1
        ip netns del "$pod" 2>/dev/null
    done
    for n in "${NODES[@]}"; do
        [ -n "${AGENT_PID[$n]:-}" ] && kill "${AGENT_PID[$n]}" 2>/dev/null && wait "${AGENT_PID[$n]}" 2>/dev/null
        ip netns del "${NODE_NS[$n]}" 2>/dev/null
        rm -rf "$(bpf_root "$n")"
    done
    rm -rf "$RUN"
}
trap cleanup EXIT

# Invoke the plugin as libcni does: the command in the environment, config on stdin,
# from the pod's node's network namespace.
cni() {
    local cmd="$1" pod="$2" n="${POD_NODE[$2]}"
    on "$n" env CNI_COMMAND="$cmd" CNI_CONTAINERID="$pod" CNI_NETNS="/run/netns/$pod" \
        CNI_IFNAME=eth0 CNI_PATH=/opt/cni/bin:/usr/lib/cni "$CNI" <"$RUN/$n/net.conf"
}

# counter NODE NAME: one datapath counter of that node's agent.
counter() { "$AGENT" stats --socket "$(sock "$1")" --json | sed -n "s/.*\"$2\": \([0-9]*\).*/\1/p"; }
pod_ip() { ip -n "$1" -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1; }
# ping_and_stream FROM_POD TO_POD TO_IP: three pings, then a 3-second iperf3 TCP stream.
ping_and_stream() {
    ip netns exec "$1" ping -c 3 -i 0.2 "$3"
    ip netns exec "$2" iperf3 -s -1 -D -B "$3" >/dev/null
    sleep 0.5
    ip netns exec "$1" iperf3 -c "$3" -t 3 -f g | grep -E 'sender|receiver'
}

say "network namespaces: two nodes joined by a wire, two pods for node a, one for node b"
mkdir -p "$RUN"
for n in "${NODES[@]}"; do ip netns add "${NODE_NS[$n]}"; done
ip link add eth0 netns "${NODE_NS[a]}" type veth peer name eth0 netns "${NODE_NS[b]}"
for n in "${NODES[@]}"; do
    on "$n" ip link set lo up
    on "$n" ip link set eth0 up
    on "$n" ip addr add "${WIRE4[$n]}/24" dev eth0
    on "$n" ip addr add "${WIRE6[$n]}/64" dev eth0 nodad
done
for pod in "${PODS[@]}"; do ip netns add "$pod"; done

say "one node file for both agents"
cat >"$RUN/nodes.yaml" <<NODES
nodes:
  - name: node-a
    addresses: [${WIRE4[a]}, "${WIRE6[a]}"]
    podCIDRs: [10.244.0.0/24, "fd00:244::/64"]
  - name: node-b
    addresses: [${WIRE4[b]}, "${WIRE6[b]}"]
    podCIDRs: [10.244.1.0/24, "fd00:244:1::/64"]
NODES
cat "$RUN/nodes.yaml"

say "starting netkit-agent on each node (pod CIDRs from the node file, uplink eth0)"
for n in "${NODES[@]}"; do
    mkdir -p "$RUN/$n"
    # nsenter execs the agent, so $! is the agent itself (a function or subshell here
    # would leave the agent running when cleanup kills that pid instead).
    nsenter --net="/run/netns/${NODE_NS[$n]}" "$AGENT" run --socket "$(sock "$n")" \
        --bpffs-root "$(bpf_root "$n")" --state-dir "$RUN/$n/state" \
        --node-name "node-$n" --nodes-file "$RUN/nodes.yaml" --uplink eth0 \
        --log-file "$RUN/$n/agent.log" &
    AGENT_PID[$n]=$!
    cat >"$RUN/$n/net.conf" <<CONF
{
  "cniVersion": "1.1.0",
  "name": "demo",
  "type": "netkit-cni",
  "agentSocket": "$(sock "$n")",
  "logFile": "$RUN/$n/cni.log"
}
CONF
done
for n in "${NODES[@]}"; do
    for _ in $(seq 50); do "$AGENT" status --socket "$(sock "$n")" >/dev/null 2>&1 && break; sleep 0.1; done
    echo "--- node $n"
    "$AGENT" status --socket "$(sock "$n")"
done
echo "--- node a's routes to node b's pods, and the managed neighbour entries behind them"
on a ip route show proto 197
on a ip -6 route show proto 197
on a ip neigh show dev eth0

say "CNI ADD for each pod (built-in IPAM: the agent allocates in the same round trip)"
cat "$RUN/a/net.conf"
for pod in "${PODS[@]}"; do
    echo "--- $pod on node ${POD_NODE[$pod]}"
    cni ADD "$pod"
done
A_IP="$(pod_ip "$POD_A")" B_IP="$(pod_ip "$POD_B")" C_IP="$(pod_ip "$POD_C")"

say "what the pods and the node see"
ip -n "$POD_A" -d link show eth0 | sed -n '1,3p'
ip -n "$POD_A" addr show eth0 | grep inet
ip -n "$POD_A" route
ip -n "$POD_A" -6 route | grep default
"$AGENT" endpoints --socket "$(sock a)"

say "pod A ($A_IP) -> pod B ($B_IP), same node: ping and a 3-second TCP stream"
before_local=$(( $(counter a redirect) + $(counter a redirect_peer) ))
ping_and_stream "$POD_A" "$POD_B" "$B_IP"
echo "pod-to-pod packets short-cut by BPF on node a (redirect + redirect_peer): $(( $(counter a redirect) + $(counter a redirect_peer) - before_local ))"

say "pod C ($C_IP, node b) -> pod A ($A_IP, node a), across the wire: ping and a 3-second TCP stream"
before_out=$(( $(counter b fib_ok) + $(counter b redirect_neigh) ))
before_in=$(counter a redirect_peer)
ping_and_stream "$POD_C" "$POD_A" "$A_IP"
echo "routed by pod C's egress program on node b, straight to the wire (fib_ok + redirect_neigh): $(( $(counter b fib_ok) + $(counter b redirect_neigh) - before_out ))"
echo "put straight into pod A by node a's uplink program (redirect_peer):                      $(( $(counter a redirect_peer) - before_in ))"

say "node b itself -> pod A: not a pod, so both directions take the host stack (conntrack sees the flow)"
before_pass=$(counter a pass)
on b ping -c 3 -i 0.2 "$A_IP"
echo "handed to node a's host stack by its uplink program (pass): $(( $(counter a pass) - before_pass ))"

say "a spoofing pod is stopped"
before_spoof=$(counter a drop_spoof)
ip netns exec "$POD_A" ip addr add 10.244.0.250/32 dev eth0
ip netns exec "$POD_A" ping -c 2 -W 1 -I 10.244.0.250 "$B_IP" >/dev/null 2>&1 || true
echo "spoofed packets dropped (drop_spoof): $(( $(counter a drop_spoof) - before_spoof ))"

say "all datapath counters"
for n in "${NODES[@]}"; do
    echo "--- node $n"
    "$AGENT" stats --socket "$(sock "$n")"
done

say "CNI DEL for each pod"
for pod in "${PODS[@]}"; do cni DEL "$pod" && echo "$pod deleted"; done
for n in "${NODES[@]}"; do "$AGENT" endpoints --socket "$(sock "$n")"; done
say "done"
