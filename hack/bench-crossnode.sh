#!/usr/bin/env bash
# Cross-node benchmark, measured in one run: two "nodes" (network namespaces joined by a
# bridge, as the multi-node tier builds them), an agent on each routing the other's pod
# CIDR from a node file, one netkit-cni pod on each and, as the reference, one pod of the
# `ptp` plugin (host-local IPAM, plain kernel routing, no BPF) on each; then, over the same
# wire,
#   TCP throughput (iperf3, 1 stream), ICMP round-trip time (ping, 500 at 5 ms), and
#   request/response round trips p50/p99 (sockperf ping-pong, TCP and UDP, back to back),
# for pod -> remote pod (netkit-cni), ptp pod -> remote ptp pod, and node -> node. Each
# round measures the three one after the other; with several rounds the figure is the
# median over rounds. Prints the figures and the ratios to node -> node, the datapath
# counters that prove the fast path ran, and what each BPF program costs per run: a last
# phase turns kernel.bpf_stats_enabled on (restored on exit) around one more UDP
# ping-pong per path and reads run_cnt / run_time_ns of the programs behind the agents'
# pinned links, and BPF_PROG_TEST_RUN times each program alone on one packet
# (hack/bench/bpf.c, built with cc). Last, the floor: the pod path again with netkit-cni's
# programs swapped for bare ones that look nothing up (hack/bench/bpf.c bare-out, bare-in).
#
#   hack/bench-crossnode.sh        on this kernel (veth here)
#   hack/bench-crossnode.sh --vm   inside the netkit VM (TCG: read the ratios)
#
# Knobs (environment): NETKIT_BENCH_SECS seconds per test (default 5), NETKIT_BENCH_ROUNDS
# rounds (default 1), NETKIT_BENCH_CPU the CPU ping and sockperf (client and server) are
# pinned to (default the last), NETKIT_BENCH_BIN a directory with netkit-cni and netkit-agent to
# measure instead of building release binaries from this tree (to compare two builds).
# Everything runs in namespaces named nkx<PID>-*, with bpffs and state under nkx<PID>;
# all of it is removed on exit. sockperf, cc or the ptp plugin missing skips their figures.
set -euo pipefail
export LC_ALL=C

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${NETKIT_VM_GUEST:-}" ]; then
    if [ -n "${NETKIT_BENCH_BIN:-}" ]; then
        BIN="$(cd "$NETKIT_BENCH_BIN" && pwd)"
    else
        "$REPO/hack/release.sh" >/dev/null 2>&1 ||
            { echo "bench: hack/release.sh failed" >&2; exit 1; }
        BIN="$REPO/target/dist"
    fi
    BPFSTAT="$REPO/target/bench/crossnode/nk-bench-bpf"
    mkdir -p "$(dirname "$BPFSTAT")"
    if ! { command -v cc >/dev/null && cc -O2 -Wall -o "$BPFSTAT.$$" "$REPO/hack/bench/bpf.c" &&
        mv -f "$BPFSTAT.$$" "$BPFSTAT"; }; then
        rm -f "$BPFSTAT" "$BPFSTAT.$$"
    fi
    if [ "${1:-}" = "--vm" ]; then
        # The same measurement inside the netkit VM: pods on netkit there.
        vmargs=(--bin "$BIN/netkit-cni" --bin "$BIN/netkit-agent" --bin "$REPO/hack/bench-crossnode.sh"
            --bin "$REPO/hack/bench/stats.sh"
            --bin "$(command -v iperf3)" --bin "$(command -v nsenter)" --bin "$(command -v taskset)")
        for t in sockperf; do
            command -v "$t" >/dev/null && vmargs+=(--bin "$(command -v "$t")")
        done
        [ -x "$BPFSTAT" ] && vmargs+=(--bin "$BPFSTAT")
        [ -x /usr/lib/cni/ptp ] && [ -x /usr/lib/cni/host-local ] &&
            vmargs+=(--bin /usr/lib/cni/ptp --bin /usr/lib/cni/host-local --env NETKIT_REF_CNI=/opt/netkit/bin)
        for v in NETKIT_BENCH_SECS NETKIT_BENCH_ROUNDS NETKIT_BENCH_CPU; do
            [ -n "${!v:-}" ] && vmargs+=(--env "$v=${!v}")
        done
        export NETKIT_VM_TIMEOUT="${NETKIT_VM_TIMEOUT:-1800}"
        exec "$REPO/hack/vm/run.sh" "${vmargs[@]}" -- bench-crossnode.sh
    fi
else
    BIN="${NETKIT_BIN_DIR:-/opt/netkit/bin}"
    BPFSTAT="$BIN/nk-bench-bpf"
fi
REF="${NETKIT_REF_CNI:-/usr/lib/cni}"
# shellcheck source=hack/bench/stats.sh
. "$([ -n "${NETKIT_VM_GUEST:-}" ] && echo "$BIN" || echo "$REPO/hack/bench")/stats.sh"
SECS="${NETKIT_BENCH_SECS:-5}"
ROUNDS="${NETKIT_BENCH_ROUNDS:-1}"
# Round trips are timed with client and server on one CPU: what is measured is then the
# path's own work (every hop runs on the sending CPU: veth and the backlog stay local),
# not how long a sleeping CPU takes to wake for a cross-CPU wake-up, which on a VM is
# tens of microseconds and swamps the path.
CPU="${NETKIT_BENCH_CPU:-$(($(nproc) - 1))}"
TAG="nkx$$"
RUN="/run/$TAG"
PIDS=()
STATS0=""

have() { command -v "$1" >/dev/null 2>&1; }
say() { echo "bench: $*" >&2; }

cleanup() {
    set +e
    [ -n "$STATS0" ] && sysctl -q -w kernel.bpf_stats_enabled="$STATS0"
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
PTP=0
[ -x "$REF/ptp" ] && [ -x "$REF/host-local" ] && PTP=1
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
    if [ "$PTP" = 1 ]; then
        # The reference pod: ptp's veth pair and a /32 route on the node, in a CIDR of its
        # own that the other node routes by a plain kernel route (the agent leaves alone).
        printf '{"cniVersion":"1.0.0","name":"xptp","type":"ptp","ipMasq":false,"ipam":{"type":"host-local","subnet":"10.202.%s.0/24","routes":[{"dst":"0.0.0.0/0"}],"dataDir":"%s"}}\n' \
            "$i" "$RUN/n$i-hl" >"$RUN/n$i-ptp.conf"
        ip netns add "$TAG-ptp$i"
        nsenter --net="/run/netns/$n" env CNI_COMMAND=ADD CNI_CONTAINERID="$TAG-ptp$i" \
            CNI_NETNS="/run/netns/$TAG-ptp$i" CNI_IFNAME=eth0 CNI_PATH="$REF" \
            "$REF/ptp" <"$RUN/n$i-ptp.conf" >/dev/null
        ip -n "$n" route add "10.202.$((3 - i)).0/24" via "192.0.2.$((3 - i))"
    fi
done
# Routes take a moment to appear (the agents poll the file every second).
for _ in $(seq 50); do
    [ "$(ip -n "$TAG-n1" route show proto 197 | wc -l)" -ge 1 ] && break
    sleep 0.2
done
pod_ip() { ip -n "$1" -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1; }
# host_end POD_NS: the node-side ifindex of the pod's eth0 (its link, eth0@ifN)
host_end() { ip -n "$1" -o link show dev eth0 | sed -n 's/.*@if\([0-9]*\).*/\1/p'; }
stat() { "$BIN/netkit-agent" stats --json --socket "$RUN/$1.sock" | sed -n "s/.*\"$2\":[[:space:]]*\([0-9]*\).*/\1/p"; }

# The paths: client namespace, server namespace, server address.
PATHS=(pod node)
declare -A CL SV AD
CL[pod]="$TAG-pod1" SV[pod]="$TAG-pod2" AD[pod]="$(pod_ip "$TAG-pod2")"
CL[node]="$TAG-n1" SV[node]="$TAG-n2" AD[node]=192.0.2.2
if [ "$PTP" = 1 ]; then
    PATHS=(pod ptp node)
    CL[ptp]="$TAG-ptp1" SV[ptp]="$TAG-ptp2" AD[ptp]="$(pod_ip "$TAG-ptp2")"
fi
for p in "${PATHS[@]}"; do
    ip netns exec "${CL[$p]}" ping -c 3 -W 1 -q "${AD[$p]}" >/dev/null ||
        { echo "bench: ${CL[$p]} cannot reach ${AD[$p]}" >&2; exit 1; }
done

# iperf CLIENT_NS SERVER_NS ADDR -> Gbit/s
iperf() {
    ip netns exec "$2" iperf3 -s -1 -D -B "$3" -I "$RUN/iperf.pid" >/dev/null
    sleep 0.3
    ip netns exec "$1" iperf3 -c "$3" -t "$SECS" -J |
        sed -n 's/.*"bits_per_second":[[:space:]]*\([0-9.e+]*\).*/\1/p' | tail -n1 |
        awk '{printf "%.2f", $1 / 1e9}'
}
# rtt FROM_NS ADDR -> average RTT in microseconds over 500 pings
rtt() {
    ip netns exec "$1" taskset -c "$CPU" ping -q -c 500 -i 0.005 "$2" | sed -n 's|.*= [0-9.]*/\([0-9.]*\)/.*|\1|p' |
        awk '{printf "%.0f", $1 * 1000}'
}
# rr CLIENT_NS SERVER_NS ADDR tcp|udp SECS -> "P50_US P99_US" (sockperf ping-pong, as hack/bench.sh)
rr() {
    local flag="" spid out="$RUN/sockperf.out"
    [ "$4" = tcp ] && flag=--tcp
    ip netns exec "$2" taskset -c "$CPU" sockperf server -i "$3" -p 11111 $flag >/dev/null 2>&1 &
    spid=$!
    PIDS+=("$spid")
    sleep 0.5
    ip netns exec "$1" taskset -c "$CPU" sockperf ping-pong -i "$3" -p 11111 $flag -t "$5" --full-rtt >"$out" 2>&1 || true
    kill "$spid" 2>/dev/null
    wait "$spid" 2>/dev/null || true
    awk '/percentile 50.000 =/ {p50 = $NF} /percentile 99.000 =/ {p99 = $NF}
        END {if (p50 == "") print "- -"; else printf "%.1f %.1f\n", p50, p99}' "$out"
}
# median of the arguments ("-" when there are none)
ratio() { if [ "${1:--}" = - ] || [ "${2:--}" = - ]; then echo -; else echo "$1 $2" | awk '{printf "%.2f", $1 / $2}'; fi; }

declare -A V # V[path.metric] = space-separated values, one per round
add() { V[$1]="${V[$1]:-} $2"; }
# rr_both KEY CLIENT_NS SERVER_NS ADDR: TCP and UDP round trips into V[KEY.{tcp,udp}{50,99}]
rr_both() {
    local proto a b
    for proto in tcp udp; do
        read -r a b < <(rr "$2" "$3" "$4" "$proto" "$SECS")
        add "$1.${proto}50" "$a"
        add "$1.${proto}99" "$b"
    done
}
sent0=$(($(stat n1 fib_ok) + $(stat n1 redirect_neigh)))
recv0=$(stat n2 redirect_peer)
for r in $(seq "$ROUNDS"); do
    for p in "${PATHS[@]}"; do
        say "round $r/$ROUNDS, $p: iperf3 ${SECS}s, ping 500, sockperf TCP and UDP ${SECS}s each"
        add "$p.bw" "$(iperf "${CL[$p]}" "${SV[$p]}" "${AD[$p]}")"
        add "$p.rtt" "$(rtt "${CL[$p]}" "${AD[$p]}")"
        have sockperf && rr_both "$p" "${CL[$p]}" "${SV[$p]}" "${AD[$p]}"
    done
done
sent=$(($(stat n1 fib_ok) + $(stat n1 redirect_neigh) - sent0))
recv=$(($(stat n2 redirect_peer) - recv0))

# egress_progs NODE: the pod egress program(s) of node NODE as nk-bench-bpf takes them: the
# pinned links of netkit endpoints, or id:N of the cls_bpf filter on veth host ends (one
# program serves every endpoint of a node, so one id).
egress_progs() {
    local n="$1" pin found=0 dev
    for pin in "/sys/fs/bpf/$TAG-$n/endpoints/"*/egress; do
        [ -e "$pin" ] && { echo "$pin"; found=1; }
    done
    [ "$found" = 1 ] && return
    for dev in $(ip -n "$TAG-$n" -o link show | awk -F': ' '{print $2}' | cut -d@ -f1); do
        tc -n "$TAG-$n" filter show dev "$dev" ingress 2>/dev/null |
            sed -n 's/.* nk_pod_egress .* id \([0-9]*\) .*/id:\1/p'
    done | sort -u
}

# The programs' own cost: run_cnt and run_time_ns over one more UDP ping-pong per path,
# with kernel.bpf_stats_enabled=1 for just that long (it adds two clock reads per run).
PROGS=() # "LABEL PIN"
if [ -x "$BPFSTAT" ] && [ -w /proc/sys/kernel/bpf_stats_enabled ] && have sockperf; then
    for i in 1 2; do
        for prog in $(egress_progs "n$i"); do
            PROGS+=("n$i:pod-egress $prog")
        done
        PROGS+=("n$i:uplink-ingress /sys/fs/bpf/$TAG-n$i/uplink/eth0")
    done
fi
# runstats -> "LABEL NAME RUN_CNT RUN_TIME_NS" per program
runstats() {
    local label pin
    for lp in "${PROGS[@]}"; do
        read -r label pin <<<"$lp"
        "$BPFSTAT" runstats "$pin" | awk -v l="$label" '{print l, $2, $3, $4}'
    done
}
declare -A PS # PS[path] = the per-program lines of that path's stats window
if [ "${#PROGS[@]}" -gt 0 ]; then
    STATS0="$(cat /proc/sys/kernel/bpf_stats_enabled)"
    for p in "${PATHS[@]}"; do
        say "bpf stats, $p: sockperf UDP ${SECS}s with kernel.bpf_stats_enabled=1"
        before="$(runstats)"
        sysctl -q -w kernel.bpf_stats_enabled=1
        read -r u50 _ < <(rr "${CL[$p]}" "${SV[$p]}" "${AD[$p]}" udp "$SECS")
        sysctl -q -w kernel.bpf_stats_enabled="$STATS0"
        after="$(runstats)"
        PS[$p]="$(paste -d' ' <(echo "$before") <(echo "$after") |
            awk '{c = $7 - $3; t = $8 - $4; printf "%s %s %d %s\n", $1, $2, c, (c > 0 ? sprintf("%.0f", t / c) : "-")}')"
        PS[$p.u50]="$u50"
    done
fi

# The same programs on one packet each, BPF_PROG_TEST_RUN: the program alone (cache-hot,
# its helpers and kfuncs included, no bpf_stats clock reads): pod egress on n1 to the remote
# pod, uplink ingress on n2 from it, and uplink ingress on n2 for node -> node traffic (the
# one program that path meets: it hands the packet to the stack).
declare -A TR
if [ -x "$BPFSTAT" ]; then
    eg_pin="$(ls -d "/sys/fs/bpf/$TAG-n1/endpoints/"*"$TAG-pod1"*/egress 2>/dev/null | head -n1 || true)"
    [ -n "$eg_pin" ] || eg_pin="$(egress_progs n1 | head -n1)"
    eg_if="$(host_end "$TAG-pod1")"
    up_if="$(ip -n "$TAG-n2" -o link show eth0 | cut -d: -f1)"
    P1="$(pod_ip "$TAG-pod1")"
    testrun() { # NODE PIN IFINDEX SRC DST PROTO -> ns per run
        nsenter --net="/run/netns/$TAG-$1" "$BPFSTAT" testrun "$2" "$3" "$4" "$5" "$6" 2000 | awk '{print $1}'
    }
    for proto in udp tcp icmp; do
        [ -n "$eg_pin" ] && TR[egress.$proto]="$(testrun n1 "$eg_pin" "$eg_if" "$P1" "${AD[pod]}" "$proto")"
        TR[uplink.$proto]="$(testrun n2 "/sys/fs/bpf/$TAG-n2/uplink/eth0" "$up_if" "$P1" "${AD[pod]}" "$proto")"
        TR[pass.$proto]="$(testrun n2 "/sys/fs/bpf/$TAG-n2/uplink/eth0" "$up_if" 192.0.2.1 192.0.2.2 "$proto")"
    done
fi

# The floor, last (it replaces the programs): the pod path with netkit-cni's programs
# swapped for bare ones (hack/bench/bpf.c bare-out, bare-in). Sending side: fixed MACs and
# a bpf_redirect to the uplink, on the hook netkit-cni's egress program runs on;
# receiving side: the uplink's tcx program sends IPv4 for the pod into it by
# bpf_redirect_peer and passes the rest. Nothing looked up, no conntrack asked, no TTL
# lowered: what a BPF datapath on this device costs at least across the wire.
FLOOR_WHY=""
if [ ! -x "$BPFSTAT" ]; then
    FLOOR_WHY="hack/bench/bpf.c not built (no C compiler)"
elif ! have sockperf; then
    FLOOR_WHY="sockperf is not installed"
else
    mac_of() { ip -n "$1" -o link show dev eth0 | sed -n 's|.*link/ether \([0-9a-f:]*\).*|\1|p'; }
    for i in 1 2; do
        n="$TAG-n$i" other="$TAG-n$((3 - i))"
        up="$(ip -n "$n" -o link show dev eth0 | cut -d: -f1)"
        host_if="$(host_end "$TAG-pod$i")"
        hook="$(ls -d "/sys/fs/bpf/$TAG-n$i/endpoints/"*"$TAG-pod$i"*/egress 2>/dev/null | head -n1 || true)"
        [ -n "$hook" ] || hook="ifindex:$host_if"
        if ! nsenter --net="/run/netns/$n" "$BPFSTAT" bare-out "$hook" "$up" "$(mac_of "$other")" "$(mac_of "$n")" ||
            ! nsenter --net="/run/netns/$n" "$BPFSTAT" bare-in "/sys/fs/bpf/$TAG-n$i/uplink/eth0" \
                "$(pod_ip "$TAG-pod$i")" "$host_if"; then
            FLOOR_WHY="swapping in the bare programs failed (see above)"
        fi
    done
    if [ -z "$FLOOR_WHY" ] && ! ip netns exec "${CL[pod]}" ping -c 3 -W 1 -q "${AD[pod]}" >/dev/null; then
        FLOOR_WHY="the pods did not reach each other with the bare programs"
    fi
    if [ -z "$FLOOR_WHY" ]; then
        for r in $(seq "$ROUNDS"); do
            say "round $r/$ROUNDS, floor (bare programs): iperf3 ${SECS}s, sockperf TCP and UDP ${SECS}s each"
            add "bare.bw" "$(iperf "${CL[pod]}" "${SV[pod]}" "${AD[pod]}")"
            rr_both bare "${CL[pod]}" "${SV[pod]}" "${AD[pod]}"
        done
    fi
fi

mode=$([ -n "${NETKIT_VM_GUEST:-}" ] && echo "netkit (VM)" || echo "veth fallback")
printf 'cross-node, %s, netkit-cni pods on %s, %s s per test, %s round(s) (median)\n' "$(uname -r)" "$mode" "$SECS" "$ROUNDS"
row() { printf '  %-30s %14s %14s %14s %12s %12s\n' "$@"; }
row "" "pod->rem. pod" "ptp->rem. ptp" "node->node" "pod / node" "ptp / node"
metric() { # LABEL KEY
    local pod ptp node
    pod=$(median ${V[pod.$2]}) node=$(median ${V[node.$2]}) ptp=-
    [ "$PTP" = 1 ] && ptp=$(median ${V[ptp.$2]})
    row "$1" "$pod" "$ptp" "$node" "$(ratio "$pod" "$node")" "$(ratio "$ptp" "$node")"
}
metric "TCP throughput (Gbit/s)" bw
metric "ICMP RTT avg (us, ping)" rtt
if have sockperf; then
    metric "TCP round trip p50 (us)" tcp50
    metric "TCP round trip p99 (us)" tcp99
    metric "UDP round trip p50 (us)" udp50
    metric "UDP round trip p99 (us)" udp99
else
    echo "  request/response: skipped, sockperf is not installed (apt-get install sockperf)"
fi
[ "$PTP" = 1 ] || echo "  ptp column: skipped, no $REF/ptp and $REF/host-local (apt-get install containernetworking-plugins)"
echo "  (ping and sockperf pinned to CPU $CPU, client and server; sockperf ping-pong: back to back, 14-byte messages,"
echo "   full round trip; ptp = the reference plugin's veth pod, kernel routing, no BPF; iperf3 not pinned)"
printf '  fast path: %s packets routed by pod egress on n1 (fib_ok + redirect_neigh), %s put into the pod by n2 uplink (redirect_peer)\n' \
    "$sent" "$recv"
if [ "${#PROGS[@]}" -gt 0 ]; then
    echo "  BPF program cost (kernel.bpf_stats_enabled=1, one UDP ping-pong of ${SECS}s per path;"
    echo "  ns per run = run_time_ns / run_cnt, programs that ran under 100 times left out):"
    for p in "${PATHS[@]}"; do
        printf '    %s (UDP p50 %s us with stats on):' "$p" "${PS[$p.u50]}"
        while read -r label name cnt ns; do
            [ "$cnt" -ge 100 ] && printf '  %s %s ns/run (%s runs);' "$label" "$ns" "$cnt"
        done <<<"${PS[$p]}"
        echo
    done
    # Each of a path's programs runs once per round trip (request and reply each meet one
    # program per node), so the sum of their ns/run is what they add to a round trip.
    progs_us() { awk '$3 >= 100 && $4 != "-" {t += $4} END {printf "%.2f", t / 1000}' <<<"${PS[$1]}"; }
    if [ -n "${PS[pod.u50]:-}" ] && [ -n "${PS[node.u50]:-}" ]; then
        pp="$(progs_us pod)" np="$(progs_us node)"
        rest_pod="$(awk -v u="${PS[pod.u50]}" -v p="$pp" 'BEGIN {printf "%.1f", u - p}')"
        rest_node="$(awk -v u="${PS[node.u50]}" -v p="$np" 'BEGIN {printf "%.1f", u - p}')"
        echo "  the paths without their programs' time (UDP p50 with stats on, minus the sum of ns/run above):"
        printf '    pod %s - %s = %s us, node %s - %s = %s us: pod / node %s\n' \
            "${PS[pod.u50]}" "$pp" "$rest_pod" "${PS[node.u50]}" "$np" "$rest_node" "$(ratio "$rest_pod" "$rest_node")"
    fi
fi
if [ -z "$FLOOR_WHY" ]; then
    echo "  the floor: the pod path with bare programs (fixed MACs + bpf_redirect out, bpf_redirect_peer in;"
    echo "  nothing looked up), measured after the rows above (median of $ROUNDS round(s)):"
    row "" "bare pod path" "node->node" "bare / node" "pod / bare"
    for m in "bw:TCP throughput (Gbit/s)" "tcp50:TCP round trip p50 (us)" "udp50:UDP round trip p50 (us)"; do
        key="${m%%:*}" label="${m#*:}"
        bare=$(median ${V[bare.$key]}) node=$(median ${V[node.$key]}) pod=$(median ${V[pod.$key]})
        row "$label" "$bare" "$node" "$(ratio "$bare" "$node")" "$(ratio "$pod" "$bare")"
    done
else
    echo "  the floor (bare programs): not measured, $FLOOR_WHY"
fi
if [ -x "$BPFSTAT" ]; then
    echo "  BPF program alone (BPF_PROG_TEST_RUN, one packet, cache-hot; ns per run, UDP / TCP / ICMP echo):"
    printf '    n1 pod egress, pod -> remote pod (routed: FIB lookup, MACs, TTL):  %s / %s / %s\n' \
        "${TR[egress.udp]:--}" "${TR[egress.tcp]:--}" "${TR[egress.icmp]:--}"
    printf '    n2 uplink ingress, remote pod -> pod (redirect_peer):               %s / %s / %s\n' \
        "${TR[uplink.udp]:--}" "${TR[uplink.tcp]:--}" "${TR[uplink.icmp]:--}"
    printf '    n2 uplink ingress, node -> node (handed to the stack):              %s / %s / %s\n' \
        "${TR[pass.udp]:--}" "${TR[pass.tcp]:--}" "${TR[pass.icmp]:--}"
else
    echo "  BPF program cost: skipped, hack/bench/bpf.c not built (no C compiler)"
fi
