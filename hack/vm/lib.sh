# Helpers shared by hack/vm/*.sh; sourced, not run. Expects `set -euo pipefail` and a
# `die` function in the caller.

# The guest's root is merged-/usr like Debian's: /bin, /sbin, /lib, /lib64 are symlinks into
# /usr, so a library copied to the path ldd prints lands where the guest's loader looks.
vm_skeleton() {
    local root="$1" d
    for d in usr/bin usr/sbin usr/lib usr/lib64 etc/netkit-vm opt/netkit/bin; do
        mkdir -p "$root/$d"
    done
    for d in bin sbin lib lib64; do
        [[ -L "$root/$d" ]] || ln -s "usr/$d" "$root/$d"
    done
}

# The shared libraries (and dynamic loader) an ELF file needs, one absolute path per line;
# nothing for static binaries and non-ELF files (scripts). Fails if a library is missing.
vm_elf_libs() {
    local file="$1" out
    [[ "$(head -c 4 "$file" | od -An -c | tr -d ' ')" == '177ELF' ]] || return 0
    if ! out="$(LC_ALL=C ldd "$file" 2>&1)"; then
        # ldd exits non-zero for static executables.
        [[ "$out" == *"not a dynamic executable"* || "$out" == *"statically linked"* ]] && return 0
        die "ldd $file failed: $out"
    fi
    if grep -q 'not found' <<<"$out"; then
        die "$file needs libraries missing on this machine:"$'\n'"$(grep 'not found' <<<"$out")"
    fi
    # "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" and "/lib64/ld-linux-x86-64.so.2 (0x...)"
    awk '$2 == "=>" && $3 ~ /^\// { print $3; next } $1 ~ /^\// { print $1 }' <<<"$out"
}

# vm_install ROOT SRC DEST: copy SRC to ROOT/DEST (replacing e.g. a busybox applet symlink)
# together with the libraries it needs, each at the path the host's loader found it.
vm_install() {
    local root="$1" src="$2" dest="$3" lib libs
    [[ -f "$src" ]] || die "cannot install $src into the VM: no such file"
    mkdir -p "$(dirname "$root/$dest")"
    rm -f "$root/$dest"
    cp -L "$src" "$root/$dest"
    chmod 0755 "$root/$dest"
    libs="$(vm_elf_libs "$src")" || exit 1
    for lib in $libs; do
        [[ -e "$root$lib" ]] && continue
        mkdir -p "$(dirname "$root$lib")"
        cp -L "$lib" "$root$lib"
    done
}

# vm_cpio DIR OUT: pack DIR as an uncompressed newc archive (owned by root).
vm_cpio() {
    local dir="$1" out="$2"
    (cd "$dir" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) >"$out" ||
        die "cpio failed packing $dir"
}

# Single-quote a word for /bin/sh (busybox ash).
vm_shell_quote() {
    local s="$1"
    printf "'%s'" "${s//\'/\'\\\'\'}"
}

vm_now() { date +%s.%N; }
vm_elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
