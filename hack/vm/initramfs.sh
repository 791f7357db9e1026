#!/usr/bin/env bash
# Build the VM tier's base initramfs (uncompressed newc cpio) and print its path.
#
#   hack/vm/initramfs.sh MODULES_DIR
#
# MODULES_DIR is the lib/modules/<release> tree from hack/vm/kernel.sh (with modules.dep).
# The archive holds: busybox (static, with applet symlinks), /init (hack/vm/init), the host's
# `ip` (iproute2) and any of $OPTIONAL_HOST_TOOLS present on this machine, each with its
# shared libraries and the loader, and the modules in $VM_MODULES plus their dependencies,
# decompressed, with the load order in /etc/netkit-vm/modules.
#
# The per-run part (binaries under test, command, env) is a second archive appended by
# hack/vm/run.sh; the kernel unpacks concatenated archives one after the other.
#
# Cached in $NETKIT_CACHE/vm/initramfs-<hash>.cpio (machine-wide, default
# /var/cache/netkit-cni, outside the clone), keyed on these scripts, the kernel release, the
# module list and the host binaries (and libraries) that go in.
set -euo pipefail

# Modules the guest loads at boot (netkit itself is built into the trixie cloud kernel).
# nft_chain_nat + nft_nat bring nf_conntrack and nf_nat: the tests translate flows as
# kube-proxy does, and the datapath asks conntrack (module kfuncs) about them; nft_ct
# for the `ct state invalid drop` rule kube-proxy also installs.
VM_MODULES="${NETKIT_VM_MODULES:-veth bridge dummy nft_chain_nat nft_nat nft_ct}"
# Host tools copied in (to /usr/bin, replacing busybox's applet of the same name). bash runs
# the guest command: Debian's busybox sh prefers its own applets (its `ip` is not iproute2's).
REQUIRED_HOST_TOOLS="bash ip nft"
OPTIONAL_HOST_TOOLS="tc bpftool ping"

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CACHE="${NETKIT_VM_CACHE:-${NETKIT_CACHE:-/var/cache/netkit-cni}/vm}"

die() {
    echo "initramfs.sh: error: $*" >&2
    exit 1
}
log() { echo "initramfs.sh: $*" >&2; }
# shellcheck source=hack/vm/lib.sh
. "$HERE/lib.sh"

[[ $# -eq 1 ]] || die "usage: $0 MODULES_DIR (lib/modules/<release> from hack/vm/kernel.sh)"
MODULES_DIR="$1"
[[ -s "$MODULES_DIR/modules.dep" ]] || die "$MODULES_DIR/modules.dep missing (run hack/vm/kernel.sh)"
RELEASE="$(basename "$MODULES_DIR")"

for tool in cpio xz ldd find sha256sum; do
    command -v "$tool" >/dev/null || die "'$tool' not found in PATH"
done

# busybox: prefer the static one (Debian's busybox-static installs it as /bin/busybox).
BUSYBOX="${NETKIT_VM_BUSYBOX:-$(command -v busybox || true)}"
[[ -n "$BUSYBOX" && -x "$BUSYBOX" ]] || die "busybox not found (apt install busybox-static)"

declare -A tool_path=()
for t in $REQUIRED_HOST_TOOLS; do
    p="$(PATH="$PATH:/usr/sbin:/sbin" command -v "$t" || true)"
    [[ -n "$p" ]] || die "'$t' not found on this machine (needed in the VM)"
    tool_path[$t]="$p"
done
for t in $OPTIONAL_HOST_TOOLS; do
    p="$(PATH="$PATH:/usr/sbin:/sbin" command -v "$t" || true)"
    [[ -n "$p" ]] && tool_path[$t]="$p"
done

# ---- module load order: dependencies first, as modprobe would (modules.dep lists a
# module's dependencies so that loading them last-to-first works).
declare -A dep_of=() seen=()
while IFS= read -r line; do
    key="${line%%:*}"
    dep_of[$key]="${line#*:}"
done <"$MODULES_DIR/modules.dep"

module_path() { # name -> path relative to MODULES_DIR, "" if not found
    local want="${1//-/_}" key base
    for key in "${!dep_of[@]}"; do
        base="${key##*/}"
        base="${base%%.ko*}"
        if [[ "${base//-/_}" == "$want" ]]; then
            echo "$key"
            return
        fi
    done
}

order=()
add_module() { # path relative to MODULES_DIR
    local m="$1" deps i
    [[ -n "${seen[$m]:-}" ]] && return
    seen[$m]=1
    read -r -a deps <<<"${dep_of[$m]:-}"
    for ((i = ${#deps[@]} - 1; i >= 0; i--)); do
        add_module "${deps[i]}"
    done
    order+=("$m")
}

for name in $VM_MODULES; do
    rel="$(module_path "$name")"
    if [[ -z "$rel" ]]; then
        if grep -qE "/${name//[-_]/[-_]}\.ko$" "$MODULES_DIR/modules.builtin" 2>/dev/null; then
            log "module $name is built into $RELEASE; nothing to load"
            continue
        fi
        die "module $name not found in $MODULES_DIR/modules.dep"
    fi
    add_module "$rel"
done

# ---- cache key
key_input() {
    sha256sum "$HERE/initramfs.sh" "$HERE/lib.sh" "$HERE/init"
    echo "release=$RELEASE modules=${order[*]}"
    local f lib
    for f in "$BUSYBOX" "${tool_path[@]}"; do
        for lib in "$f" $(vm_elf_libs "$f"); do
            stat -L -c '%n %s %Y' "$lib"
        done
    done
}
key="$(key_input | sha256sum | cut -c1-16)"
out="$CACHE/initramfs-$key.cpio"
if [[ -s "$out" ]]; then
    log "using cached $out"
    echo "$out"
    exit 0
fi

start="$(vm_now)"
mkdir -p "$CACHE"
stage="$(mktemp -d "$CACHE/initramfs-stage.XXXXXX")"
tmp_out=""
cleanup() {
    rm -rf "$stage"
    if [[ -n "$tmp_out" ]]; then rm -f "$tmp_out"; fi
}
trap cleanup EXIT

log "building base initramfs (kernel $RELEASE; modules: ${VM_MODULES}; tools: ${!tool_path[*]})"
vm_skeleton "$stage"
mkdir -p "$stage"/{dev,proc,sys,run,tmp,root,mnt,var}
ln -s ../run "$stage/var/run"
mknod -m 0600 "$stage/dev/console" c 5 1 2>/dev/null || true # the kernel's built-in cpio has it too

vm_install "$stage" "$BUSYBOX" /usr/bin/busybox
while read -r applet; do
    [[ -e "$stage/$applet" || -L "$stage/$applet" ]] && continue
    mkdir -p "$(dirname "$stage/$applet")"
    ln -s /usr/bin/busybox "$stage/$applet"
done < <("$BUSYBOX" --list-full)

for t in "${!tool_path[@]}"; do
    rm -f "$stage/usr/bin/$t" "$stage/usr/sbin/$t" # busybox's applet, if it has one
    vm_install "$stage" "${tool_path[$t]}" "/usr/bin/$t"
done

install -m 0755 "$HERE/init" "$stage/init"
cat >"$stage/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$stage/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
EOF
printf '127.0.0.1\tlocalhost\n::1\tlocalhost\n' >"$stage/etc/hosts"

: >"$stage/etc/netkit-vm/modules"
for rel in "${order[@]}"; do
    dest="/lib/modules/$RELEASE/${rel%.xz}"
    mkdir -p "$(dirname "$stage$dest")"
    case "$rel" in
    *.ko.xz) xz -dc "$MODULES_DIR/$rel" >"$stage$dest" ;;
    *.ko) cp "$MODULES_DIR/$rel" "$stage$dest" ;;
    *) die "module $rel: unsupported compression (expected .ko or .ko.xz)" ;;
    esac
    echo "$dest" >>"$stage/etc/netkit-vm/modules"
done
log "module load order: $(for rel in "${order[@]}"; do m="${rel##*/}"; printf '%s ' "${m%%.ko*}"; done)"

tmp_out="$(mktemp "$CACHE/initramfs.XXXXXX")"
vm_cpio "$stage" "$tmp_out"
mv "$tmp_out" "$out"
tmp_out=""
# Drop archives of older inputs (not the ones built within the hour: a parallel run may be
# about to copy one).
find "$CACHE" -maxdepth 1 -name 'initramfs-*.cpio' ! -name "$(basename "$out")" -mmin +60 -delete
log "built $out ($(du -h "$out" | cut -f1)) in $(vm_elapsed "$start" "$(vm_now)") s"
echo "$out"
