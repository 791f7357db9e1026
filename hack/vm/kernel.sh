#!/usr/bin/env bash
# Fetch and unpack the kernel the VM tier boots: Debian trixie's cloud kernel, which has
# CONFIG_NETKIT=y (netkit built in; veth, bridge, dummy, ... are signed .ko.xz modules).
#
# Idempotent: everything is cached under $NETKIT_CACHE/vm (machine-wide, default
# /var/cache/netkit-cni, outside the clone, so a fresh clone starts warm). The machine's own apt setup is
# untouched: `apt-get download` runs with a private sources.list, lists, cache and status.
#
# Pinned kernel package (bump both together):
#   linux-image-6.12.107+deb13-cloud-amd64  version 6.12.107-1
# If the mirror no longer carries the pinned version, the script falls back (loudly) to the
# package the linux-image-cloud-amd64 metapackage currently depends on.
#
# Outputs (also printed as KEY=VALUE lines on stdout, the last lines, for run.sh):
#   VM_KERNEL_VERSION  the kernel release (uname -r in the guest)
#   VM_KERNEL_PACKAGE  the package used, NAME=VERSION
#   VM_VMLINUZ         path of the kernel image
#   VM_MODULES_DIR     path of lib/modules/<release> (with a generated modules.dep)
set -euo pipefail

KERNEL_ABI="6.12.107+deb13-cloud-amd64"
KERNEL_PKG_VERSION="6.12.107-1"
SUITE="trixie"
MIRROR="http://deb.debian.org/debian"
KEYRING="/usr/share/keyrings/debian-archive-keyring.gpg"

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${NETKIT_VM_CACHE:-${NETKIT_CACHE:-/var/cache/netkit-cni}/vm}"
APT_DIR="$CACHE/apt"

log() { echo "kernel.sh: $*" >&2; }
die() {
    echo "kernel.sh: error: $*" >&2
    exit 1
}

for tool in apt-get apt-cache dpkg-deb depmod flock; do
    command -v "$tool" >/dev/null || die "'$tool' not found in PATH (needed to fetch/unpack the kernel; apt install apt dpkg kmod util-linux)"
done
[[ -r "$KEYRING" ]] || die "$KEYRING missing (apt install debian-archive-keyring)"

mkdir -p "$CACHE"
# One kernel.sh at a time per cache (parallel VM tests share it).
exec 9>"$CACHE/kernel.lock"
flock 9
cleanup() { rm -rf "$CACHE"/download.*; }
trap cleanup EXIT

# Private apt configuration: nothing outside $APT_DIR is read or written.
# Usage: apt_private apt-get|apt-cache ARGS...
apt_private() {
    local tool="$1"
    shift
    "$tool" \
        -o Dir::Etc::SourceList="$APT_DIR/sources.list" \
        -o Dir::Etc::SourceParts=/dev/null \
        -o Dir::State::Lists="$APT_DIR/lists" \
        -o Dir::State::status=/dev/null \
        -o Dir::Cache="$APT_DIR/cache" \
        -o APT::Sandbox::User=root \
        -o Debug::NoLocking=1 \
        "$@"
}

apt_ready=0
apt_update() {
    ((apt_ready)) && return 0
    mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial"
    echo "deb [signed-by=$KEYRING] $MIRROR $SUITE main" >"$APT_DIR/sources.list"
    log "updating private package lists for $SUITE ($MIRROR) in $APT_DIR"
    apt_private apt-get -qq update >&2 || die "apt-get update of the private $SUITE lists failed (network? mirror $MIRROR)"
    apt_ready=1
}

# unpacked_ok ABI VERSION: the tree for that package version is unpacked and complete.
unpacked_ok() {
    local root="$CACHE/kernel-$1"
    [[ -f "$root/.complete" && "$(cat "$root/.complete")" == "$2" &&
        -f "$root/boot/vmlinuz-$1" && -f "$root/usr/lib/modules/$1/modules.dep" ]]
}

deb_path() { echo "$CACHE/${1}_${2}_amd64.deb"; }

# download PACKAGE VERSION: fetch the .deb into $CACHE unless it is there (the lists must be
# up to date: apt_update); prints its path.
download() {
    local pkg="$1" ver="$2" deb dir
    deb="$(deb_path "$pkg" "$ver")"
    if [[ -s "$deb" ]]; then
        log "using cached $deb"
    else
        dir="$(mktemp -d "$CACHE/download.XXXXXX")"
        if ! (cd "$dir" && apt_private apt-get -q download "$pkg=$ver" >&2); then
            rm -rf "$dir"
            return 1
        fi
        mv "$dir"/*.deb "$deb"
        rm -rf "$dir"
    fi
    echo "$deb"
}

# unpack DEB ABI VERSION: extract the kernel and its modules, generate modules.dep.
unpack() {
    local deb="$1" abi="$2" ver="$3" root="$CACHE/kernel-$2"
    log "unpacking $(basename "$deb") into $root"
    rm -rf "$root"
    mkdir -p "$root"
    dpkg-deb -x "$deb" "$root" || die "dpkg-deb -x $deb failed"
    [[ -f "$root/boot/vmlinuz-$abi" ]] || die "package $deb has no boot/vmlinuz-$abi"
    [[ -d "$root/usr/lib/modules/$abi" ]] || die "package $deb has no usr/lib/modules/$abi"
    # The package ships no modules.dep (its postinst runs depmod): make one. depmod -b takes
    # the prefix holding lib/modules, which is <root>/usr in this merged-/usr package.
    log "generating modules.dep (depmod -b $root/usr $abi)"
    depmod -b "$root/usr" "$abi" || die "depmod failed for $root/usr/lib/modules/$abi"
    [[ -s "$root/usr/lib/modules/$abi/modules.dep" ]] || die "depmod produced no modules.dep in $root/usr/lib/modules/$abi"
    echo "$ver" >"$root/.complete"
}

abi="$KERNEL_ABI"
ver="$KERNEL_PKG_VERSION"
log "pinned kernel: linux-image-$abi version $ver"

if unpacked_ok "$abi" "$ver"; then
    log "using cached unpacked kernel $CACHE/kernel-$abi"
else
    [[ -s "$(deb_path "linux-image-$abi" "$ver")" ]] || apt_update
    if ! deb="$(download "linux-image-$abi" "$ver")"; then
        # The mirror dropped the pinned version: take what the metapackage points at now.
        meta_dep="$(apt_private apt-cache -qq --no-all-versions show linux-image-cloud-amd64 |
            sed -n 's/^Depends: *//p' | tr ',' '\n' |
            sed -n 's/^ *\(linux-image-[0-9][^ (]*\).*/\1/p' | awk 'NR == 1')" || true
        [[ -n "$meta_dep" ]] ||
            die "pinned linux-image-$abi=$ver is not on $MIRROR ($SUITE), and the kernel linux-image-cloud-amd64 depends on could not be determined"
        new_ver="$(apt_private apt-cache -qq --no-all-versions show "$meta_dep" |
            sed -n 's/^Version: *//p' | awk 'NR == 1')" || true
        [[ -n "$new_ver" ]] || die "cannot determine the version of $meta_dep"
        {
            echo "=================================================================="
            echo "kernel.sh: WARNING: the pinned kernel linux-image-$abi $ver"
            echo "kernel.sh: WARNING: is not on $MIRROR ($SUITE) any more."
            echo "kernel.sh: WARNING: FALLING BACK to $meta_dep $new_ver"
            echo "kernel.sh: WARNING: (what linux-image-cloud-amd64 depends on)."
            echo "kernel.sh: WARNING: Update KERNEL_ABI/KERNEL_PKG_VERSION in hack/vm/kernel.sh."
            echo "=================================================================="
        } >&2
        abi="${meta_dep#linux-image-}"
        ver="$new_ver"
        if ! unpacked_ok "$abi" "$ver"; then
            deb="$(download "$meta_dep" "$ver")" || die "apt-get download $meta_dep=$ver failed"
        fi
    fi
    unpacked_ok "$abi" "$ver" || unpack "$deb" "$abi" "$ver"
fi

root="$CACHE/kernel-$abi"
log "kernel ready: linux-image-$abi $ver: $root/boot/vmlinuz-$abi"
echo "VM_KERNEL_VERSION=$abi"
echo "VM_KERNEL_PACKAGE=linux-image-$abi=$ver"
echo "VM_VMLINUZ=$root/boot/vmlinuz-$abi"
echo "VM_MODULES_DIR=$root/usr/lib/modules/$abi"
