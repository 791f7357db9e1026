#!/usr/bin/env bash
# Our own end-to-end checks against a cluster running netkit-cni, through kubectl only,
# so the local cluster tier and hack/kind-e2e.sh run the same code:
#   KUBECTL="kubectl --context kind-netkit" hack/cluster/checks.sh
# (the local tier sets KUBECTL to hack/cluster/kubectl.sh). Needs two schedulable nodes
# and the agnhost image the conformance tests use. Each check prints PASS or FAIL; the
# exit status is the number of failures (0: all passed).
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NS="netkit-checks-$$"
AGENT_SELECTOR="app.kubernetes.io/name=netkit-agent"
passed=0; failed=0; failures=()

skipped=0
# check6 NAME COMMAND...: an IPv6 check, skipped (and counted as such) where the cluster
# is not dual-stack.
check6() {
    if [ -n "$B_IP6" ]; then check "$@"; else skipped=$((skipped + 1)); echo "SKIP  $1 (the cluster is not dual-stack)"; fi
}
check() { # name command...
    local name="$1"; shift
    local out
    if out="$("$@" 2>&1)"; then
        passed=$((passed + 1)); echo "PASS  $name"
    else
        failed=$((failed + 1)); failures+=("$name"); echo "FAIL  $name"
        printf '%s\n' "$out" | tail -n 20 | sed 's/^/      /'
    fi
}

cleanup() { k delete namespace "$NS" --wait=false >/dev/null 2>&1 || true; }
trap cleanup EXIT

# Two worker nodes where there are (kind's control-plane node is tainted), else any two.
mapfile -t NODES < <(k get nodes -l '!node-role.kubernetes.io/control-plane' -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}' | head -n 2)
[ "${#NODES[@]}" -ge 2 ] || mapfile -t NODES < <(k get nodes -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}' | head -n 2)
[ "${#NODES[@]}" -ge 2 ] || { echo "FAIL  need two nodes, have: ${NODES[*]:-none}"; exit 1; }
node_internal_ip() { k get node "$1" -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}' | awk '{print $1}'; }
agent_pod() { k -n netkit-system get pods -l "$AGENT_SELECTOR" --field-selector "spec.nodeName=$1" -o jsonpath='{.items[0].metadata.name}'; }
in_agent() { local node="$1"; shift; k -n netkit-system exec "$(agent_pod "$node")" -c agent -- "$@"; }
pod_ip() { k -n "$NS" get pod "$1" -o jsonpath='{.status.podIP}'; }
exec_in() { local pod="$1"; shift; k -n "$NS" exec "$pod" -- "$@"; }

k create namespace "$NS" >/dev/null
# A netexec server and a client on each node, pinned by nodeName.
make_pod() { # name node
    k -n "$NS" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: $1, labels: {app: $1, role: server}}
spec:
  nodeName: $2
  terminationGracePeriodSeconds: 1
  containers:
  - name: agnhost
    image: $AGNHOST_IMAGE
    imagePullPolicy: IfNotPresent
    args: [netexec, --http-port=8080, --udp-port=8081]
    ports: [{containerPort: 8080}]
    readinessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 1}
EOF
}
make_pod server-a "${NODES[0]}"
make_pod server-b "${NODES[1]}"
k -n "$NS" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Service
metadata: {name: to-b}
spec:
  selector: {app: server-b}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: to-b-nodeport}
spec:
  type: NodePort
  # Both families where the cluster has them (the IPv6 NodePort check), else IPv4.
  ipFamilyPolicy: PreferDualStack
  selector: {app: server-b}
  ports: [{port: 80, targetPort: 8080}]
EOF
k -n "$NS" wait --for=condition=Ready pod --all --timeout=120s >/dev/null \
    || { k -n "$NS" describe pods; exit 1; }

A_IP="$(pod_ip server-a)"; B_IP="$(pod_ip server-b)"
# The pods' IPv6 addresses where the cluster is dual-stack (empty where it is not).
pod_ip6() { k -n "$NS" get pod "$1" -o jsonpath='{.status.podIPs[*].ip}' | tr ' ' '\n' | grep : | head -n1; }
node_internal_ip6() { k get node "$1" -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}' | tr ' ' '\n' | grep : | head -n1; }
A_IP6="$(pod_ip6 server-a)"; B_IP6="$(pod_ip6 server-b)"
NODE_A_IP6="$(node_internal_ip6 "${NODES[0]}")"
if [ -n "$B_IP6" ]; then
    k -n "$NS" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Service
metadata: {name: to-b-v6}
spec:
  ipFamilyPolicy: SingleStack
  ipFamilies: [IPv6]
  selector: {app: server-b}
  ports: [{port: 80, targetPort: 8080}]
EOF
    CLUSTER_IP6="$(k -n "$NS" get svc to-b-v6 -o jsonpath='{.spec.clusterIP}')"
fi
NODE_A_IP="$(node_internal_ip "${NODES[0]}")"; NODE_B_IP="$(node_internal_ip "${NODES[1]}")"
CLUSTER_IP="$(k -n "$NS" get svc to-b -o jsonpath='{.spec.clusterIP}')"
NODE_PORT="$(k -n "$NS" get svc to-b-nodeport -o jsonpath='{.spec.ports[0].nodePort}')"
echo "pods: server-a $A_IP on ${NODES[0]} ($NODE_A_IP), server-b $B_IP on ${NODES[1]} ($NODE_B_IP)"
echo "service to-b $CLUSTER_IP:80, nodePort $NODE_PORT"

http_hostname() { # from-pod url expected
    local got; got="$(exec_in "$1" curl -sS --max-time 5 "$2")" || return 1
    [ "$got" = "$3" ] || { echo "got '$got' from $2, wanted '$3'"; return 1; }
}
counters_of() { in_agent "$1" netkit-agent stats --json; }
value_of() { # counters-json name: one value of `netkit-agent stats --json` ({"name": value, ...})
    grep -oE "\"$2\": *[0-9]+" <<<"$1" | grep -oE '[0-9]+$'
}
counter_positive() { local v; v="$(value_of "$(counters_of "$1")" "$2")"; echo "$1 $2 = ${v:-missing}"; [ "${v:-0}" -gt 0 ]; }

check "pod -> pod on another node, ICMP" exec_in server-a ping -c 3 -W 2 "$B_IP"
check "pod -> pod on another node, TCP" http_hostname server-a "http://$B_IP:8080/hostname" server-b
check "pod -> pod on another node, back, TCP" http_hostname server-b "http://$A_IP:8080/hostname" server-a
check "pod -> its own node" exec_in server-a ping -c 3 -W 2 "$NODE_A_IP"
check "pod -> the other node" exec_in server-a ping -c 3 -W 2 "$NODE_B_IP"
check "pod -> ClusterIP service (backend on another node)" http_hostname server-a "http://$CLUSTER_IP/hostname" server-b
check "pod -> NodePort on its own node" http_hostname server-a "http://$NODE_A_IP:$NODE_PORT/hostname" server-b
check "pod -> NodePort on the other node" http_hostname server-a "http://$NODE_B_IP:$NODE_PORT/hostname" server-b
check6 "IPv6: pod -> pod on another node, ICMP" exec_in server-a ping -c 3 -W 2 "$B_IP6"
check6 "IPv6: pod -> pod on another node, TCP" http_hostname server-a "http://[$B_IP6]:8080/hostname" server-b
check6 "IPv6: pod -> pod on another node, back, TCP" http_hostname server-b "http://[$A_IP6]:8080/hostname" server-a
check6 "IPv6: pod -> its own node" exec_in server-a ping -c 3 -W 2 "$NODE_A_IP6"
check6 "IPv6: pod -> ClusterIP service (backend on another node)" http_hostname server-a "http://[${CLUSTER_IP6:-}]/hostname" server-b
check6 "IPv6: pod -> NodePort on its own node" http_hostname server-a "http://[$NODE_A_IP6]:$NODE_PORT/hostname" server-b
check "fast path ran: redirect_peer into pods on ${NODES[1]}" counter_positive "${NODES[1]}" redirect_peer
fib_or_neigh() {
    local fib neigh
    local counters; counters="$(counters_of "$1")"
    fib="$(value_of "$counters" fib_ok)"; neigh="$(value_of "$counters" redirect_neigh)"
    echo "$1 fib_ok=${fib:-missing} redirect_neigh=${neigh:-missing}"
    [ $(( ${fib:-0} + ${neigh:-0} )) -gt 0 ]
}
check "fast path ran: fib-resolved redirect out of ${NODES[0]}" fib_or_neigh "${NODES[0]}"

# A rolling restart of the agent must not lose a packet: the datapath is pinned and
# keeps running while no agent does, and the new agent adopts it.
restart_loses_nothing() {
    local out pid
    out="$(mktemp)"
    exec_in server-a ping -i 0.2 -c 150 -W 1 "$B_IP" >"$out" 2>&1 &
    pid=$!
    sleep 2
    k -n netkit-system rollout restart daemonset/netkit-agent || return 1
    k -n netkit-system rollout status daemonset/netkit-agent --timeout=120s || return 1
    wait "$pid"
    tail -n 3 "$out"
    grep -qE '150 packets transmitted, 150 (packets )?received' "$out"
}
check "agent rollout restart during a continuous ping loses nothing" restart_loses_nothing

# Deleting pods leaves nothing behind on either node: the endpoints the agent serves,
# the host links (nk + 11 hex digits), the pinned per-endpoint programs and the
# addresses are those of the pods still running there, and the deleted pods' IPs are
# nowhere.
pods_on_node() { # node: IPs of its running pods that are not on the host network
    k get pods -A --field-selector "spec.nodeName=$1,status.phase=Running" \
        -o jsonpath='{range .items[*]}{.spec.hostNetwork}{" "}{.status.podIP}{"\n"}{end}' \
        | awk '$1 != "true" {print $NF}' | sort
}
node_state_matches_pods() { # node
    local node="$1" want links pins eps
    want="$(pods_on_node "$node" | grep -c .)"
    local endpoints; endpoints="$(in_agent "$node" netkit-agent endpoints --json)"
    eps="$(grep -c '"container_id"' <<<"$endpoints")"
    links="$(in_agent "$node" sh -c 'ls /sys/class/net' | grep -cE '^nk[0-9a-f]{11}$')"
    pins="$(in_agent "$node" sh -c 'ls /sys/fs/bpf/netkit/endpoints 2>/dev/null' | grep -c .)"
    echo "$node: running pods $want, endpoints $eps, host links $links, endpoint pins $pins"
    [ "$eps" = "$want" ] && [ "$links" = "$want" ] && [ "$pins" = "$want" ] || return 1
    local ip
    for ip in "$A_IP" "$B_IP" $A_IP6 $B_IP6; do
        if grep -qE "\"$ip(/|\")" <<<"$endpoints"; then
            echo "$node still has an endpoint with $ip"; return 1
        fi
    done
}
delete_pods_cleanly() {
    k -n "$NS" delete pod server-a server-b --wait=true --timeout=60s || return 1
    local node ok=0
    for node in "${NODES[@]}"; do
        wait_for 30 "$node state to match its pods" node_state_matches_pods "$node" || ok=1
        node_state_matches_pods "$node"
    done
    return $ok
}
check "deleting pods leaves no link, address, endpoint or pin on either node" delete_pods_cleanly

echo "checks: $passed passed, $failed failed${failures[*]:+ (${failures[*]})}"
# The line hack/test.sh counts, in cargo's format.
echo "test result: $([ "$failed" = 0 ] && echo ok || echo FAILED). $passed passed; $failed failed; $skipped ignored (our cluster checks)"
exit "$failed"
