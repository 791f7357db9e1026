#!/usr/bin/env bash
# The netkit-cni agent image without Docker: the same layout as the Dockerfile's image
# (/usr/local/bin/netkit-agent; the binaries the agent installs on the node in
# /opt/netkit/cni-bin: netkit-cni and Debian's portmap), from binaries already built on
# this machine, as an OCI archive that `ctr -n k8s.io images import` takes.
#   hack/cluster/image.sh OUT_TAR [NAME:TAG]
# Binaries from $NETKIT_RELEASE_DIR (default target/dist: hack/release.sh first, which
# builds the plugin static); NAME:TAG defaults to netkit-cni/agent:dev, what manifests/ runs.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
source "$HERE/lib-image.sh"

OUT="${1:?usage: image.sh OUT_TAR [NAME:TAG]}"
NAME="${2:-netkit-cni/agent:dev}"
BIN="${NETKIT_RELEASE_DIR:-$REPO/target/dist}"
PORTMAP="${PORTMAP:-/usr/lib/cni/portmap}"

die() { echo "image.sh: $*" >&2; exit 1; }
for f in "$BIN/netkit-agent" "$BIN/netkit-cni"; do
    [ -x "$f" ] || die "$f is missing: hack/release.sh builds it"
done
[ -x "$PORTMAP" ] || die "$PORTMAP is missing: apt-get install containernetworking-plugins"

ROOTFS="$(mktemp -d)"
trap 'rm -rf "$ROOTFS"' EXIT

# The agent and the shared libraries it loads (glibc's loader among them), at their
# paths on this machine; the rootfs holds nothing else the agent could run.
install -D -m 0755 "$BIN/netkit-agent" "$ROOTFS/usr/local/bin/netkit-agent"
for lib in $(ldd "$BIN/netkit-agent" | grep -oE '/[^ ]+' | sort -u); do
    install -D -m 0755 "$(readlink -f "$lib")" "$ROOTFS$lib"
done
# What the agent installs on the node. They run there, not here: only the files.
install -D -m 0755 "$BIN/netkit-cni" "$ROOTFS/opt/netkit/cni-bin/netkit-cni"
install -D -m 0755 "$PORTMAP" "$ROOTFS/opt/netkit/cni-bin/portmap"
# CA roots, for a --kubeconfig whose server has a public certificate (in a cluster the
# service account's CA is used).
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
fi
# A shell and the basic tools, as the Dockerfile's debian-slim image has, for
# `kubectl exec` (the cluster checks list the node's links and pins through it).
install -D -m 0755 /bin/busybox "$ROOTFS/bin/busybox"
for applet in sh ls cat grep; do ln -s busybox "$ROOTFS/bin/$applet"; done
# Mount points and a scratch dir; the runtime creates the rest.
mkdir -p "$ROOTFS"/{etc,proc,sys,dev,run,tmp,var/lib}
chmod 1777 "$ROOTFS/tmp"

# The Dockerfile's entry point and default arguments: the DaemonSet names both anyway.
oci_image "$NAME" "$ROOTFS" '["/usr/local/bin/netkit-agent"]' "$OUT" \
    '["run","--kubernetes","--metrics-addr=127.0.0.1:9964","--install-cni-bin-from=/opt/netkit/cni-bin","--install-cni-conf"]'
