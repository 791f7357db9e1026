#!/usr/bin/env bash
# The main job, end to end: set the machine up, build, start a node agent, create two pods
# with the real netkit-cni plugin (invoked exactly as a runtime invokes it), and show
# traffic taking the BPF fast path — pod to pod, and from outside the node into a pod —
# with the datapath counters that prove it. Then delete the pods and clean up.
#
#   hack/demo.sh          on this kernel (netkit if it has it, else the veth fallback)
#   hack/demo.sh --vm     inside the netkit VM (Debian's kernel with CONFIG_NETKIT=y)
#
# Everything lives in network namespaces the demo creates ("node", "outside", pods), so
# the machine's own network is untouched.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IN_VM="${NETKIT_VM_GUEST:-}"

if [ -z "$IN_VM" ]; then
    [ -n "${NETKIT_SKIP_SETUP:-}" ] || "$REPO/hack/setup.sh"
    echo "==> building (release)"
    (cd "$REPO" && cargo build --release --bins -p netkit-cni -p netkit-agent)
    BIN="$REPO/target/release"
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
NODE="$TAG-node"
OUTSIDE="$TAG-out"
PODS=("$TAG-pod-a" "$TAG-pod-b")
RUN="/run/$TAG"
BPF_ROOT="/sys/fs/bpf/$TAG"
SOCK="$RUN/agent.sock"
AGENT_PID=""

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
node() { nsenter --net="/run/netns/$NODE" "$@"; }

cleanup() {
    set +e
    for pod in "${PODS[@]}"; do
        [ -e "/run/netns/$pod" ] && cni DEL "$pod" >/dev/null 2>&1
        ip netns del "$pod" 2>/dev/null
    done
    [ -n "$AGENT_PID" ] && kill "$AGENT_PID" 2>/dev/null && wait "$AGENT_PID" 2>/dev/null
    ip netns del "$NODE" 2>/dev/null
    ip netns del "$OUTSIDE" 2>/dev/null
    rm -rf "$BPF_ROOT" "$RUN"
}
trap cleanup EXIT

# Invoke the plugin as libcni does: the command in the environment, config on stdin,
# from the node's network namespace.
cni() {
    local cmd="$1" pod="$2"
    node env CNI_COMMAND="$cmd" CNI_CONTAINERID="$pod" CNI_NETNS="/run/netns/$pod" \
        CNI_IFNAME=eth0 CNI_PATH=/opt/cni/bin:/usr/lib/cni "$CNI" <"$RUN/net.conf"
}

stats() { "$AGENT" stats --socket "$SOCK" --json; }
counter() { stats | sed -n "s/.*\"$1\": \([0-9]*\).*/\1/p"; }

say "network namespaces: a node, an outside host on its uplink, two pods"
mkdir -p "$RUN"
ip netns add "$NODE"
ip netns add "$OUTSIDE"
ip link add eth0 netns "$NODE" type veth peer name eth0 netns "$OUTSIDE"
node ip link set lo up
node ip link set eth0 up
node ip addr add 198.18.0.1/24 dev eth0
ip -n "$OUTSIDE" link set eth0 up
ip -n "$OUTSIDE" addr add 198.18.0.2/24 dev eth0
ip -n "$OUTSIDE" route add 10.244.0.0/24 via 198.18.0.1
for pod in "${PODS[@]}"; do ip netns add "$pod"; done

say "starting netkit-agent on the node (pod CIDRs 10.244.0.0/24, fd00:244::/64, uplink eth0)"
# nsenter execs the agent, so $! is the agent itself (a function or subshell here would
# leave the agent running when cleanup kills that pid instead).
nsenter --net="/run/netns/$NODE" "$AGENT" run --socket "$SOCK" --bpffs-root "$BPF_ROOT" --state-dir "$RUN/state" \
    --pod-cidr 10.244.0.0/24 --pod-cidr fd00:244::/64 --uplink eth0 \
    --log-file "$RUN/agent.log" &
AGENT_PID=$!
for _ in $(seq 50); do "$AGENT" status --socket "$SOCK" >/dev/null 2>&1 && break; sleep 0.1; done
"$AGENT" status --socket "$SOCK"

cat >"$RUN/net.conf" <<CONF
{
  "cniVersion": "1.1.0",
  "name": "demo",
  "type": "netkit-cni",
  "agentSocket": "$SOCK",
  "logFile": "$RUN/cni.log"
}
CONF

say "CNI ADD for each pod (built-in IPAM: the agent allocates in the same round trip)"
for pod in "${PODS[@]}"; do
    echo "--- $pod"
    cni ADD "$pod"
done
A_IP="$(ip -n "${PODS[0]}" -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1)"
B_IP="$(ip -n "${PODS[1]}" -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1)"

say "what the pods and the node see"
ip -n "${PODS[0]}" -d link show eth0 | sed -n '1,3p'
ip -n "${PODS[0]}" addr show eth0 | grep inet
ip -n "${PODS[0]}" route
ip -n "${PODS[0]}" -6 route | grep default
"$AGENT" endpoints --socket "$SOCK"

say "pod A ($A_IP) -> pod B ($B_IP): ping and a 3-second TCP stream"
before_local=$(( $(counter redirect) + $(counter redirect_peer) ))
ip netns exec "${PODS[0]}" ping -c 3 -i 0.2 "$B_IP"
ip netns exec "${PODS[1]}" iperf3 -s -1 -D -B "$B_IP" >/dev/null
sleep 0.5
ip netns exec "${PODS[0]}" iperf3 -c "$B_IP" -t 3 -f g | grep -E 'sender|receiver'
after_local=$(( $(counter redirect) + $(counter redirect_peer) ))
echo "pod-to-pod packets short-cut by BPF (redirect + redirect_peer): $(( after_local - before_local ))"

say "outside host -> pod A through the node's uplink"
before_in=$(counter redirect_peer)
ip netns exec "$OUTSIDE" ping -c 3 -i 0.2 "$A_IP"
echo "packets the uplink program put straight into the pod (redirect_peer): $(( $(counter redirect_peer) - before_in ))"

say "a spoofing pod is stopped"
before_spoof=$(counter drop_spoof)
ip netns exec "${PODS[0]}" ip addr add 10.244.0.250/32 dev eth0
ip netns exec "${PODS[0]}" ping -c 2 -W 1 -I 10.244.0.250 "$B_IP" >/dev/null 2>&1 || true
echo "spoofed packets dropped (drop_spoof): $(( $(counter drop_spoof) - before_spoof ))"

say "all datapath counters"
"$AGENT" stats --socket "$SOCK"

say "CNI DEL for each pod"
for pod in "${PODS[@]}"; do cni DEL "$pod" && echo "$pod deleted"; done
"$AGENT" endpoints --socket "$SOCK"
say "done"
