#!/usr/bin/env bash
# Boot the VM tier's kernel (Debian trixie cloud, CONFIG_NETKIT=y) under qemu and run one
# command in it.
#
#   hack/vm/run.sh [--bin FILE]... [--env NAME=VALUE]... [--status-file FILE] -- COMMAND [ARGS...]
#
#   --bin FILE          copy FILE (and its shared libraries) to /opt/netkit/bin in the guest;
#                       that directory is first in the guest's PATH and is its NETKIT_BIN_DIR
#   --env NAME=VALUE    set an environment variable for COMMAND (repeatable)
#   --status-file FILE  write the guest command's exit status to FILE, only if it ran to the
#                       end (lets a caller tell "the command exited 125" from "the VM failed")
#
# COMMAND runs as root in /tmp with NETKIT_VM_GUEST=1 and NETKIT_BIN_DIR=/opt/netkit/bin (plus
# RUST_BACKTRACE/RUST_LOG if set here); its stdin is /dev/null. The guest console (COMMAND's
# stdout and stderr, and kernel warnings) is streamed to this script's stdout; this script's own
# messages go to stderr.
#
# Exit status: COMMAND's exit status, or 125 if the VM did not boot, setup in the guest failed,
# qemu failed, or the run timed out.
#
# Knobs (environment):
#   NETKIT_VM_TIMEOUT     seconds before the VM is killed (default 600)
#   NETKIT_VM_MEM         guest memory (default 1G)
#   NETKIT_VM_SMP         guest CPUs (default 2)
#   NETKIT_VM_CPU         qemu -cpu (default max,-cx16,-la57; see below)
#   NETKIT_VM_ACCEL       qemu -accel (default tcg,thread=single; see below)
#   NETKIT_VM_APPEND      extra kernel command line
#   NETKIT_VM_KEEP_DEBUG  1: do not strip debug info from --bin files
#   NETKIT_VM_MODULES     modules loaded at boot (default in hack/vm/initramfs.sh)
#   NETKIT_VM_CACHE       cache directory (default $NETKIT_CACHE/vm, NETKIT_CACHE defaulting to
#                         /var/cache/netkit-cni: machine-wide, outside the clone)
set -euo pipefail

# Everything is in main, which bash parses completely before running it: editing this file
# while a VM runs does not break that run.
main() {
    HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
    REPO="$(cd "$HERE/../.." && pwd)"
    CACHE="${NETKIT_VM_CACHE:-${NETKIT_CACHE:-/var/cache/netkit-cni}/vm}"
    TIMEOUT="${NETKIT_VM_TIMEOUT:-600}"
    MEM="${NETKIT_VM_MEM:-1G}"
    SMP="${NETKIT_VM_SMP:-2}"
    # -cx16: with CMPXCHG16B, this qemu's (7.2) TCG corrupts the guest's SLUB per-cpu freelists
    # now and then (double fault / GP in __kmalloc within seconds of boot: 3 of 40 boots); without
    # it the kernel uses its fallback. -la57: 4-level paging, the common case, and cheaper to
    # emulate than 5-level.
    CPU="${NETKIT_VM_CPU:-max,-cx16,-la57}"
    # thread=single: both vCPUs on one host thread, round-robin. With multi-threaded TCG a
    # vCPU can run stale translated code while the kernel live-patches a static branch
    # (text_poke: int3, then the new bytes): seen as "Oops: int3" in netif_rx_internal
    # with the nop already in place, when ping's SO_TIMESTAMP flipped netstamp_needed
    # under cross-node traffic. Single-threaded TCG keeps code modification coherent.
    ACCEL="${NETKIT_VM_ACCEL:-tcg,thread=single}"
    VM_FAILED=125

    die() {
        echo "vm: error: $*" >&2
        exit "$VM_FAILED"
    }
    log() { echo "vm: $*" >&2; }
    # shellcheck source=hack/vm/lib.sh
    . "$HERE/lib.sh"

    usage() {
        sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
        exit 2
    }

    bins=()
    envs=()
    status_file=""
    while [[ $# -gt 0 ]]; do
        case "$1" in
        --bin)
            [[ $# -ge 2 ]] || usage
            bins+=("$2")
            shift 2
            ;;
        --env)
            [[ $# -ge 2 && "$2" == [A-Za-z_]*=* ]] || die "--env wants NAME=VALUE, got '${2:-}'"
            envs+=("$2")
            shift 2
            ;;
        --status-file)
            [[ $# -ge 2 ]] || usage
            status_file="$2"
            shift 2
            ;;
        --)
            shift
            break
            ;;
        -h | --help) usage ;;
        *) die "unknown argument '$1' (the command goes after --)" ;;
        esac
    done
    [[ $# -gt 0 ]] || usage
    [[ -z "$status_file" ]] || rm -f "$status_file"

    command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found (apt install qemu-system-x86)"
    command -v timeout >/dev/null || die "timeout not found (coreutils)"
    for b in "${bins[@]}"; do
        [[ -f "$b" ]] || die "--bin $b: no such file"
    done

    # ---- kernel and base initramfs (both cached)
    kernel_out="$("$HERE/kernel.sh")" || die "hack/vm/kernel.sh failed (see above)"
    VM_VMLINUZ="$(sed -n 's/^VM_VMLINUZ=//p' <<<"$kernel_out")"
    VM_MODULES_DIR="$(sed -n 's/^VM_MODULES_DIR=//p' <<<"$kernel_out")"
    VM_KERNEL_PACKAGE="$(sed -n 's/^VM_KERNEL_PACKAGE=//p' <<<"$kernel_out")"
    [[ -f "$VM_VMLINUZ" && -d "$VM_MODULES_DIR" ]] || die "hack/vm/kernel.sh gave no kernel/modules"

    build_start="$(vm_now)"
    base="$("$HERE/initramfs.sh" "$VM_MODULES_DIR" | tail -n1)" || die "hack/vm/initramfs.sh failed (see above)"
    [[ -s "$base" ]] || die "hack/vm/initramfs.sh gave no archive"

    # ---- per-run archive: binaries, command, env, nonce
    mkdir -p "$CACHE"
    work="$(mktemp -d "$CACHE/run.XXXXXX")"
    cleanup() { rm -rf "$work"; }
    trap cleanup EXIT
    stage="$work/root"
    vm_skeleton "$stage"

    # Debug builds are mostly DWARF (a 42 MB test binary is 7 MB without); copying it into the
    # guest costs boot time, so it is stripped unless NETKIT_VM_KEEP_DEBUG=1. Panic messages keep
    # their file:line; backtraces keep function names but lose line numbers.
    mkdir -p "$work/bin"
    for b in "${bins[@]}"; do
        src="$b"
        if [[ "${NETKIT_VM_KEEP_DEBUG:-0}" != 1 ]] && command -v objcopy >/dev/null &&
            [[ "$(head -c 4 "$b" | od -An -c | tr -d ' ')" == '177ELF' ]]; then
            src="$work/bin/$(basename "$b")"
            objcopy --strip-debug "$b" "$src" || die "objcopy --strip-debug $b failed"
        fi
        vm_install "$stage" "$src" "/opt/netkit/bin/$(basename "$b")" || die "cannot install $b"
    done
    rm -rf "$work/bin"

    nonce="$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    echo "$nonce" >"$stage/etc/netkit-vm/nonce"
    {
        echo "export NETKIT_VM_GUEST=1"
        echo "export NETKIT_BIN_DIR=/opt/netkit/bin"
        echo "export RUST_BACKTRACE=$(vm_shell_quote "${RUST_BACKTRACE:-1}")"
        [[ -z "${RUST_LOG:-}" ]] || echo "export RUST_LOG=$(vm_shell_quote "$RUST_LOG")"
        for kv in "${envs[@]}"; do
            echo "export ${kv%%=*}=$(vm_shell_quote "${kv#*=}")"
        done
    } >"$stage/etc/netkit-vm/env"
    {
        for word in "$@"; do
            printf '%s ' "$(vm_shell_quote "$word")"
        done
        echo
    } >"$stage/etc/netkit-vm/cmd"

    vm_cpio "$stage" "$work/run.cpio"
    cat "$base" "$work/run.cpio" >"$work/initrd.cpio"
    rm -f "$work/run.cpio"
    log "initramfs ready in $(vm_elapsed "$build_start" "$(vm_now)") s ($(du -h "$work/initrd.cpio" | cut -f1); kernel $VM_KERNEL_PACKAGE)"

    # ---- boot (the markers are matched anywhere in a line: the command's last output line may
    # lack its newline)
    append="console=ttyS0 quiet panic=-1 oops=panic mitigations=off ${NETKIT_VM_APPEND:-}"
    log "booting: $*"
    boot_start="$(vm_now)"
    set +e
    timeout --kill-after=10 "$TIMEOUT" \
        qemu-system-x86_64 \
        -machine q35 -accel "$ACCEL" -cpu "$CPU" -m "$MEM" -smp "$SMP" \
        -nodefaults -no-user-config -display none -serial stdio -no-reboot \
        -kernel "$VM_VMLINUZ" -initrd "$work/initrd.cpio" -append "$append" \
        </dev/null 2>"$work/qemu.err" |
        sed -u 's/\r$//' | tee "$work/console.log"
    qemu_status="${PIPESTATUS[0]}"
    set -e
    elapsed="$(vm_elapsed "$boot_start" "$(vm_now)")"

    if [[ -s "$work/qemu.err" ]]; then
        sed 's/^/vm: qemu: /' "$work/qemu.err" >&2
    fi
    if [[ "$qemu_status" -eq 124 || "$qemu_status" -eq 137 ]]; then
        die "timed out after ${TIMEOUT} s (NETKIT_VM_TIMEOUT); the guest output is above"
    fi
    if [[ "$qemu_status" -ne 0 ]]; then
        die "qemu-system-x86_64 exited with status $qemu_status after $elapsed s"
    fi
    if failed="$(grep -a -m1 -o "NETKIT-VM-INIT-FAILED-$nonce: .*" "$work/console.log")"; then
        die "guest setup failed: ${failed#*: }"
    fi
    marker="$(grep -a -m1 -o "NETKIT-VM-EXIT-$nonce: [0-9]*$" "$work/console.log" || true)"
    if [[ -z "$marker" ]]; then
        die "the VM stopped after $elapsed s without reporting the command's exit status (kernel panic or boot failure? the console output is above)"
    fi
    status="${marker##*: }"
    if [[ -n "$status_file" ]]; then
        echo "$status" >"$status_file"
    fi
    log "booted and ran in $elapsed s; guest command exited with status $status"
    exit "$status"
}

main "$@"
