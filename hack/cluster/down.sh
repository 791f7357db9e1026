#!/usr/bin/env bash
# Tear the local cluster down completely, whatever state a failed run left it in:
# processes (daemons, containers, shims), mounts, namespaces, links, cgroups and the
# kernel tunables the kubelet changed. Safe to run when nothing is up.
#   hack/cluster/down.sh [--quiet]
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
quiet=false; [ "${1:-}" = --quiet ] && quiet=true
say() { $quiet || log "$@"; }

# Every process whose namespace (net or mnt) is one of the rig's, or whose cgroup is
# under one of the nodes' cgroup roots: daemons, shims, and containers alike.
rig_pids() {
    local -A rig_ns=()
    local f p pid ns link ino cgroup
    for f in "$NKC_DIR"/ns/*.mnt /run/netns/nkc-*; do
        [ -e "$f" ] && rig_ns["$(stat -L -c %i "$f" 2>/dev/null)"]=1
    done
    for p in /proc/[0-9]*; do
        pid="${p#/proc/}"
        [ "$pid" = $$ ] && continue
        for ns in mnt net; do
            link="$(readlink "$p/ns/$ns" 2>/dev/null)" || continue
            ino="${link##*[}"; ino="${ino%]}"
            if [ -n "${rig_ns[$ino]:-}" ]; then echo "$pid"; continue 2; fi
        done
        cgroup="$(cat "$p/cgroup" 2>/dev/null)" || continue
        [[ "$cgroup" == *:/nkc-* ]] && echo "$pid"
    done
}

kill_all() {
    local pids
    for f in "$NKC_DIR"/pids/*; do
        [ -f "$f" ] && kill -TERM "$(cat "$f")" 2>/dev/null
    done
    sleep 1
    for _ in 1 2 3 4 5; do
        pids="$(rig_pids | sort -u | tr '\n' ' ')"
        [ -n "${pids// }" ] || return 0
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null
        sleep 1
    done
    say "processes still alive after SIGKILL: $(rig_pids | tr '\n' ' ')"
}

if [ -d "$NKC_DIR" ] || ip netns list 2>/dev/null | grep -q '^nkc-'; then
    say "tearing down the local cluster"
    kill_all
    for f in "$NKC_DIR"/ns/*.mnt; do [ -e "$f" ] && umount "$f" 2>/dev/null; done
    umount "$NKC_DIR/ns" 2>/dev/null
    for ns in $(ip netns list 2>/dev/null | awk '/^nkc-/ {print $1}'); do
        ip netns del "$ns" 2>/dev/null || say "cannot delete netns $ns"
    done
    # Pod cgroups first (deepest first), then the node roots.
    find /sys/fs/cgroup/*/ -maxdepth 1 -type d -name 'nkc-*' 2>/dev/null | while read -r root; do
        find "$root" -depth -type d -exec rmdir {} \; 2>/dev/null
    done
    if [ -f "$NKC_DIR/host-sysctls" ]; then
        while IFS=' =' read -r key value; do
            [ -n "$key" ] && sysctl -qw "$key=$value" 2>/dev/null
        done <"$NKC_DIR/host-sysctls"
    fi
    if findmnt -rn -o TARGET | grep -q "^$NKC_DIR"; then
        say "mounts remain under $NKC_DIR; not removing it"
        findmnt -rn -o TARGET | grep "^$NKC_DIR" >&2
        exit 1
    fi
    rm -rf "$NKC_DIR"
fi
left="$(find /sys/fs/cgroup/*/ -maxdepth 1 -type d -name 'nkc-*' 2>/dev/null)"
[ -z "$left" ] || { say "cgroups left: $left"; exit 1; }
exit 0
