#!/usr/bin/env bash
# Make a fresh Debian 12 machine (as root) ready to build, run and test netkit-cni.
# Idempotent: every step checks before it acts, so re-running is cheap.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Pinned so a fresh machine builds the same linker we test with.
BPF_LINKER_VERSION="0.13.0"
LLVM_MAJOR="22"
# Keep in step with BPF_TOOLCHAIN in agent/build.rs.
BPF_NIGHTLY="nightly-2026-05-20"
# The fuzz tier's runner (hack/fuzz.sh names the same version).
CARGO_FUZZ_VERSION="0.13.2"

APT_PACKAGES=(
    # build
    build-essential pkg-config "llvm-${LLVM_MAJOR}-dev" "libpolly-${LLVM_MAJOR}-dev" libzstd-dev zlib1g-dev
    # network tools the tests and the demo drive
    iproute2 iputils-ping iperf3 kmod iptables nftables bc sockperf wrk
    # containerd tier
    containerd runc containernetworking-plugins
    # VM tier
    qemu-system-x86 busybox-static cpio xz-utils zstd
    curl ca-certificates
    # cluster tier: the rig (nsenter/unshare, certificates), what kube-proxy and the
    # kubelet call, and the tools the test images carry (dig, nc, getent, curl)
    util-linux openssl conntrack socat ethtool bind9-dnsutils netcat-openbsd
)

step() { printf '\n==> %s\n' "$*"; }
die() { printf 'setup: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (it installs packages and later tests create network namespaces)"
[ -r /etc/debian_version ] || die "this script expects Debian 12 (bookworm)"
command -v cargo >/dev/null || die "cargo not found: install Rust with rustup (stable and nightly toolchains) first"
command -v rustup >/dev/null || die "rustup not found: the BPF build needs 'rustup run nightly'"

step "apt packages: ${APT_PACKAGES[*]}"
missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing: ${missing[*]}"
    # A third-party source that cannot be reached must not stop us: the packages we
    # need come from Debian's own archive, which the install below proves.
    apt-get update -q || echo "setup: apt-get update reported errors; continuing with the lists it fetched"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" \
        || die "apt-get install failed for: ${missing[*]} (llvm-${LLVM_MAJOR}-dev comes from bookworm-security)"
else
    echo "all present"
fi

step "Rust toolchains: stable for user space (and its musl target), pinned ${BPF_NIGHTLY} + rust-src for the BPF programs"
# The BPF build uses exactly this nightly (agent/build.rs names it): a newer nightly may
# carry an LLVM newer than the one bpf-linker is built against.
rustup toolchain list | grep -q "^${BPF_NIGHTLY}" || rustup toolchain install "${BPF_NIGHTLY}" --profile minimal \
    || die "rustup cannot install ${BPF_NIGHTLY}"
if ! rustup component list --toolchain "${BPF_NIGHTLY}" --installed | grep -q '^rust-src'; then
    rustup component add rust-src --toolchain "${BPF_NIGHTLY}" \
        || die "cannot add rust-src to ${BPF_NIGHTLY} (needed for -Z build-std=core on bpfel-unknown-none)"
fi
echo "nightly: $(rustc +"${BPF_NIGHTLY}" --version)"
# The plugin ships statically linked against musl (hack/release.sh says why).
MUSL_TARGET="$(uname -m)-unknown-linux-musl"
rustup target list --installed | grep -qx "${MUSL_TARGET}" || rustup target add "${MUSL_TARGET}" \
    || die "rustup cannot add the ${MUSL_TARGET} target (the static plugin is built for it)"
echo "static plugin target: ${MUSL_TARGET}"

step "bpf-linker ${BPF_LINKER_VERSION} against LLVM ${LLVM_MAJOR}"
if bpf-linker --version 2>/dev/null | grep -q "${BPF_LINKER_VERSION}"; then
    echo "present: $(bpf-linker --version)"
else
    LLVM_PREFIX="/usr/lib/llvm-${LLVM_MAJOR}" cargo +"${BPF_NIGHTLY}" install bpf-linker \
        --version "${BPF_LINKER_VERSION}" --no-default-features --features "llvm-${LLVM_MAJOR}" \
        || die "building bpf-linker failed (needs llvm-${LLVM_MAJOR}-dev)"
fi

step "VM kernel with CONFIG_NETKIT=y (Debian trixie cloud kernel)"
"${REPO}/hack/vm/kernel.sh"

step "bpffs"
if ! mount | grep -q ' /sys/fs/bpf type bpf'; then
    mount -t bpf bpf /sys/fs/bpf && echo "mounted bpffs at /sys/fs/bpf" \
        || die "cannot mount bpffs at /sys/fs/bpf"
else
    echo "mounted"
fi

step "cargo-fuzz ${CARGO_FUZZ_VERSION} (the fuzz tier)"
if cargo fuzz --version 2>/dev/null | grep -q "${CARGO_FUZZ_VERSION}"; then
    echo "present: $(cargo fuzz --version)"
else
    cargo install cargo-fuzz --version "${CARGO_FUZZ_VERSION}" --locked \
        || die "installing cargo-fuzz ${CARGO_FUZZ_VERSION} failed"
fi

step "Go toolchain for the cluster tier (builds the pinned Kubernetes components)"
if command -v go >/dev/null; then
    echo "present: $(go version)"
    # Module downloads only (seconds); the build itself runs in the cluster tier, into
    # the machine-wide cache hack/cluster/build.sh keys on the pinned versions.
    "${REPO}/hack/cluster/build.sh" --download-only
else
    echo "Go is not installed: the cluster tier (hack/test.sh cluster) will fail; every other tier works"
fi

step "setup complete"
