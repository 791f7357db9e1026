#!/usr/bin/env bash
# Build the container images the cluster tier imports into each node's containerd, as
# OCI archives, without Docker or a registry: the netkit-cni agent image (image.sh), the
# pause image, CoreDNS, and the images the upstream network tests ask for, under the
# names they ask for. Everything in them is built here: the Go binaries from build.sh,
# the tools the tests exec copied from this machine's Debian packages with their shared
# libraries.
#   hack/cluster/images.sh OUT_DIR
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$CLUSTER_DIR/lib-image.sh"

OUT="${1:?usage: images.sh OUT_DIR}"
BIN="$CLUSTER_BIN"
[ -f "$BIN/.complete" ] || die "components not built: run hack/cluster/build.sh"
mkdir -p "$OUT"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# Copy a dynamically linked host binary and every library it loads into ROOTFS, at the
# same paths.
add_host_binary() { # rootfs path
    local rootfs="$1" bin="$2" lib
    [ -x "$bin" ] || die "$bin is missing (hack/setup.sh installs it)"
    install -D -m 0755 "$bin" "$rootfs$bin"
    for lib in $(ldd "$bin" 2>/dev/null | grep -oE '/[^ ]+' | sort -u); do
        [ -e "$rootfs$lib" ] || install -D -m 0755 "$(readlink -f "$lib")" "$rootfs$lib"
    done
}

# busybox's applets as /bin/*: the shell and the coreutils the tests' scripts use.
add_busybox() { # rootfs
    local rootfs="$1" applet
    install -D -m 0755 /bin/busybox "$rootfs/bin/busybox"
    for applet in $(/bin/busybox --list); do
        [ -e "$rootfs/bin/$applet" ] || ln -s busybox "$rootfs/bin/$applet"
    done
    mkdir -p "$rootfs"/{etc,tmp,proc,sys,dev,usr/bin,usr/sbin,root}
    chmod 1777 "$rootfs/tmp"
    echo "root:x:0:0:root:/root:/bin/sh" >"$rootfs/etc/passwd"
    echo "root:x:0:" >"$rootfs/etc/group"
    printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
}

# The tools the network tests exec in agnhost and the DNS prober images: curl, dig,
# netcat-openbsd's nc (the flags they pass, -u among them, are its), getent, ip. The
# shell is dash, as /bin/sh: Debian's static busybox sh runs its own applets ahead of
# PATH, so `nc` in a test's script would be busybox's, which has no -u.
add_network_tools() { # rootfs
    local rootfs="$1" tool real
    for tool in /usr/bin/curl /usr/bin/dig /usr/bin/nslookup /usr/bin/host /bin/nc.openbsd \
        /usr/bin/getent /bin/ip /usr/bin/bash /usr/bin/dash; do
        real="$(readlink -f "$tool")"
        add_host_binary "$rootfs" "$real"
        # The name the scripts use, first on PATH (/usr/bin before /bin, where busybox's
        # applet of the same name may be).
        [ "$(basename "$tool")" = "$(basename "$real")" ] || ln -sf "$real" "$rootfs/usr/bin/$(basename "$tool")"
    done
    ln -sf /usr/bin/nc.openbsd "$rootfs/usr/bin/nc"
    rm -f "$rootfs/bin/nc" "$rootfs/bin/ip" "$rootfs/bin/sh" "$rootfs/bin/bash"
    ln -s /usr/bin/dash "$rootfs/bin/sh"
    ln -s /usr/bin/bash "$rootfs/bin/bash"
    # glibc's dig/getent load NSS modules at run time: files and dns are in libc itself
    # (glibc >= 2.34), nothing more to copy.
}

log "building images into $OUT"

r="$WORK/pause"; install -D -m 0755 "$BIN/pause" "$r/pause"
oci_image "$PAUSE_IMAGE" "$r" '["/pause"]' "$OUT/pause.tar"

r="$WORK/coredns"; install -D -m 0755 "$BIN/coredns" "$r/coredns"
oci_image "$COREDNS_IMAGE" "$r" '["/coredns"]' "$OUT/coredns.tar"

r="$WORK/busybox"; add_busybox "$r"
oci_image "$BUSYBOX_IMAGE" "$r" '["/bin/sh"]' "$OUT/busybox.tar"

# agnhost: the same content as the upstream image (its Dockerfile in the Kubernetes
# module): these tools, /agnhost (and agnhost-2), the porter's TLS key pair in the
# working directory, CoreDNS at /coredns, /uploads, the user and groups the security
# context tests look for; entry point /agnhost, default command `pause`.
K8S_SRC="$GOMODCACHE/k8s.io/kubernetes@$K8S_VERSION"
r="$WORK/agnhost"; add_busybox "$r"; add_network_tools "$r"
install -D -m 0755 "$BIN/agnhost" "$r/agnhost"
ln -s agnhost "$r/agnhost-2"
install -m 0644 "$K8S_SRC/test/images/agnhost/porter/localhost.crt" "$K8S_SRC/test/images/agnhost/porter/localhost.key" "$r/"
install -m 0755 "$BIN/coredns" "$r/coredns"
mkdir -p "$r/uploads"
echo "user-defined-in-image:x:1000:1000::/home/user-defined-in-image:/bin/sh" >>"$r/etc/passwd"
printf 'user-defined-in-image:x:1000:\ngroup-defined-in-image:x:50000:user-defined-in-image\n' >>"$r/etc/group"
oci_image "$AGNHOST_IMAGE" "$r" '["/agnhost"]' "$OUT/agnhost.tar" '["pause"]'

# The DNS tests' second prober ("jessie"): dig and getent, run from sh.
r="$WORK/dnsutils"; add_busybox "$r"; add_network_tools "$r"
oci_image "$DNSUTILS_IMAGE" "$r" '["/bin/sh"]' "$OUT/dnsutils.tar"

"$CLUSTER_DIR/image.sh" "$OUT/agent.tar"
ls -la "$OUT" >&2
