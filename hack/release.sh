#!/usr/bin/env bash
# The two binaries a node runs, built the way we ship them, into one directory:
#   hack/release.sh [--debug] [--out DIR]        (default: release profile, target/dist)
#
# - netkit-agent: built for this machine's glibc. It runs in its image, which carries the
#   libraries it loads (hack/cluster/image.sh, the Dockerfile), or on the host it was
#   built for.
# - netkit-cni: statically linked against musl (target <arch>-unknown-linux-musl, which
#   hack/setup.sh installs). The plugin does not run in an image: the container runtime
#   of whatever distribution the node has execs it, so it must not depend on the host's
#   glibc. And the runtime execs it for every ADD, DEL and CHECK, so its start is on every
#   pod's critical path: without the dynamic loader and glibc's start-up (which asks the
#   CPU for its cache layout with CPUID, a VM exit per question on a virtual machine),
#   a call that does nothing took 0.5 ms instead of 1.3 ms on our development VM.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
die() { echo "release.sh: $*" >&2; exit 1; }

profile=release
out="$REPO/target/dist"
while [ $# -gt 0 ]; do
    case "$1" in
        --debug) profile=debug ;;
        --out) out="${2:?--out needs a directory}"; shift ;;
        *) die "unknown argument $1 (usage: hack/release.sh [--debug] [--out DIR])" ;;
    esac
    shift
done

MUSL="$(uname -m)-unknown-linux-musl"
if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx "$MUSL"; then
    die "the Rust target $MUSL is not installed (hack/setup.sh installs it: rustup target add $MUSL)"
fi

flags=()
[ "$profile" = release ] && flags+=(--release)
cd "$REPO"
cargo build "${flags[@]}" --bins -p netkit-agent
cargo build "${flags[@]}" --bins -p netkit-cni --target "$MUSL"

mkdir -p "$out"
install -m 0755 "target/$profile/netkit-agent" "$out/netkit-agent"
install -m 0755 "target/$MUSL/$profile/netkit-cni" "$out/netkit-cni"
# A plugin that still names a dynamic loader would fail on a host without that loader
# (or with an older glibc): refuse to hand one out.
if LC_ALL=C readelf -l "$out/netkit-cni" | grep -q 'INTERP'; then
    die "$out/netkit-cni is dynamically linked; expected a static musl binary"
fi
echo "release.sh: $out/netkit-agent and $out/netkit-cni (static, $MUSL), $profile profile" >&2
