#!/usr/bin/env bash
# Start a real two-node Kubernetes cluster on this machine, without Docker, and deploy
# netkit-cni into it with `kubectl apply -f manifests/` as a user does.
#
# Layout (all names fixed, one cluster per machine; down.sh removes it, and a previous
# run's leftovers before this starts):
# - namespace nkc-cp: the "wire" bridge nkc-br (198.19.0.1/24, fd00:6e6b:c::1/64) and
#   the control plane (the cluster is dual-stack, IPv4 first):
#   etcd on loopback, kube-apiserver on :6443, controller-manager (allocating node pod
#   CIDRs) and scheduler. It routes each node's pod CIDR to that node, as the underlay
#   router of a cluster does, so the API server reaches pods (proxy, webhooks).
# - per node (node-a, node-b): a network namespace nkc-<node> with eth0 on the bridge,
#   and its own mount namespace, as kind's node containers have, so the DaemonSet's host
#   paths resolve per node: /etc/cni/net.d, /opt/cni/bin, /var/lib/kubelet,
#   /var/lib/containerd, /run/containerd, /run/netns, /var/lib/cni, /var/log/pods, the
#   agent's state and socket dirs, a fresh sysfs (so /sys/class/net shows the node's own
#   devices) and a fresh bpffs. In it run containerd, the kubelet and kube-proxy
#   (iptables mode).
# Requires: hack/cluster/build.sh and hack/cluster/images.sh to have run.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BIN="${CLUSTER_BIN}"
IMAGES="$NKC_IMAGES"
PKI="$NKC_DIR/pki"

prepare() {
    [ -f "$BIN/.complete" ] || die "components not built: run hack/cluster/build.sh"
    [ -d "$IMAGES" ] || die "images not built: run hack/cluster/images.sh"
    for tool in nsenter unshare openssl containerd runc iptables ip ctr curl; do
        command -v "$tool" >/dev/null || die "$tool is missing (hack/setup.sh installs it)"
    done
    "$CLUSTER_DIR/down.sh" --quiet
    mkdir -p "$NKC_DIR"/{pki,cp,ns,logs,pids}
    # Mount-namespace files can only be bind-mounted onto a private mount.
    mount --bind "$NKC_DIR/ns" "$NKC_DIR/ns"
    mount --make-private "$NKC_DIR/ns"
}

# --- certificates -------------------------------------------------------------------
# One CA signs everything; EC P-256 keys (fast to make). Valid for a week: a rig lives
# for one test run.
new_cert() { # name cn org usage(client|server|both) [sans]
    local name="$1" cn="$2" org="$3" usage="$4" sans="${5:-}" eku subj
    case "$usage" in
        client) eku=clientAuth ;; server) eku=serverAuth ;; both) eku=serverAuth,clientAuth ;;
    esac
    subj="/CN=$cn"; [ -z "$org" ] || subj="/O=$org$subj"
    openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
        -keyout "$PKI/$name.key" -out "$PKI/$name.csr" -subj "$subj" 2>/dev/null
    {
        echo "basicConstraints=CA:FALSE"
        echo "keyUsage=critical,digitalSignature,keyEncipherment"
        echo "extendedKeyUsage=$eku"
        [ -z "$sans" ] || echo "subjectAltName=$sans"
    } >"$PKI/$name.ext"
    openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
        -CAcreateserial -days 7 -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
}
kubeconfig() { # file cert-name
    cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: netkit-local
  cluster:
    certificate-authority: $PKI/ca.crt
    server: https://$NKC_CP_V4:6443
users:
- name: $2
  user:
    client-certificate: $PKI/$2.crt
    client-key: $PKI/$2.key
contexts:
- name: netkit-local
  context: {cluster: netkit-local, user: $2}
current-context: netkit-local
EOF
}

make_pki() {
    openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
        -keyout "$PKI/ca.key" -out "$PKI/ca.crt" -days 7 -subj "/CN=netkit-local-ca" 2>/dev/null
    new_cert apiserver kube-apiserver "" server \
        "IP:$NKC_CP_V4,IP:$NKC_CP_V6,IP:127.0.0.1,IP:$NKC_API_SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    new_cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters client
    new_cert admin kubernetes-admin system:masters client
    new_cert controller-manager system:kube-controller-manager "" client
    new_cert scheduler system:kube-scheduler "" client
    new_cert kube-proxy system:kube-proxy "" client
    local n
    for n in "${NKC_NODES[@]}"; do
        new_cert "kubelet-$n" "system:node:$n" system:nodes client
        new_cert "kubelet-serving-$n" "$n" "" server "IP:$(node_ip "$n"),IP:$(node_ip6 "$n"),DNS:$n"
        kubeconfig "$NKC_DIR/cp/kubelet-$n.kubeconfig" "kubelet-$n"
    done
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$PKI/sa.key" 2>/dev/null
    openssl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
    kubeconfig "$NKC_KUBECONFIG" admin
    kubeconfig "$NKC_DIR/cp/controller-manager.kubeconfig" controller-manager
    kubeconfig "$NKC_DIR/cp/scheduler.kubeconfig" scheduler
    kubeconfig "$NKC_DIR/cp/kube-proxy.kubeconfig" kube-proxy
}

# start NAME WHERE COMMAND...: a daemon in its own session, in the control-plane
# namespace (WHERE = cp) or in a node (WHERE = node name), logging to logs/NAME.log.
# setsid, `ip netns exec` and nsenter all exec, so the recorded PID is the daemon's.
start() {
    local name="$1" where="$2"; shift 2
    local prefix
    if [ "$where" = cp ]; then
        prefix=(ip netns exec "$NKC_CP_NS")
    else
        prefix=(nsenter --net="/run/netns/$(node_ns "$where")" --mount="$(node_mnt "$where")" --)
    fi
    setsid "${prefix[@]}" "$@" </dev/null >"$NKC_DIR/logs/$name.log" 2>&1 &
    echo $! >"$NKC_DIR/pids/$name"
}
fail_with_log() { log "$1 failed; the end of its log:"; tail -n 40 "$NKC_DIR/logs/$1.log" >&2 || true; exit 1; }

# --- network ------------------------------------------------------------------------
make_network() {
    ip netns add "$NKC_CP_NS"
    in_cp ip link set lo up
    in_cp ip link add "$NKC_BRIDGE" type bridge
    in_cp ip addr add "$NKC_CP_V4/24" dev "$NKC_BRIDGE"
    in_cp ip addr add "$NKC_CP_V6/64" dev "$NKC_BRIDGE" nodad
    in_cp ip link set "$NKC_BRIDGE" up
    in_cp sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
    local n ns
    for n in "${NKC_NODES[@]}"; do
        ns="$(node_ns "$n")"
        ip netns add "$ns"
        ip -n "$NKC_CP_NS" link add "wire-$n" type veth peer name eth0 netns "$ns"
        ip -n "$NKC_CP_NS" link set "wire-$n" master "$NKC_BRIDGE" up
        ip -n "$ns" link set lo up
        ip -n "$ns" addr add "$(node_ip "$n")/24" dev eth0
        ip -n "$ns" addr add "$(node_ip6 "$n")/64" dev eth0 nodad
        ip -n "$ns" link set eth0 up
        # The default routes pick the uplink the agent attaches to.
        ip -n "$ns" route add default via "$NKC_CP_V4"
        ip -n "$ns" -6 route add default via "$NKC_CP_V6"
        ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
    done
}

# --- control plane ------------------------------------------------------------------
start_control_plane() {
    start etcd cp "$BIN/etcd" --name nkc --data-dir "$NKC_DIR/etcd" \
        --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
        --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
        --initial-cluster nkc=http://127.0.0.1:2380 --unsafe-no-fsync --log-level warn
    # etcd on loopback only, without TLS: nothing but the API server in this namespace can
    # reach it. --unsafe-no-fsync: the rig's data lives for one run.
    wait_for 60 "etcd" in_cp curl -sf http://127.0.0.1:2379/health || fail_with_log etcd

    start kube-apiserver cp "$BIN/kube-apiserver" \
        --etcd-servers=http://127.0.0.1:2379 \
        --advertise-address="$NKC_CP_V4" --bind-address=0.0.0.0 --secure-port=6443 \
        --client-ca-file="$PKI/ca.crt" \
        --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
        --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
        --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
        --kubelet-preferred-address-types=InternalIP \
        --service-account-issuer=https://kubernetes.default.svc.cluster.local \
        --service-account-key-file="$PKI/sa.pub" \
        --service-account-signing-key-file="$PKI/sa.key" \
        --service-cluster-ip-range="$NKC_SERVICE_CIDR" \
        --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
        --allow-privileged=true
    wait_for 120 "kube-apiserver /readyz" \
        in_cp curl -sf --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
        "https://$NKC_CP_V4:6443/readyz" || fail_with_log kube-apiserver

    start kube-controller-manager cp "$BIN/kube-controller-manager" \
        --kubeconfig="$NKC_DIR/cp/controller-manager.kubeconfig" \
        --authentication-kubeconfig="$NKC_DIR/cp/controller-manager.kubeconfig" \
        --authorization-kubeconfig="$NKC_DIR/cp/controller-manager.kubeconfig" \
        --allocate-node-cidrs=true --cluster-cidr="$NKC_CLUSTER_CIDR" \
        --node-cidr-mask-size-ipv4=24 --node-cidr-mask-size-ipv6=64 \
        --service-cluster-ip-range="$NKC_SERVICE_CIDR" \
        --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
        --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
        --use-service-account-credentials=true --leader-elect=false --bind-address=127.0.0.1
    start kube-scheduler cp "$BIN/kube-scheduler" \
        --kubeconfig="$NKC_DIR/cp/scheduler.kubeconfig" \
        --authentication-kubeconfig="$NKC_DIR/cp/scheduler.kubeconfig" \
        --authorization-kubeconfig="$NKC_DIR/cp/scheduler.kubeconfig" \
        --leader-elect=false --bind-address=127.0.0.1
}

# --- nodes --------------------------------------------------------------------------
# The host paths a node has its own copy of (mount point -> dir under the node's dir).
NODE_MOUNTS=(
    /etc/cni/net.d:etc-cni-net.d
    /opt/cni/bin:opt-cni-bin
    /var/lib/kubelet:var-lib-kubelet
    /var/lib/containerd:var-lib-containerd
    /run/containerd:run-containerd
    /run/netns:run-netns
    /var/lib/cni:var-lib-cni
    /var/log/pods:var-log-pods
    /var/log/containers:var-log-containers
    /var/lib/netkit-agent:var-lib-netkit-agent
    /run/netkit:run-netkit
)

make_node_mount_ns() {
    local n="$1" d mnt m
    d="$(node_dir "$n")"; mnt="$(node_mnt "$n")"
    for m in "${NODE_MOUNTS[@]}"; do
        mkdir -p "${m%%:*}" "$d/${m#*:}"
    done
    touch "$mnt"
    # The script runs inside the new mount namespace (private: nothing mounted in it
    # propagates back to the host) and inside the node's network namespace, so the
    # sysfs it mounts shows the node's own devices. Then everything in it is made
    # shared among the node's own mounts, as on a real node (kind's too): the runtime
    # refuses HostToContainer/Bidirectional volume propagation from a private mount.
    local script="set -e
        for m in ${NODE_MOUNTS[*]}; do mount --bind \"$d/\${m#*:}\" \"\${m%%:*}\"; done
        mkdir -p $d/cgroup-hold
        mount --rbind /sys/fs/cgroup $d/cgroup-hold
        umount -l /sys
        mount -t sysfs sysfs /sys
        mount --rbind $d/cgroup-hold /sys/fs/cgroup
        umount -l $d/cgroup-hold
        mount -t bpf bpf /sys/fs/bpf
        mount --make-rshared /"
    nsenter --net="/run/netns/$(node_ns "$n")" -- \
        unshare --mount="$mnt" --propagation private sh -c "$script"
}

# runc, or the wrapper that keeps pods from asking for a negative oom_score_adj where
# root lacks CAP_SYS_RESOURCE (bit 24 of CapEff), as on the project's machines.
runc_binary() {
    local caps
    caps="$(awk '/^CapEff:/ {print $2}' /proc/self/status)"
    if (( (16#$caps >> 24) & 1 )); then command -v runc; else echo "$CLUSTER_DIR/runc-wrapper.sh"; fi
}

write_node_configs() {
    local n="$1" d ip
    d="$(node_dir "$n")"; ip="$(node_ip "$n")"
    cat >"$d/containerd.toml" <<EOF
version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "/run/containerd/containerd.sock"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  enable_unprivileged_ports = true
  enable_unprivileged_icmp = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "$(runc_binary)"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/opt/cni/bin"
    conf_dir = "/etc/cni/net.d"
EOF
    # Pods with dnsPolicy Default get this; there is no upstream resolver here.
    echo "nameserver $NKC_CP_V4" >"$d/resolv.conf"
    cat >"$d/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $PKI/ca.crt}
# The API server's kubelet client is system:masters; a webhook would add a
# SubjectAccessReview round trip per call and nothing the rig tests.
authorization: {mode: AlwaysAllow}
tlsCertFile: $PKI/kubelet-serving-$n.crt
tlsPrivateKeyFile: $PKI/kubelet-serving-$n.key
cgroupDriver: cgroupfs
cgroupRoot: /nkc-$n
clusterDomain: cluster.local
clusterDNS: [$NKC_DNS_SERVICE_IP]
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
resolvConf: $d/resolv.conf
failSwapOn: false
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
serializeImagePulls: false
# The images are imported, not pulled: never garbage-collect them, and never evict for
# the disk the whole machine shares.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
EOF
    cat >"$d/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $NKC_DIR/cp/kube-proxy.kubeconfig}
mode: iptables
clusterCIDR: $NKC_CLUSTER_CIDR
hostnameOverride: $n
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: [primary]
# Machine-wide conntrack settings are the host's business, not a node namespace's.
conntrack: {maxPerCore: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
}

# The kubelet's cgroupRoot must exist in every v1 hierarchy; a new cpuset starts with no
# CPUs or memory nodes, so give it the root's.
make_node_cgroups() {
    local n="$1" h
    for h in /sys/fs/cgroup/*/; do
        [ "$h" = /sys/fs/cgroup/unified/ ] && continue
        mkdir -p "$h/nkc-$n"
    done
    cat /sys/fs/cgroup/cpuset/cpuset.cpus >"/sys/fs/cgroup/cpuset/nkc-$n/cpuset.cpus"
    cat /sys/fs/cgroup/cpuset/cpuset.mems >"/sys/fs/cgroup/cpuset/nkc-$n/cpuset.mems"
}

start_node() {
    local n="$1" d
    d="$(node_dir "$n")"
    make_node_cgroups "$n"
    # containerd 1.x brings each pod's lo up through the `loopback` CNI plugin, which a
    # node's OS provides in /opt/cni/bin (kind's node image does); so does the rig,
    # from Debian's containernetworking-plugins.
    install -m 0755 /usr/lib/cni/loopback "$d/opt-cni-bin/loopback"
    start "containerd-$n" "$n" containerd --config "$d/containerd.toml"
    wait_for 60 "containerd on $n" in_node "$n" ctr version || fail_with_log "containerd-$n"
    local tar
    for tar in "$IMAGES"/*.tar; do
        [ -e "$tar" ] || continue
        in_node "$n" ctr -n k8s.io images import --no-unpack=false "$tar" >/dev/null \
            || die "importing $tar into $n's containerd"
    done
    start "kubelet-$n" "$n" "$BIN/kubelet" --config "$d/kubelet.yaml" \
        --kubeconfig "$NKC_DIR/cp/kubelet-$n.kubeconfig" \
        --hostname-override "$n" --node-ip "$(node_ip "$n"),$(node_ip6 "$n")" --v=1
    start "kube-proxy-$n" "$n" "$BIN/kube-proxy" --config "$d/kube-proxy.yaml"
}

kubectl_local() { in_cp "$BIN/kubectl" --kubeconfig "$NKC_KUBECONFIG" "$@"; }
node_registered() { kubectl_local get node "$1"; }
node_pod_cidrs() { kubectl_local get node "$1" -o jsonpath='{.spec.podCIDRs[*]}'; }

# The control-plane namespace routes each node's pod CIDR to it, as the underlay router
# of a routed cluster does: pods answer the API server (proxy, exec streams, webhooks).
has_pod_cidrs() { [ -n "$(node_pod_cidrs "$1")" ]; }
route_pod_cidrs() {
    local n cidr cidrs
    for n in "${NKC_NODES[@]}"; do
        wait_for 60 "pod CIDRs of $n" has_pod_cidrs "$n" || true
        cidrs="$(node_pod_cidrs "$n")"
        [ -n "$cidrs" ] || die "node $n got no pod CIDR from the controller-manager"
        for cidr in $cidrs; do
            case "$cidr" in
                *:*) in_cp ip -6 route replace "$cidr" via "$(node_ip6 "$n")" ;;
                *) in_cp ip route replace "$cidr" via "$(node_ip "$n")" ;;
            esac
        done
    done
}

main() {
    phase "certificates and network"
    prepare
    make_pki
    make_network
    # The kubelet sets a few machine-wide kernel tunables (vm.overcommit_memory,
    # kernel.panic, kernel.panic_on_oops, kernel.keys.*); down.sh puts the host's back.
    sysctl -a 2>/dev/null | grep -E '^(vm\.overcommit_memory|vm\.panic_on_oom|kernel\.panic|kernel\.panic_on_oops|kernel\.keys\.root_max(keys|bytes)) ' \
        >"$NKC_DIR/host-sysctls" || true

    phase "control plane"
    start_control_plane

    phase "nodes"
    local n
    for n in "${NKC_NODES[@]}"; do
        mkdir -p "$(node_dir "$n")"
        make_node_mount_ns "$n"
        write_node_configs "$n"
        start_node "$n"
    done
    for n in "${NKC_NODES[@]}"; do
        wait_for 120 "node $n to register" node_registered "$n" || fail_with_log "kubelet-$n"
    done
    route_pod_cidrs

    phase "deploy netkit-cni (kubectl apply -f manifests/)"
    kubectl_local apply -f "$REPO/manifests/"
    kubectl_local -n netkit-system rollout status daemonset/netkit-agent --timeout=180s \
        || { kubectl_local -n netkit-system describe pods >&2 || true; fail_with_log "kubelet-node-a"; }
    kubectl_local wait --for=condition=Ready node --all --timeout=120s

    phase "cluster DNS"
    sed -e "s|@COREDNS_IMAGE@|$COREDNS_IMAGE|" -e "s|@DNS_IP@|$NKC_DNS_SERVICE_IP|" \
        "$CLUSTER_DIR/coredns.yaml" | kubectl_local apply -f -
    kubectl_local -n kube-system rollout status deployment/coredns --timeout=180s

    phase ""
    log "cluster up: KUBECONFIG=$NKC_KUBECONFIG (reach it from namespace $NKC_CP_NS: hack/cluster/kubectl.sh)"
}

# Sourcing the script (for debugging a step) defines the functions without running.
[[ "${BASH_SOURCE[0]}" != "$0" ]] || main "$@"
