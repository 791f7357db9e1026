#!/usr/bin/env bash
# Benchmarks (issue 9). One run prints four tables; every ratio compares figures measured
# in this same run on this same machine:
#  1. pod start/stop: CNI ADD and DEL p50/p99 for netkit-cni with built-in IPAM, netkit-cni
#     with host-local IPAM and the reference ptp + host-local, sequentially and as a burst in
#     parallel (wall time), ADD as the node fills up (10 pods vs 500 on the node), and beside
#     them the floor: one bare BPF_LINK_CREATE, measured here by hack/bench/bpf.c; a
#     sequential call is timed as the plugin's process alone, spawn to exit, by
#     hack/bench/spawn.c (bash's own forks would be timed too otherwise);
#  2. same-node datapath, netkit-cni vs ptp vs two processes over loopback in one namespace
#     vs the floor of any BPF datapath on the device (the same pod path with a bare program
#     that looks nothing up):
#     TCP throughput with 1 and 4 streams (iperf3), CPU seconds per GB moved (/proc/stat),
#     request/response round trips p50/p99 (sockperf ping-pong, TCP and UDP), HTTP
#     connections per second (wrk, a new connection per request, busybox httpd);
#  3. cross-node datapath: hack/bench-crossnode.sh, pod -> remote pod vs node -> node over one wire;
#  4. the agent: RSS and CPU idle and with 1,000 endpoints, request-to-ack time, and the
#     verifier's processed-instruction count per program.
#
#   hack/bench.sh [--rcu-expedited] [--only PARTS] [PODS]       on this kernel (default 200
#                                                               sequential pods: enough
#                                                               that p99 is not the maximum)
#   hack/bench.sh --vm [--rcu-expedited] [--only PARTS] [PODS]  inside the netkit VM (TCG:
#                                                 absolute figures are emulation-bound, read
#                                                 the ratios)
#
#   --rcu-expedited   set /sys/kernel/rcu_expedited to 1 for the run (restored on exit); the
#                     header always prints the state the run had.
#   --only PARTS      run and print only these of the four tables, comma-separated: pods (1),
#                     datapath (2), crossnode (3), agent (4). `--only agent` fills the node
#                     to NETKIT_BENCH_ENDPOINTS pods and measures the agent, nothing else.
#
# Knobs (environment; the header prints the values used):
#   NETKIT_BENCH_SECS       seconds per datapath test and per idle-CPU sample (default 5)
#   NETKIT_BENCH_ROUNDS     rounds of the datapath tests, each figure the median (default 1)
#   NETKIT_BENCH_BURST      pods in a parallel burst (default 100)
#   NETKIT_BENCH_GROW       pods already on the node for the growth figure (default 500)
#   NETKIT_BENCH_ENDPOINTS  endpoints for the agent's RSS/CPU under load (default 1000)
#   NETKIT_BENCH_SAMPLE     ADDs timed at each growth point (default 50)
#   NETKIT_BENCH_IPV6       1: built-in IPAM hands out IPv6 addresses too (dual-stack pods)
#   NETKIT_BENCH_CPU        the CPU sockperf's client and server are pinned to (default the last)
#   NETKIT_BENCH_BIN        a directory with netkit-cni and netkit-agent to measure instead of
#                           building release binaries from this tree (to compare two builds)
# In the VM the defaults are smaller (20 pods, burst 50, grow 200, 300 endpoints, sample 10).
#
# Everything runs in network namespaces the script creates (named nkbench<PID>-*), with its
# own agent, bpffs directory and state under /run; traffic goes only between those namespaces
# and over their loopback. All of it is removed on exit. A missing optional tool (iperf3,
# sockperf, wrk, busybox's httpd, cc for hack/bench/bpf.c) skips its figures with a line naming
# it. Progress goes to stderr; the tables go to stdout, together at the end of the run.
set -euo pipefail
export LC_ALL=C

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
    exit 2
}

VM=0
RCU_SET=0
PODS=""
ONLY=""
while [ $# -gt 0 ]; do
    case "$1" in
    --vm) VM=1 ;;
    --rcu-expedited) RCU_SET=1 ;;
    --only)
        [ $# -ge 2 ] || { echo "bench: --only needs a list of parts" >&2 && usage; }
        ONLY="$2"
        shift
        ;;
    -h | --help) usage ;;
    *[!0-9]* | "") echo "bench: unknown argument '$1'" >&2 && usage ;;
    *) PODS="$1" ;;
    esac
    shift
done
PARTS="${ONLY:-pods,datapath,crossnode,agent}"
for part in ${PARTS//,/ }; do
    case "$part" in
    pods | datapath | crossnode | agent) ;;
    *) echo "bench: unknown part '$part' (pods, datapath, crossnode, agent)" >&2 && usage ;;
    esac
done
# want PART: whether this run measures PART.
want() { case ",$PARTS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${NETKIT_VM_GUEST:-}" ]; then
    if [ -n "${NETKIT_BENCH_BIN:-}" ]; then
        BIN="$(cd "$NETKIT_BENCH_BIN" && pwd)"
    else
        echo "bench: building release binaries (hack/release.sh)" >&2
        "$REPO/hack/release.sh" >/dev/null 2>&1 ||
            { echo "bench: hack/release.sh failed" >&2; exit 1; }
        BIN="$REPO/target/dist"
    fi
    BPFTOOL_BIN="$REPO/target/bench/nk-bench-bpf"
    mkdir -p "$(dirname "$BPFTOOL_BIN")"
    if command -v cc >/dev/null; then
        cc -O2 -Wall -o "$BPFTOOL_BIN" "$REPO/hack/bench/bpf.c" ||
            { echo "bench: cc hack/bench/bpf.c failed" >&2; rm -f "$BPFTOOL_BIN"; }
    else
        rm -f "$BPFTOOL_BIN"
    fi
    SPAWN_BIN="$REPO/target/bench/nk-bench-spawn"
    if command -v cc >/dev/null; then
        cc -O2 -Wall -o "$SPAWN_BIN" "$REPO/hack/bench/spawn.c" ||
            { echo "bench: cc hack/bench/spawn.c failed" >&2; rm -f "$SPAWN_BIN"; }
    else
        rm -f "$SPAWN_BIN"
    fi
    COMMIT="$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    if [ -n "${NETKIT_BENCH_BIN:-}" ]; then
        COMMIT="binaries from $BIN (not built from $COMMIT)"
    elif [ -n "$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
        COMMIT="$COMMIT + uncommitted changes"
    fi
    if [ "$VM" = 1 ]; then
        # The reference plugins and every tool the script uses go in with it; optional ones
        # only where this machine has them (the guest skips what is missing).
        vmargs=(--bin "$BIN/netkit-cni" --bin "$BIN/netkit-agent" --bin "$REPO/hack/bench.sh"
            --bin "$REPO/hack/bench/stats.sh"
            --bin /usr/lib/cni/ptp --bin /usr/lib/cni/host-local --bin "$(command -v nsenter)"
            --bin "$(command -v taskset)")
        [ -x "$BPFTOOL_BIN" ] && vmargs+=(--bin "$BPFTOOL_BIN")
        [ -x "$SPAWN_BIN" ] && vmargs+=(--bin "$SPAWN_BIN")
        for t in iperf3 sockperf wrk; do
            command -v "$t" >/dev/null && vmargs+=(--bin "$(command -v "$t")")
        done
        vmargs+=(--env NETKIT_REF_CNI=/opt/netkit/bin --env "NETKIT_BENCH_COMMIT=$COMMIT")
        vmargs+=(--env "NETKIT_BENCH_HOST_CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)")
        for v in NETKIT_BENCH_SECS NETKIT_BENCH_ROUNDS NETKIT_BENCH_BURST NETKIT_BENCH_GROW NETKIT_BENCH_ENDPOINTS NETKIT_BENCH_SAMPLE NETKIT_BENCH_CPU NETKIT_BENCH_IPV6; do
            [ -n "${!v:-}" ] && vmargs+=(--env "$v=${!v}")
        done
        guest=(bench.sh)
        [ "$RCU_SET" = 1 ] && guest+=(--rcu-expedited)
        [ -n "$ONLY" ] && guest+=(--only "$ONLY")
        [ -n "$PODS" ] && guest+=("$PODS")
        export NETKIT_VM_TIMEOUT="${NETKIT_VM_TIMEOUT:-5400}"
        exec "$REPO/hack/vm/run.sh" "${vmargs[@]}" -- "${guest[@]}"
    fi
else
    BIN="${NETKIT_BIN_DIR:-/opt/netkit/bin}"
    BPFTOOL_BIN="$BIN/nk-bench-bpf"
    SPAWN_BIN="$BIN/nk-bench-spawn"
    COMMIT="${NETKIT_BENCH_COMMIT:-unknown}"
fi

REF="${NETKIT_REF_CNI:-/usr/lib/cni}"
# shellcheck source=hack/bench/stats.sh
. "$([ -n "${NETKIT_VM_GUEST:-}" ] && echo "$BIN" || echo "$REPO/hack/bench")/stats.sh"
if [ -n "${NETKIT_VM_GUEST:-}" ]; then
    PODS="${PODS:-20}" BURST="${NETKIT_BENCH_BURST:-50}" GROW="${NETKIT_BENCH_GROW:-200}"
    ENDPOINTS="${NETKIT_BENCH_ENDPOINTS:-300}" SAMPLE="${NETKIT_BENCH_SAMPLE:-10}"
else
    PODS="${PODS:-200}" BURST="${NETKIT_BENCH_BURST:-100}" GROW="${NETKIT_BENCH_GROW:-500}"
    ENDPOINTS="${NETKIT_BENCH_ENDPOINTS:-1000}" SAMPLE="${NETKIT_BENCH_SAMPLE:-50}"
fi
SECS="${NETKIT_BENCH_SECS:-5}"
# Datapath figures swing from run to run on a shared machine (the 4-stream rows most):
# several rounds, interleaved across the peers, and the median of each figure.
ROUNDS="${NETKIT_BENCH_ROUNDS:-1}"
# Round trips are timed with client and server pinned to one CPU, so what is measured is
# the path's own work (every hop of a ping-pong then runs on that CPU), not how long a
# sleeping CPU takes to wake up for a cross-CPU wake-up: on a VM that is tens of
# microseconds, the same for every path, and it hides the difference between them.
CPU="${NETKIT_BENCH_CPU:-$(($(nproc) - 1))}"
FEW=10 # pods on the node for the "before" growth point
[ "$ENDPOINTS" -ge "$GROW" ] || ENDPOINTS="$GROW"
TAG="nkbench$$"
NODE="$TAG-node"
RUN="/run/$TAG"
SOCK="$RUN/agent.sock"
AGENT_PID=""
RUN_MOUNTED=0
RCU_FILE=/sys/kernel/rcu_expedited
RCU_SAVED=""
SERVER_PIDS=()
REPORT=""
REPORT_DONE=0

say() { echo "bench: $*" >&2; }
die() { say "error: $*"; exit 1; }

my_netns() { ip netns list | awk '{print $1}' | grep "^$TAG-" || true; }

cleanup() {
    set +e
    local pid ns
    if [ -n "$REPORT" ] && [ -f "$REPORT" ]; then
        exec >&3
        cat "$REPORT"
        [ "$REPORT_DONE" = 1 ] || echo "(incomplete: the run stopped early)"
    fi
    for pid in "${SERVER_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    if [ -n "$AGENT_PID" ]; then kill "$AGENT_PID" 2>/dev/null && wait "$AGENT_PID" 2>/dev/null; fi
    # Anything still running inside our namespaces was started by this script.
    for ns in $(my_netns); do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill "$pid" 2>/dev/null; done
    done
    my_netns | sed 's/^/netns del /' | ip -force -batch - 2>/dev/null
    [ "$RUN_MOUNTED" = 1 ] && umount "$RUN"
    rm -rf "/sys/fs/bpf/$TAG" "$RUN"
    if [ -n "$RCU_SAVED" ]; then echo "$RCU_SAVED" >"$RCU_FILE"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

have() { command -v "$1" >/dev/null 2>&1; }
CLK_TCK="$(getconf CLK_TCK 2>/dev/null || echo 100)"

# --- numbers -----------------------------------------------------------------------------
now_us() { local t="$EPOCHREALTIME"; echo $((10#${t/./})); }
# pct P FILE: nearest-rank percentile of the numbers in FILE (empty if none).
pct() {
    sort -n "$2" | awk -v p="$1" '{a[NR]=$1} END {if (!NR) exit; i=int((p*NR+99)/100); if (i<1) i=1; print a[i]}'
}
# ms US: microseconds -> milliseconds, one decimal, three below 1 ms ("-" when empty).
ms() { awk -v v="${1:-}" 'BEGIN {if (v=="") print "-"; else if (v < 1000 && v > -1000) printf "%.3f", v/1000; else printf "%.1f", v/1000}'; }
secs() { awk -v v="${1:-}" 'BEGIN {if (v=="") print "-"; else printf "%.2f", v/1e6}'; }
# ratio A B: A/B with two decimals and an "x" ("n/a" when either is missing or B is 0).
ratio() {
    awk -v a="${1:-}" -v b="${2:-}" 'BEGIN {if (a=="" || b=="" || a=="-" || b=="-" || b+0==0) print "n/a"; else printf "%.2fx", a/b}'
}

# --- namespaces and CNI calls --------------------------------------------------------------
# netns_batch add|del PREFIX FIRST LAST
netns_batch() {
    local i
    for ((i = $3; i <= $4; i++)); do echo "netns $1 $2-$i"; done | ip -batch -
}
# cni CMD PLUGIN CONF POD: one plugin invocation in the node namespace; its output goes to
# $RUN/out/POD.CMD (on the run's tmpfs), for the message when it fails.
# What a timed call costs the harness is one fork and the nsenter exec: the variables go
# on nsenter's environment, which the plugin inherits (no `env` process between the two),
# and the output file is left in place (an `rm` would be another process, timed too).
cni() {
    with_cni_env "$1" "$4" nsenter --net="/run/netns/$NODE" "$2" <"$3" >"$RUN/out/$4.$1" 2>&1
}
# with_cni_env CMD POD PROGRAM ARGS...: PROGRAM with the CNI variables of CMD for POD in
# its environment (a runtime's: CNI_IFNAME eth0, CNI_PATH the reference plugins).
with_cni_env() {
    local cmd="$1" pod="$2"
    shift 2
    CNI_COMMAND="$cmd" CNI_CONTAINERID="$pod" CNI_NETNS="/run/netns/$pod" CNI_IFNAME=eth0 \
        CNI_PATH="$REF" "$@"
}
# time_cni CMD PLUGIN CONF POD >>FILE: microseconds; a failure ends the run.
# hack/bench/spawn.c times the plugin's process alone, from its spawn to its exit, in the
# node namespace; without a C compiler the clock is bash's, around cni (which then also
# times bash's own fork and nsenter's exec).
time_cni() {
    local start end
    if [ -x "$SPAWN_BIN" ]; then
        with_cni_env "$1" "$4" "$SPAWN_BIN" "/run/netns/$NODE" "$3" "$RUN/out/$4.$1" "$2" ||
            die "$1 failed for $4 with $2: $(cat "$RUN/out/$4.$1")"
        return
    fi
    start="$EPOCHREALTIME"
    cni "$@" || die "$1 failed for $4 with $2: $(cat "$RUN/out/$4.$1")"
    end="$EPOCHREALTIME"
    echo $((10#${end/./} - 10#${start/./}))
}
# cni_parallel CMD PLUGIN CONF PREFIX FIRST LAST PAR: runs PAR invocations at a time and
# waits for them; prints how many failed (the first failure's output goes to stderr).
cni_parallel() {
    local cmd="$1" plugin="$2" conf="$3" prefix="$4" first="$5" last="$6" par="$7" i pids=()
    local fails="$RUN/fails.$prefix.$cmd"
    : >"$fails"
    for ((i = first; i <= last; i++)); do
        { cni "$cmd" "$plugin" "$conf" "$prefix-$i" || echo "$prefix-$i" >>"$fails"; } &
        pids+=($!)
        if [ "${#pids[@]}" -ge "$par" ]; then wait "${pids[@]}"; pids=(); fi
    done
    [ "${#pids[@]}" -eq 0 ] || wait "${pids[@]}"
    if [ -s "$fails" ]; then
        say "$cmd failed for $(wc -l <"$fails") pods of $prefix; first: $(cat "$RUN/out/$(head -n1 "$fails").$cmd" 2>/dev/null)"
    fi
    wc -l <"$fails" | tr -d ' '
}
pod_addr() { ip -n "$1" -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1 | head -n1; }
# The node-side ifindex of a pod's eth0 ("eth0@if123").
host_ifindex() { ip -n "$1" -o link show dev eth0 | sed -n 's/^[0-9]*: eth0@if\([0-9]*\):.*/\1/p'; }
# Values of elapsed_us the agent logged for endpoints whose id starts with PREFIX.
agent_elapsed() {
    grep "endpoint programmed" "$RUN/agent.log" | grep -F "endpoint=$1" |
        sed -n 's/.*elapsed_us=\([0-9]*\).*/\1/p' || true
}
# agent_split PREFIX OUT: for those endpoints, the attach and map updates (program_us) to
# OUT.program and everything else the agent did for the ADD (elapsed_us - program_us) to
# OUT.rest. Both stay empty with an agent that does not log program_us.
agent_split() {
    grep "endpoint programmed" "$RUN/agent.log" | grep -F "endpoint=$1" |
        sed -n 's/.*elapsed_us=\([0-9]*\) program_us=\([0-9]*\).*/\1 \2/p' |
        awk -v program="$2.program" -v rest="$2.rest" '{print $2 >program; print $1 - $2 >rest}' || true
    touch "$2.program" "$2.rest"
}
# The two parts of agent_split, in the order the tables print them, and their labels.
SPLIT_PARTS=(program rest)
declare -A SPLIT_LABEL=([program]="attach + map updates (**)" [rest]="the rest of the agent's work")
# split_rows PREFIX OUT: agent_split, then its two rows (p50, p99) under the "agent's own
# work" row.
split_rows() {
    local part
    agent_split "$1" "$2"
    for part in "${SPLIT_PARTS[@]}"; do
        row4 "    ${SPLIT_LABEL[$part]}" "$(ms "$(pct 50 "$2.$part")")" "$(ms "$(pct 99 "$2.$part")")" "" ""
    done
}
# wait_teardowns: until the agent has no DEL's teardown under way (a DEL with built-in
# IPAM returns before the agent has deleted the link); prints the microseconds it waited.
wait_teardowns() {
    local t0 n
    t0=$(now_us)
    for _ in $(seq 3000); do
        n=$("$BIN/netkit-agent" status --socket "$SOCK" --json 2>/dev/null |
            sed -n 's/.*"releasing": *\([0-9]*\).*/\1/p')
        [ "${n:-0}" = 0 ] && break
        sleep 0.01
    done
    echo $(($(now_us) - t0))
}
agent_rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$AGENT_PID/status"; }
agent_ticks() { awk '{print $14 + $15}' "/proc/$AGENT_PID/stat"; }
# Busy CPU time of the whole machine in ticks (user nice system irq softirq, all CPUs).
busy_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8}' /proc/stat; }

# --- the run -------------------------------------------------------------------------------
[ "$(id -u)" = 0 ] || die "needs root (network namespaces, bpffs)"
for f in "$BIN/netkit-cni" "$BIN/netkit-agent"; do [ -x "$f" ] || die "$f missing"; done
[ -x "$REF/ptp" ] && [ -x "$REF/host-local" ] ||
    die "the reference plugins are missing from $REF (Debian: containernetworking-plugins)"
if [ "$RCU_SET" = 1 ]; then
    [ -w "$RCU_FILE" ] || die "--rcu-expedited: $RCU_FILE is not writable"
    RCU_SAVED="$(cat "$RCU_FILE")"
    echo 1 >"$RCU_FILE"
fi

RUN_START=$(now_us)
LOAD_START="$(cut -d' ' -f1 /proc/loadavg)"
# Everything the plugins and the agent write (state, records, host-local's files, the
# calls' output) goes to a tmpfs of the run's own, as /run is on a node. Not the
# filesystem /run happens to be on: on an ext4 without a journal (the development VM's
# root) every file created after a few thousand were deleted costs up to a millisecond,
# ext4 scanning past the recently deleted inodes (it does so only without a journal),
# and a pod start creates one. That cost grows with the churn before it, not with the
# pods on the node, and is the filesystem's, not a plugin's.
mkdir -p "$RUN"
mount -t tmpfs -o mode=0700,size=512m "$TAG" "$RUN"
RUN_MOUNTED=1
mkdir -p "$RUN/out" "$RUN/www"
head -c 612 /dev/zero | tr '\0' x >"$RUN/www/index.html"
ip netns add "$NODE"
ip -n "$NODE" link set lo up
# The node's own interface, addressed, before any pod's device, as on every real node.
# The kernel leans on it: a route through a device without an IPv4 address of its own
# (each pod's host end) takes its preferred source from the first device in the namespace
# that has one (inet_select_addr). With none, every route insert walks every device: in
# a namespace with 500 pods' host ends, route inserts took twice as long as with 10.
ip -n "$NODE" link add nkb-uplink type veth peer name nkb-wire
ip -n "$NODE" addr add 192.0.2.1/24 dev nkb-uplink
ip -n "$NODE" link set nkb-uplink up
# Built-in IPAM hands out IPv4 addresses, as host-local does for both peers; with
# NETKIT_BENCH_IPV6=1 IPv6 ones too (dual-stack pods), at the price IPv6 puts on each host
# end: its multicast route and a walk of the node's IPv6 FIB when it comes up, both
# growing with the pods on the node.
POOL6=()
[ "${NETKIT_BENCH_IPV6:-0}" = 1 ] && POOL6=(--pod-cidr fd00:250::/64)
nsenter --net="/run/netns/$NODE" "$BIN/netkit-agent" run --socket "$SOCK" --bpffs-root "/sys/fs/bpf/$TAG" \
    --state-dir "$RUN/state" --pod-cidr 10.250.0.0/16 "${POOL6[@]}" --no-uplink \
    --log-level info --log-file "$RUN/agent.log" &
AGENT_PID=$!
for _ in $(seq 100); do "$BIN/netkit-agent" status --socket "$SOCK" >/dev/null 2>&1 && break; sleep 0.1; done
"$BIN/netkit-agent" status --socket "$SOCK" >/dev/null 2>&1 || die "the agent did not become ready: $(cat "$RUN/agent.log")"

cat >"$RUN/nk.conf" <<CONF
{"cniVersion":"1.1.0","name":"bench","type":"netkit-cni","agentSocket":"$SOCK","stateDir":"$RUN/cni"}
CONF
cat >"$RUN/nkhl.conf" <<CONF
{"cniVersion":"1.0.0","name":"benchhl","type":"netkit-cni","agentSocket":"$SOCK","stateDir":"$RUN/cni-hl",
 "ipam":{"type":"host-local","subnet":"10.252.0.0/16","dataDir":"$RUN/host-local-nk"}}
CONF
cat >"$RUN/ptp.conf" <<CONF
{"cniVersion":"1.0.0","name":"benchptp","type":"ptp","ipMasq":false,
 "ipam":{"type":"host-local","subnet":"10.251.0.0/16","dataDir":"$RUN/host-local-ptp"}}
CONF
NK="$BIN/netkit-cni"
PTP="$REF/ptp"

# The agent idle, before any endpoint.
say "agent idle for ${SECS}s"
a_rss0=$(agent_rss_kib)
t0=$(agent_ticks)
sleep "$SECS"
a_cpu0=$(awk -v d="$(($(agent_ticks) - t0))" -v hz="$CLK_TCK" -v s="$SECS" 'BEGIN {printf "%.2f", 100 * d / hz / s}')

# --- 1. pod start/stop ---------------------------------------------------------------------
MODE=""
FLOOR_DESC=""
# seq_bench NAME PLUGIN CONF: PODS ADDs one after another, then their DELs.
seq_bench() {
    local name="$1" plugin="$2" conf="$3" i prefix="$TAG-$1-s"
    say "sequential: $PODS pods with $name"
    netns_batch add "$prefix" 1 "$PODS"
    : >"$RUN/$name.add"
    : >"$RUN/$name.del"
    for ((i = 1; i <= PODS; i++)); do time_cni ADD "$plugin" "$conf" "$prefix-$i" >>"$RUN/$name.add"; done
    if [ "$name" = nk ]; then
        MODE="$(ip -d -n "$prefix-1" -o link show dev eth0 | grep -o -w -E 'netkit|veth' | head -n1)"
        measure_floor "$prefix"
    fi
    for ((i = 1; i <= PODS; i++)); do time_cni DEL "$plugin" "$conf" "$prefix-$i" >>"$RUN/$name.del"; done
    [ "$plugin" = "$NK" ] && wait_teardowns >"$RUN/$name.drain"
    netns_batch del "$prefix" 1 "$PODS"
}

# null_call: a CNI call that does nothing (VERSION of netkit-cni) through the same wrapper,
# PODS times: what starting and ending the plugin's process costs on this machine (with
# bash's clock, plus the harness's fork and nsenter).
null_call() {
    local i
    say "null call: $PODS x VERSION"
    : >"$RUN/null"
    for ((i = 1; i <= PODS; i++)); do time_cni VERSION "$NK" "$RUN/nk.conf" "$TAG-null" >>"$RUN/null"; done
}

# The floor: one bare BPF_LINK_CREATE (and the release of that live link), timed by
# hack/bench/bpf.c around the syscall. veth: tcx_ingress on fresh veth devices; netkit: the
# netkit_primary hook (still empty) of the devices netkit-cni just created. On veth also the
# attach netkit-cni itself makes there (an ingress qdisc + a cls_bpf filter, spaced), bare. Twice: spaced
# (each attach at an arbitrary moment, as one pod's ADD meets it: the floor of an ADD) and
# back to back (as a burst's attaches queue on the rtnl lock: the floor of a burst); a
# grace period's length depends on which (bpf.c says how).
# The floor namespace's devices go in one synchronous unregister (they share group 77)
# before the namespace: left to `ip netns del`, they would be torn down by the kernel's
# namespace cleanup in the background, holding the rtnl lock for long stretches while the
# DELs timed next run (their slowest took 12 ms instead of 1-2).
drop_floor_netns() {
    ip -n "$TAG-floor" link del group 77 2>/dev/null || true
    ip netns del "$TAG-floor"
}
measure_floor() {
    local prefix="$1" i idx=() hook
    : >"$RUN/floor"
    : >"$RUN/floor.spaced"
    : >"$RUN/floor.filter"
    if [ ! -x "$BPFTOOL_BIN" ]; then
        FLOOR_DESC="not measured: no C compiler to build hack/bench/bpf.c (apt-get install gcc)"
        return
    fi
    say "floor: $PODS bare attaches spaced, $PODS back to back"
    if [ "$MODE" = netkit ]; then
        for ((i = 1; i <= PODS; i++)); do idx+=("$(host_ifindex "$prefix-$i")"); done
        hook=netkit_primary
        if ! nsenter --net="/run/netns/$NODE" "$BPFTOOL_BIN" attach $hook --spaced "${idx[@]}" >"$RUN/floor.spaced" ||
            ! nsenter --net="/run/netns/$NODE" "$BPFTOOL_BIN" attach $hook "${idx[@]}" >"$RUN/floor"; then
            FLOOR_DESC="not measured: the bare attach failed"
            return
        fi
        FLOOR_DESC="bare BPF_LINK_CREATE netkit_primary (2-insn prog, empty hook of $PODS netkit devices)"
    else
        hook=tcx_ingress
        ip netns add "$TAG-floor"
        for ((i = 1; i <= 3 * PODS; i++)); do
            ip -n "$TAG-floor" link add "fa$i" group 77 type veth peer name "fb$i" group 77
            ip -n "$TAG-floor" link set "fa$i" up
            idx+=("$(ip -n "$TAG-floor" -o link show dev "fa$i" | cut -d: -f1)")
        done
        # Fresh devices for each pass: a third spaced, a third back to back, a third for
        # the filter.
        if ! ip netns exec "$TAG-floor" "$BPFTOOL_BIN" attach $hook --spaced "${idx[@]:0:PODS}" >"$RUN/floor.spaced" ||
            ! ip netns exec "$TAG-floor" "$BPFTOOL_BIN" attach $hook "${idx[@]:PODS:PODS}" >"$RUN/floor" ||
            ! ip netns exec "$TAG-floor" "$BPFTOOL_BIN" filter --spaced "${idx[@]:2*PODS}" >"$RUN/floor.filter"; then
            FLOOR_DESC="not measured: the bare attach failed"
            drop_floor_netns
            return
        fi
        drop_floor_netns
        FLOOR_DESC="bare BPF_LINK_CREATE tcx_ingress (2-insn prog, fresh veth devices)"
    fi
    awk '{print $1}' "$RUN/floor.spaced" >"$RUN/floor.attach"
    awk '{print $2}' "$RUN/floor.spaced" >"$RUN/floor.release"
    awk '{print $1}' "$RUN/floor" >"$RUN/floor.b2b.attach"
    awk '{print $2}' "$RUN/floor" >"$RUN/floor.b2b.release"
}

# burst_bench NAME PLUGIN CONF: BURST ADDs at once (wall time), then BURST DELs at once.
burst_bench() {
    local name="$1" plugin="$2" conf="$3" prefix="$TAG-$1-b" t0 t1 t2 t3 fa fd
    say "burst: $BURST pods in parallel with $name"
    netns_batch add "$prefix" 1 "$BURST"
    t0=$(now_us)
    fa=$(cni_parallel ADD "$plugin" "$conf" "$prefix" 1 "$BURST" "$BURST")
    t1=$(now_us)
    fd=$(cni_parallel DEL "$plugin" "$conf" "$prefix" 1 "$BURST" "$BURST")
    t2=$(now_us)
    # Until the agent has also finished the teardowns the DELs handed it.
    t3=$t2
    [ "$plugin" = "$NK" ] && t3=$((t2 + $(wait_teardowns)))
    netns_batch del "$prefix" 1 "$BURST"
    echo "$((t1 - t0)) $((t2 - t1)) $fa $fd $((t3 - t1))" >"$RUN/$name.burst"
}

# grow_to NAME PLUGIN CONF N: fill the node with pods NAME-g-* up to N (untimed, 25 at a time).
grow_to() {
    local name="$1" plugin="$2" conf="$3" n="$4" have f
    have=$(cat "$RUN/$name.have" 2>/dev/null || echo 0)
    [ "$n" -gt "$have" ] || return 0
    say "filling the node to $n pods with $name"
    netns_batch add "$TAG-$name-g" $((have + 1)) "$n"
    f=$(cni_parallel ADD "$plugin" "$conf" "$TAG-$name-g" $((have + 1)) "$n" 25)
    [ "$f" = 0 ] || die "filling the node with $name: $f ADDs failed"
    echo "$n" >"$RUN/$name.have"
}
# grow_sample NAME PLUGIN CONF AT: SAMPLE timed ADDs, each DELeted again (untimed), so the
# node holds AT pods at each ADD. Times go to $RUN/NAME.at.AT.
# The SAMPLE namespaces are made before the first ADD and removed after the last, as in
# seq_bench: a namespace deleted between two timed ADDs is torn down by the kernel's
# cleanup worker in the background, under the rtnl lock, while the next ADD runs.
grow_sample() {
    local name="$1" plugin="$2" conf="$3" at="$4" j pod prefix="$TAG-$1-x$4"
    say "timing $SAMPLE ADDs with $name on a node with $at pods"
    : >"$RUN/$name.at.$at"
    netns_batch add "$prefix" 1 "$SAMPLE"
    for ((j = 1; j <= SAMPLE; j++)); do
        pod="$prefix-$j"
        time_cni ADD "$plugin" "$conf" "$pod" >>"$RUN/$name.at.$at"
        cni DEL "$plugin" "$conf" "$pod" || die "DEL failed for $pod: $(cat "$RUN/out/$pod.DEL")"
        # The next timed ADD should not share the rtnl lock with this pod's teardown.
        [ "$plugin" = "$NK" ] && wait_teardowns >/dev/null
    done
    netns_batch del "$prefix" 1 "$SAMPLE"
}
# grow_teardown NAME PLUGIN CONF: DEL every NAME-g-* pod (50 at a time); wall time to NAME.teardown.
grow_teardown() {
    local name="$1" plugin="$2" conf="$3" have t0 f
    have=$(cat "$RUN/$name.have" 2>/dev/null || echo 0)
    [ "$have" -gt 0 ] || return 0
    say "removing $have pods of $name"
    t0=$(now_us)
    f=$(cni_parallel DEL "$plugin" "$conf" "$TAG-$name-g" 1 "$have" 50)
    echo "$(($(now_us) - t0)) $f" >"$RUN/$name.teardown"
    netns_batch del "$TAG-$name-g" 1 "$have"
    echo 0 >"$RUN/$name.have"
}

if want pods; then
    null_call
    seq_bench nk "$NK" "$RUN/nk.conf"
    seq_bench nkhl "$NK" "$RUN/nkhl.conf"
    seq_bench ptp "$PTP" "$RUN/ptp.conf"
    burst_bench nk "$NK" "$RUN/nk.conf"
    burst_bench nkhl "$NK" "$RUN/nkhl.conf"
    burst_bench ptp "$PTP" "$RUN/ptp.conf"
fi

# Growth, and the agent under ENDPOINTS endpoints (built-in IPAM from the /16).
if want pods || want agent; then
    grow_to nk "$NK" "$RUN/nk.conf" "$FEW"
    grow_sample nk "$NK" "$RUN/nk.conf" "$FEW"
    [ -n "$MODE" ] || MODE="$(ip -d -n "$TAG-nk-g-1" -o link show dev eth0 | grep -o -w -E 'netkit|veth' | head -n1)"
fi
if want pods; then
    grow_to nk "$NK" "$RUN/nk.conf" "$GROW"
    grow_sample nk "$NK" "$RUN/nk.conf" "$GROW"
fi
if want agent; then
    a_filled=$((ENDPOINTS - $(cat "$RUN/nk.have")))
    a_t_fill=$(agent_ticks)
    grow_to nk "$NK" "$RUN/nk.conf" "$ENDPOINTS"
    a_fill_ticks=$(($(agent_ticks) - a_t_fill))
    grow_sample nk "$NK" "$RUN/nk.conf" "$ENDPOINTS"
    say "agent idle with $ENDPOINTS endpoints for ${SECS}s"
    a_eps=$("$BIN/netkit-agent" endpoints --socket "$SOCK" --json | grep -c '"id"' || true)
    a_rss1=$(agent_rss_kib)
    t0=$(agent_ticks)
    sleep "$SECS"
    a_cpu1=$(awk -v d="$(($(agent_ticks) - t0))" -v hz="$CLK_TCK" -v s="$SECS" 'BEGIN {printf "%.2f", 100 * d / hz / s}')
    a_hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$AGENT_PID/status")
fi
grow_teardown nk "$NK" "$RUN/nk.conf"
if want pods; then
    grow_to ptp "$PTP" "$RUN/ptp.conf" "$FEW"
    grow_sample ptp "$PTP" "$RUN/ptp.conf" "$FEW"
    grow_to ptp "$PTP" "$RUN/ptp.conf" "$GROW"
    grow_sample ptp "$PTP" "$RUN/ptp.conf" "$GROW"
    grow_teardown ptp "$PTP" "$RUN/ptp.conf"
fi

# The tables are collected and printed together at the end (in the VM, progress and tables
# share the console); a run that fails halfway still prints what it has.
REPORT="$RUN/report"
exec 3>&1 >"$REPORT"

# --- header --------------------------------------------------------------------------------
rcu_now="$(cat "$RCU_FILE" 2>/dev/null || echo unknown)"
if [ "$RCU_SET" = 1 ]; then
    rcu_line="$rcu_now (set by --rcu-expedited for this run; was $RCU_SAVED, restored on exit)"
else
    rcu_line="$rcu_now (as found; --rcu-expedited sets 1 for a run)"
fi
cpu_model="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
if [ -n "${NETKIT_VM_GUEST:-}" ]; then
    where="netkit VM (qemu TCG; host CPU ${NETKIT_BENCH_HOST_CPU:-unknown})"
else
    where="${cpu_model:-unknown CPU}"
fi
case "$MODE" in
netkit) mode_line="netkit (egress program on the netkit peer hook)" ;;
veth) mode_line="veth fallback (this kernel has no netkit): pod egress a cls_bpf filter on an ingress qdisc, the uplink on tcx" ;;
*) mode_line="unknown" ;;
esac
echo "netkit-cni benchmarks (hack/bench.sh, issue 9): $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "  machine:        $where, $(nproc) CPUs, $(awk '/^MemTotal:/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r)"
echo "  code:           $COMMIT (release build)"
# The null call's cost depends on it: a dynamically linked plugin also pays the loader
# and glibc's start-up on every call (hack/release.sh builds it static).
if ! command -v readelf >/dev/null; then
    echo "  plugin binary:  $NK (linking unknown: no readelf)"
elif LC_ALL=C readelf -l "$NK" | grep -q INTERP; then
    echo "  plugin binary:  $NK, dynamically linked"
else
    echo "  plugin binary:  $NK, statically linked"
fi
echo "  datapath mode:  $mode_line"
echo "  rcu_expedited:  $rcu_line"
if [ -n "${NETKIT_VM_GUEST:-}" ]; then
    echo "  machine load:   guest 1-min load average $LOAD_START before the run (the host's other work is not visible here)"
else
    echo "  machine load:   1-min load average $LOAD_START before the run's own work (other work shares these CPUs)"
fi
if [ -n "$ONLY" ]; then
    echo "  parts:          $PARTS (--only)"
fi
echo "  sizes:          $PODS sequential pods, bursts of $BURST, growth $FEW -> $GROW pods ($SAMPLE ADDs timed at each), agent at $ENDPOINTS endpoints, ${SECS}s per datapath test"
echo "  peers:          netkit-cni built-in IPAM ($([ ${#POOL6[@]} = 0 ] && echo "IPv4; NETKIT_BENCH_IPV6=1 for dual-stack" || echo "IPv4 + IPv6")), netkit-cni + host-local (IPv4),"
echo "                  ptp + host-local (IPv4, containernetworking-plugins $REF)"
if [ -x "$SPAWN_BIN" ]; then
    echo "  clock:          a timed CNI call = the plugin's process from spawn to exit (hack/bench/spawn.c); bursts: wall time"
else
    echo "  clock:          a timed CNI call = bash's fork + nsenter + the plugin's process (no cc for hack/bench/spawn.c)"
fi
echo

row4() { printf '  %-44s %9s %9s %9s %9s\n' "$@"; }

# --- table 1 -------------------------------------------------------------------------------
if want pods; then
    echo "1. Pod start/stop (ms; p99 = nearest rank: call $(((PODS * 99 + 99) / 100)) of $PODS from the fastest)"
    row4 "sequential, $PODS pods each" "ADD p50" "ADD p99" "DEL p50" "DEL p99"
    declare -A A50 A99 D50 D99
    for n in nk nkhl ptp; do
        A50[$n]=$(pct 50 "$RUN/$n.add"); A99[$n]=$(pct 99 "$RUN/$n.add")
        D50[$n]=$(pct 50 "$RUN/$n.del"); D99[$n]=$(pct 99 "$RUN/$n.del")
    done
    label_nk="netkit-cni, built-in IPAM"
    label_nkhl="netkit-cni, host-local IPAM"
    label_ptp="ptp + host-local"
    row4 "$label_nk" "$(ms "${A50[nk]}")" "$(ms "${A99[nk]}")" "$(ms "${D50[nk]}")" "$(ms "${D99[nk]}")"
    ag="$RUN/agent.seq"
    agent_elapsed "$TAG-nk-s-" >"$ag"
    row4 "  of which the agent's own work (*)" "$(ms "$(pct 50 "$ag")")" "$(ms "$(pct 99 "$ag")")" "" ""
    split_rows "$TAG-nk-s-" "$RUN/agent.seq"
    row4 "$label_nkhl" "$(ms "${A50[nkhl]}")" "$(ms "${A99[nkhl]}")" "$(ms "${D50[nkhl]}")" "$(ms "${D99[nkhl]}")"
    row4 "$label_ptp" "$(ms "${A50[ptp]}")" "$(ms "${A99[ptp]}")" "$(ms "${D50[ptp]}")" "$(ms "${D99[ptp]}")"
    for n in nk nkhl; do
        row4 "ratio netkit-cni $([ $n = nk ] && echo built-in || echo host-local) / ptp" \
            "$(ratio "${A50[$n]}" "${A50[ptp]}")" "$(ratio "${A99[$n]}" "${A99[ptp]}")" \
            "$(ratio "${D50[$n]}" "${D50[ptp]}")" "$(ratio "${D99[$n]}" "${D99[ptp]}")"
    done
    for n in nk nkhl ptp; do
        l="label_$n"
        row4 "ratio p99 / p50, ${!l}" "$(ratio "${A99[$n]}" "${A50[$n]}")" "" "$(ratio "${D99[$n]}" "${D50[$n]}")" ""
    done
    echo "    (*) elapsed_us of the agent's \"endpoint programmed\" log line for those ADDs: request parsed ->"
    echo "        endpoint recorded, attached, mapped and registered; (**) its program_us: the attach (on netkit"
    echo "        with its RCU grace period) and the map updates"
    if [ -s "$RUN/floor.attach" ]; then
        F50=$(pct 50 "$RUN/floor.attach")
        B50=$(pct 50 "$RUN/floor.b2b.attach")
        row4 "floor: one bare attach" "$(ms "$F50")" "$(ms "$(pct 99 "$RUN/floor.attach")")" "" ""
        row4 "floor: release of that live link (close)" "" "" "$(ms "$(pct 50 "$RUN/floor.release")")" "$(ms "$(pct 99 "$RUN/floor.release")")"
        row4 "  the same, back to back (as in a burst)" "$(ms "$B50")" "$(ms "$(pct 99 "$RUN/floor.b2b.attach")")" \
            "$(ms "$(pct 50 "$RUN/floor.b2b.release")")" "$(ms "$(pct 99 "$RUN/floor.b2b.release")")"
        echo "    (floor = $FLOOR_DESC, timed around the syscall by hack/bench/bpf.c; each attach at an"
        echo "     arbitrary moment, 10-30 ms after the previous release, as one pod's ADD meets it; back to back,"
        echo "     an attach asks for its grace period as the previous one ends, as a burst's queued attaches do)"
        for n in nk nkhl; do
            l="label_$n"
            printf '  %-44s %9s   (ADD p50 - floor: %s ms)\n' \
                "ratio netkit-cni $([ $n = nk ] && echo built-in || echo host-local) ADD p50 / floor" \
                "$(ratio "${A50[$n]}" "$F50")" "$(ms $((${A50[$n]} - F50)))"
        done
        N50=$(pct 50 "$RUN/null")
        row4 "a CNI call that does nothing (VERSION)" "$(ms "$N50")" "$(ms "$(pct 99 "$RUN/null")")" "" ""
        row4 "  its p99 / p50" "$(ratio "$(pct 99 "$RUN/null")" "$N50")" "" "" ""
        echo "    (the cost of any call: exec, start and exit of the plugin's process; part of every"
        echo "     ADD and DEL above, of ptp's too, and not of the bare attach. Its p99 / p50 is this"
        echo "     machine's own jitter for a sub-millisecond process, with no agent and no kernel work)"
        printf '  %-44s %9s   (ADD p50 - floor - null call: %s ms)\n' \
            "floor + null call, netkit-cni built-in ADD p50" "$(ms $((F50 + N50)))" \
            "$(ms $((${A50[nk]} - F50 - N50)))"
        if [ -s "$RUN/floor.filter" ]; then
            T50=$(pct 50 "$RUN/floor.filter")
            row4 "netkit-cni's own attach on veth, bare" "$(ms "$T50")" "$(ms "$(pct 99 "$RUN/floor.filter")")" "" ""
            echo "    (an ingress qdisc + a direct-action cls_bpf filter on a fresh veth, the two netlink requests the"
            echo "     agent sends, timed by hack/bench/bpf.c; spaced as above. It waits for no normal grace"
            echo "     period, which is why ADD is below the BPF_LINK_CREATE floor on this kernel)"
            printf '  %-44s %9s   (ADD p50 - that attach - null call: %s ms)\n' \
                "that attach + null call, built-in ADD p50" "$(ms $((T50 + N50)))" \
                "$(ms $((${A50[nk]} - T50 - N50)))"
        fi
    else
        F50=""
        echo "  floor: $FLOOR_DESC"
    fi
    echo
    row4 "burst of $BURST in parallel (wall s)" "ADD wall" "DEL wall" "failed" "drained"
    declare -A BA BD
    for n in nk nkhl ptp; do
        read -r "BA[$n]" "BD[$n]" fa fd drained <"$RUN/$n.burst"
        l="label_$n"
        row4 "${!l}" "$(secs "${BA[$n]}")" "$(secs "${BD[$n]}")" "$fa + $fd" "$(secs "$drained")"
    done
    echo "    (drained: from the first DEL until the agent had also finished the teardowns the DELs"
    echo "     handed it; a DEL with built-in IPAM returns before its link is deleted, and the"
    echo "     addresses stay held until then)"
    [ -s "$RUN/nk.drain" ] && echo "    after the $PODS sequential DELs of netkit-cni built-in, the agent's teardowns were done $(ms "$(cat "$RUN/nk.drain")") ms later"
    for n in nk nkhl; do
        row4 "ratio netkit-cni $([ $n = nk ] && echo built-in || echo host-local) / ptp" \
            "$(ratio "${BA[$n]}" "${BA[ptp]}")" "$(ratio "${BD[$n]}" "${BD[ptp]}")" "" ""
    done
    if [ -n "$F50" ]; then
        serial=$((BURST * B50 + ${BA[ptp]}))
        row4 "serialised floor: $BURST x back-to-back floor + ptp's wall" "$(secs "$serial")" "" "" ""
        row4 "ratio netkit-cni built-in / serialised floor" "$(ratio "${BA[nk]}" "$serial")" "" "" ""
    fi
    echo
    row4 "ADD p50 as the node fills ($SAMPLE ADDs each)" "$FEW pods" "$GROW pods" "growth" ""
    agent_elapsed "$TAG-nk-x$FEW-" >"$RUN/agent.at.$FEW"
    agent_elapsed "$TAG-nk-x$GROW-" >"$RUN/agent.at.$GROW"
    for n in nk ptp; do
        l="label_$n"
        g0=$(pct 50 "$RUN/$n.at.$FEW")
        g1=$(pct 50 "$RUN/$n.at.$GROW")
        row4 "${!l}" "$(ms "$g0")" "$(ms "$g1")" "$(ratio "$g1" "$g0")" ""
        if [ "$n" = nk ]; then
            g0=$(pct 50 "$RUN/agent.at.$FEW")
            g1=$(pct 50 "$RUN/agent.at.$GROW")
            row4 "  of which the agent's own work (*)" "$(ms "$g0")" "$(ms "$g1")" "$(ratio "$g1" "$g0")" ""
            agent_split "$TAG-nk-x$FEW-" "$RUN/agent.at.$FEW"
            agent_split "$TAG-nk-x$GROW-" "$RUN/agent.at.$GROW"
            for part in "${SPLIT_PARTS[@]}"; do
                g0=$(pct 50 "$RUN/agent.at.$FEW.$part")
                g1=$(pct 50 "$RUN/agent.at.$GROW.$part")
                row4 "    ${SPLIT_LABEL[$part]}" "$(ms "$g0")" "$(ms "$g1")" "$(ratio "$g1" "$g0")" ""
            done
        fi
    done
    g0=$(pct 50 "$RUN/nk.at.$FEW")
    g1=$(pct 50 "$RUN/nk.at.$GROW")
    row4 "ratio netkit-cni built-in / ptp" "$(ratio "$g0" "$(pct 50 "$RUN/ptp.at.$FEW")")" \
        "$(ratio "$g1" "$(pct 50 "$RUN/ptp.at.$GROW")")" "" ""
    echo
fi

# --- 2. datapath, same node ----------------------------------------------------------------
if want datapath; then
    # iperf_run CLIENT SERVER ADDR STREAMS -> "GBIT_S CPU_S_PER_GB"
    iperf_run() {
        local client="$1" server="$2" addr="$3" streams="$4" b0 b1 out="$RUN/iperf.json"
        ip netns exec "$server" iperf3 -s -1 -D -B "$addr" -p 5201 -I "$RUN/iperf.pid" >/dev/null
        sleep 0.3
        b0=$(busy_ticks)
        ip netns exec "$client" iperf3 -c "$addr" -p 5201 -t "$SECS" -P "$streams" -J >"$out" || true
        b1=$(busy_ticks)
        # The end summary: "sum_received": { ... "bytes": N, "bits_per_second": X ... }
        awk -v busy=$((b1 - b0)) -v hz="$CLK_TCK" '
            /"sum_received"/ {r = 1}
            r && /"bytes"/ && !bytes {gsub(/[^0-9.e+]/, "", $2); bytes = $2}
            r && /"bits_per_second"/ && !bps {gsub(/[^0-9.e+]/, "", $2); bps = $2}
            END {if (bytes > 0) printf "%.2f %.2f\n", bps / 1e9, (busy / hz) / (bytes / 1e9); else print "- -"}
        ' "$out"
        [ -f "$RUN/iperf.pid" ] && kill "$(cat "$RUN/iperf.pid")" 2>/dev/null
        rm -f "$RUN/iperf.pid"
    }
    # rr_run CLIENT SERVER ADDR tcp|udp -> "P50_US P99_US" (round trip, sockperf ping-pong)
    rr_run() {
        local client="$1" server="$2" addr="$3" proto="$4" flag="" spid out="$RUN/sockperf.out"
        [ "$proto" = tcp ] && flag=--tcp
        ip netns exec "$server" taskset -c "$CPU" sockperf server -i "$addr" -p 11111 $flag >/dev/null 2>&1 &
        spid=$!
        SERVER_PIDS+=("$spid")
        sleep 0.5
        ip netns exec "$client" taskset -c "$CPU" sockperf ping-pong -i "$addr" -p 11111 $flag -t "$SECS" \
            --full-rtt >"$out" 2>&1 || true
        kill "$spid" 2>/dev/null
        wait "$spid" 2>/dev/null || true
        awk '/percentile 50.000 =/ {p50 = $NF} /percentile 99.000 =/ {p99 = $NF}
            END {if (p50 == "") print "- -"; else printf "%.1f %.1f\n", p50, p99}' "$out"
    }
    # http_run CLIENT SERVER ADDR -> "CONN_PER_S ERRORS"
    http_run() {
        local client="$1" server="$2" addr="$3" hpid out="$RUN/wrk.out"
        ip netns exec "$server" busybox httpd -f -p "$addr:8080" -h "$RUN/www" >/dev/null 2>&1 &
        hpid=$!
        SERVER_PIDS+=("$hpid")
        sleep 0.3
        ip netns exec "$client" wrk -t 1 -c 8 -d "${SECS}s" -H 'Connection: close' \
            "http://$addr:8080/index.html" >"$out" 2>&1 || true
        kill "$hpid" 2>/dev/null
        wait "$hpid" 2>/dev/null || true
        awk '/^Requests\/sec:/ {r = $2}
            /Socket errors:/ {gsub(/,/, ""); e += $4 + $6 + $8 + $10}
            /Non-2xx/ {e += $NF}
            END {if (r == "") print "- -"; else printf "%.0f %d\n", r, e}' "$out"
    }

    say "datapath: pods for netkit-cni and ptp, a loopback namespace"
    for i in 1 2; do
        ip netns add "$TAG-nk-t$i"
        time_cni ADD "$NK" "$RUN/nk.conf" "$TAG-nk-t$i" >/dev/null
        ip netns add "$TAG-ptp-t$i"
        time_cni ADD "$PTP" "$RUN/ptp.conf" "$TAG-ptp-t$i" >/dev/null
    done
    ip netns add "$TAG-lo"
    ip -n "$TAG-lo" link set lo up
    declare -A PEER_C PEER_S PEER_A
    PEER_C[nk]="$TAG-nk-t1" PEER_S[nk]="$TAG-nk-t2" PEER_A[nk]="$(pod_addr "$TAG-nk-t2")"
    PEER_C[ptp]="$TAG-ptp-t1" PEER_S[ptp]="$TAG-ptp-t2" PEER_A[ptp]="$(pod_addr "$TAG-ptp-t2")"
    PEER_C[lo]="$TAG-lo" PEER_S[lo]="$TAG-lo" PEER_A[lo]=127.0.0.1
    DPATHS="nk ptp lo"
    # The floor of a BPF datapath: two more pods whose egress runs the bare program of
    # hack/bench/bpf.c (IPv4 straight to the other pod, nothing looked up) on the hook
    # netkit-cni's program runs on. On veth: ptp's pods, the program on an ingress
    # filter of each host end, by bpf_redirect_peer. On netkit: netkit-cni's own pods,
    # the program behind their pinned peer links swapped for the bare one, by
    # bpf_redirect to the other pod's primary. What any BPF datapath on that device pays
    # at least: the device, its backlog queue, one program run, one redirect.
    BARE_WHY=""
    [ -n "$MODE" ] || MODE="$(ip -d -n "$TAG-nk-t1" -o link show dev eth0 | grep -o -w -E 'netkit|veth' | head -n1)"
    # The host end's ifindex is the pod end's link (eth0@ifN), for veth and netkit alike.
    host_end() { ip -n "$1" -o link show dev eth0 | sed -n 's/.*eth0@if\([0-9]*\).*/\1/p'; }
    if [ ! -x "$BPFTOOL_BIN" ]; then
        BARE_WHY="hack/bench/bpf.c was not built (no cc)"
    else
        bare_plugin="$PTP" bare_conf="$RUN/ptp.conf"
        [ "$MODE" = netkit ] && bare_plugin="$NK" bare_conf="$RUN/nk.conf"
        for i in 1 2; do
            ip netns add "$TAG-bare-t$i"
            time_cni ADD "$bare_plugin" "$bare_conf" "$TAG-bare-t$i" >/dev/null
        done
        b1="$(host_end "$TAG-bare-t1")" b2="$(host_end "$TAG-bare-t2")"
        if [ "$MODE" = netkit ]; then
            pins="/sys/fs/bpf/$TAG/endpoints"
            bare_args=(bare-link "$pins/$TAG-bare-t1:eth0/egress:$b2" "$pins/$TAG-bare-t2:eth0/egress:$b1")
        else
            bare_args=(bare "$b1:$b2" "$b2:$b1")
        fi
        if nsenter --net="/run/netns/$NODE" "$BPFTOOL_BIN" "${bare_args[@]}"; then
            PEER_C[bare]="$TAG-bare-t1" PEER_S[bare]="$TAG-bare-t2" PEER_A[bare]="$(pod_addr "$TAG-bare-t2")"
            DPATHS="nk ptp lo bare"
        else
            BARE_WHY="attaching the bare program failed (see above)"
        fi
    fi
    # Each round's figures are collected in V (space-separated), R gets their medians.
    declare -A R V
    SKIPS=()
    collect() { # KEY VALUE
        V[$1]="${V[$1]:-} $2"
    }
    have_httpd() { busybox httpd --help >/dev/null 2>&1 || busybox --list 2>/dev/null | grep -qx httpd; }
    have iperf3 || SKIPS+=("TCP throughput and CPU per GB: skipped, iperf3 is not installed (apt-get install iperf3)")
    have sockperf || SKIPS+=("request/response latency: skipped, sockperf is not installed (apt-get install sockperf)")
    if ! have wrk; then
        SKIPS+=("HTTP connections/s: skipped, wrk is not installed (apt-get install wrk)")
    elif ! have_httpd; then
        SKIPS+=("HTTP connections/s: skipped, busybox with httpd is not installed (apt-get install busybox-static)")
    fi
    for ((round = 1; round <= ROUNDS; round++)); do
        for p in $DPATHS; do
            if have iperf3; then
                say "round $round/$ROUNDS, iperf3 ($p): 1 and 4 streams, ${SECS}s each"
                read -r bw cpu < <(iperf_run "${PEER_C[$p]}" "${PEER_S[$p]}" "${PEER_A[$p]}" 1)
                collect "$p.bw1" "$bw"; collect "$p.cpu1" "$cpu"
                read -r bw cpu < <(iperf_run "${PEER_C[$p]}" "${PEER_S[$p]}" "${PEER_A[$p]}" 4)
                collect "$p.bw4" "$bw"; collect "$p.cpu4" "$cpu"
            fi
            if have sockperf; then
                say "round $round/$ROUNDS, sockperf ping-pong ($p): TCP and UDP, ${SECS}s each"
                read -r p50 p99 < <(rr_run "${PEER_C[$p]}" "${PEER_S[$p]}" "${PEER_A[$p]}" tcp)
                collect "$p.tcp50" "$p50"; collect "$p.tcp99" "$p99"
                read -r p50 p99 < <(rr_run "${PEER_C[$p]}" "${PEER_S[$p]}" "${PEER_A[$p]}" udp)
                collect "$p.udp50" "$p50"; collect "$p.udp99" "$p99"
            fi
            if have wrk && have_httpd; then
                say "round $round/$ROUNDS, wrk ($p): new connection per request, ${SECS}s"
                read -r rate errors < <(http_run "${PEER_C[$p]}" "${PEER_S[$p]}" "${PEER_A[$p]}")
                collect "$p.http" "$rate"
                R[$p.httperr]=$((${R[$p.httperr]:-0} + ${errors//-/0}))
            fi
        done
    done
    for key in "${!V[@]}"; do
        # shellcheck disable=SC2086 # the values are numbers or "-"
        R[$key]="$(median ${V[$key]})"
    done
    for i in 1 2; do
        cni DEL "$NK" "$RUN/nk.conf" "$TAG-nk-t$i" || true
        cni DEL "$PTP" "$RUN/ptp.conf" "$TAG-ptp-t$i" || true
        [ -n "${PEER_C[bare]:-}" ] && { cni DEL "$bare_plugin" "$bare_conf" "$TAG-bare-t$i" || true; }
    done

    row5() { printf '  %-40s %10s %10s %10s %10s %8s %8s %8s %8s %8s\n' "$@"; }
    echo "2. Datapath, same node (${SECS}s per test, median of $ROUNDS round(s); IPv4 pod -> pod; loopback = two processes over 127.0.0.1 in one namespace)"
    row5 "" "netkit-cni" "ptp" "loopback" "bare BPF" "nk/ptp" "nk/lo" "nk/bare" "bare/ptp" "bare/lo"
    echo "  (throughput and connections/s: higher is better; round trips and CPU per GB: lower is better;"
    echo "   sockperf's client and server pinned to CPU $CPU: a round trip is the path's own work;"
    if [ -n "${PEER_C[bare]:-}" ]; then
        if [ "$MODE" = netkit ]; then
            echo "   bare BPF = the floor of any BPF datapath on netkit: netkit-cni's pods with their egress program"
            echo "   swapped for an 8-instruction one sending IPv4 to the other pod's primary by bpf_redirect, nothing looked up)"
        else
            echo "   bare BPF = the floor of any BPF datapath on veth: ptp's pods with, on each host end's ingress, an"
            echo "   8-instruction program sending IPv4 to the other pod by bpf_redirect_peer, nothing looked up)"
        fi
    else
        echo "   bare BPF: not measured, $BARE_WHY)"
    fi
    drow() { # LABEL KEY
        row5 "$1" "${R[nk.$2]:--}" "${R[ptp.$2]:--}" "${R[lo.$2]:--}" "${R[bare.$2]:--}" \
            "$(ratio "${R[nk.$2]:-}" "${R[ptp.$2]:-}")" "$(ratio "${R[nk.$2]:-}" "${R[lo.$2]:-}")" \
            "$(ratio "${R[nk.$2]:-}" "${R[bare.$2]:-}")" "$(ratio "${R[bare.$2]:-}" "${R[ptp.$2]:-}")" \
            "$(ratio "${R[bare.$2]:-}" "${R[lo.$2]:-}")"
    }
    if have iperf3; then
        drow "TCP, 1 stream (Gbit/s, iperf3)" bw1
        drow "TCP, 4 streams (Gbit/s, iperf3 -P 4)" bw4
        drow "CPU s per GB, 1 stream (/proc/stat)" cpu1
        drow "CPU s per GB, 4 streams (/proc/stat)" cpu4
    fi
    if have sockperf; then
        drow "TCP round trip p50 (us, sockperf pp)" tcp50
        drow "TCP round trip p99 (us)" tcp99
        drow "UDP round trip p50 (us, sockperf pp)" udp50
        drow "UDP round trip p99 (us)" udp99
    fi
    if [ -n "${R[nk.http]:-}" ]; then
        drow "HTTP connections/s (wrk -c 8, close)" http
        echo "    (wrk: 1 thread, 8 connections, a new TCP connection per request, 612-byte file from busybox httpd;"
        echo "     errors: netkit-cni ${R[nk.httperr]:--}, ptp ${R[ptp.httperr]:--}, loopback ${R[lo.httperr]:--}, bare ${R[bare.httperr]:--})"
    fi
    if have iperf3; then
        echo "    (CPU per GB: busy time of all CPUs from /proc/stat over the iperf3 run, whole machine, / GB received)"
    fi
    for s in "${SKIPS[@]}"; do echo "  $s"; done
    echo
fi

# Two nodes on one wire, an agent on each: its own script, since it builds its own nodes.
if want crossnode; then
    if [ -z "${NETKIT_VM_GUEST:-}" ] && [ -x "$REPO/hack/bench-crossnode.sh" ]; then
        echo "3. Datapath, cross node (hack/bench-crossnode.sh: pod -> remote pod vs node -> node, one wire)"
        "$REPO/hack/bench-crossnode.sh" | sed 's/^/  /' || echo "  (hack/bench-crossnode.sh failed)"
    else
        echo "3. Datapath, cross node: run hack/bench-crossnode.sh --vm for netkit (its own VM boot)"
    fi
    echo
fi

# --- 4. agent ------------------------------------------------------------------------------
if want agent; then
    echo "4. Agent (built-in IPAM from a /16; CPU = utime + stime of the agent process)"
    row4 "" "idle" "$ENDPOINTS eps" "ratio" ""
    row4 "endpoints registered" "0" "$a_eps" "" ""
    row4 "RSS (MiB, VmRSS)" "$(awk -v k="$a_rss0" 'BEGIN {printf "%.1f", k/1024}')" \
        "$(awk -v k="$a_rss1" 'BEGIN {printf "%.1f", k/1024}')" "$(ratio "$a_rss1" "$a_rss0")" ""
    row4 "peak RSS so far (MiB, VmHWM)" "" "$(awk -v k="$a_hwm" 'BEGIN {printf "%.1f", k/1024}')" "" ""
    row4 "CPU, no requests (% of one CPU over ${SECS}s)" "$a_cpu0" "$a_cpu1" "" ""
    row4 "CPU per ADD (ms; $a_filled ADDs, 25 parallel)" "" \
        "$(awk -v t="$a_fill_ticks" -v hz="$CLK_TCK" -v n="$a_filled" 'BEGIN {if (n > 0) printf "%.2f", 1000 * t / hz / n; else print "-"}')" "" ""
    agent_elapsed "$TAG-nk-x$ENDPOINTS-" >"$RUN/agent.full"
    agent_elapsed "$TAG-nk-x$FEW-" >"$RUN/agent.few"
    row4 "request-to-ack (ms; $SAMPLE ADDs each)" "$FEW eps" "$ENDPOINTS eps" "ratio" ""
    row4 "  p50" "$(ms "$(pct 50 "$RUN/agent.few")")" "$(ms "$(pct 50 "$RUN/agent.full")")" \
        "$(ratio "$(pct 50 "$RUN/agent.full")" "$(pct 50 "$RUN/agent.few")")" ""
    row4 "  p99" "$(ms "$(pct 99 "$RUN/agent.few")")" "$(ms "$(pct 99 "$RUN/agent.full")")" \
        "$(ratio "$(pct 99 "$RUN/agent.full")" "$(pct 99 "$RUN/agent.few")")" ""
    echo "    (request-to-ack: elapsed_us of the agent's \"endpoint programmed\" log line, its own time from"
    echo "     the request parsed to the endpoint attached, mapped and registered, just before the reply)"
    if [ -f "$RUN/nk.teardown" ]; then
        read -r td tdf <"$RUN/nk.teardown"
        echo "  teardown of the $ENDPOINTS endpoints by CNI DEL, 50 in parallel: $(secs "$td") s wall, $tdf failed"
    fi
    # Verifier: the programs the agent holds open (fdinfo of its bpf-prog fds).
    prog_ids=$(for fd in /proc/"$AGENT_PID"/fd/*; do
        [ "$(readlink "$fd" 2>/dev/null)" = "anon_inode:bpf-prog" ] || continue
        awk '/^prog_id:/ {print $2}' "/proc/$AGENT_PID/fdinfo/${fd##*/}"
    done | sort -un)
    if [ -z "$prog_ids" ]; then
        echo "  verifier: skipped, the agent holds no program fd to read"
    elif [ -x "$BPFTOOL_BIN" ]; then
        row4 "verifier, per program (bpf_prog_info)" "verified" "xlated B" "jited B" ""
        # shellcheck disable=SC2086
        "$BPFTOOL_BIN" info $prog_ids | while read -r id name vi xl ji; do
            row4 "  $name (id $id)" "$vi" "$xl" "$ji" ""
        done
        echo "    (verified = instructions the verifier processed, bpf_prog_info.verified_insns; 0 = kernel < 5.16)"
    else
        row4 "verifier, per program (fdinfo)" "verified" "" "" ""
        for fd in /proc/"$AGENT_PID"/fd/*; do
            [ "$(readlink "$fd" 2>/dev/null)" = "anon_inode:bpf-prog" ] || continue
            awk '/^prog_id:/ {id = $2} /^prog_tag:/ {t = $2} /^verified_insns:/ {v = $2}
                END {printf "  %-44s %9s\n", "  prog id " id " tag " t, (v == "" ? "n/a" : v)}' "/proc/$AGENT_PID/fdinfo/${fd##*/}"
        done | sort -u
        echo "    (names, xlated and jited sizes: hack/bench/bpf.c not built, no C compiler)"
    fi
    echo
fi
echo "(run took $(awk -v u=$(($(now_us) - RUN_START)) 'BEGIN {printf "%.0f", u / 1e6}') s)"
REPORT_DONE=1
