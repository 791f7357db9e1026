# Container images without Docker (sourced, not run): an OCI image archive made with
# tar, gzip and sha256sum from a root filesystem directory, in the layout
# `ctr images import` reads (oci-layout, index.json, blobs/sha256/*).
#
#   oci_image NAME:TAG ROOTFS_DIR ENTRYPOINT_JSON OUT_TAR [CMD_JSON]
#
# One layer holding ROOTFS_DIR exactly (owner root, timestamps zeroed, names sorted: the
# same tree gives the same image digest). NAME is normalised as the CRI does
# (`pause:3.10` -> docker.io/library/pause:3.10, `netkit-cni/agent:dev` ->
# docker.io/netkit-cni/agent:dev), so a pod naming the image the short way finds it.

# The full reference containerd records, from a Docker-style short one.
oci_normalise_name() { # NAME[:TAG]
    local name="$1" first="${1%%/*}"
    case "$name" in
        */*) case "$first" in
                 *.*|*:*|localhost) ;;
                 *) name="docker.io/$name" ;;
             esac ;;
        *) name="docker.io/library/$name" ;;
    esac
    # No tag (a ':' after the last '/'): latest, as docker and the CRI assume.
    case "${name##*/}" in *:*|*@*) ;; *) name="$name:latest" ;; esac
    printf '%s\n' "$name"
}

oci_arch() {
    case "$(uname -m)" in
        x86_64) echo amd64 ;;
        aarch64) echo arm64 ;;
        *) uname -m ;;
    esac
}

# Move FILE into LAYOUT's blobs under its digest; prints "sha256:HEX SIZE".
oci_blob() { # layout file
    local layout="$1" file="$2" hex size
    hex="$(sha256sum "$file" | cut -d' ' -f1)"
    size="$(stat -c %s "$file")"
    mv "$file" "$layout/blobs/sha256/$hex"
    printf 'sha256:%s %s\n' "$hex" "$size"
}

oci_image() { # NAME:TAG ROOTFS_DIR ENTRYPOINT_JSON OUT_TAR [CMD_JSON]
    local ref rootfs="$2" entrypoint="$3" out="$4" cmd="${5:-null}"
    [ $# -ge 4 ] || { echo "usage: oci_image NAME:TAG ROOTFS_DIR ENTRYPOINT_JSON OUT_TAR [CMD_JSON]" >&2; return 2; }
    [ -d "$rootfs" ] || { echo "oci_image: $rootfs is not a directory" >&2; return 1; }
    ref="$(oci_normalise_name "$1")"
    local tag="${ref##*:}" arch layout
    arch="$(oci_arch)"
    layout="$(mktemp -d)"
    # Cleaned up on every way out of this function; the trap then removes itself (a
    # RETURN trap would otherwise stay set for every later function).
    # shellcheck disable=SC2064
    trap "rm -rf '$layout'; trap - RETURN" RETURN
    mkdir -p "$layout/blobs/sha256"

    # The layer: every entry of ROOTFS_DIR, relative names without "./", sorted, owned by
    # root, mtime 0; gzip without a name or time stamp in its header.
    local diff_id layer
    (cd "$rootfs" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort) \
        | tar -C "$rootfs" --no-recursion --numeric-owner --owner=0 --group=0 --mtime=@0 \
              -cf "$layout/layer.tar" -T - || return 1
    diff_id="sha256:$(sha256sum "$layout/layer.tar" | cut -d' ' -f1)"
    gzip -n -6 "$layout/layer.tar" || return 1
    layer="$(oci_blob "$layout" "$layout/layer.tar.gz")" || return 1

    # The image configuration: what runs, and the layer's uncompressed digest.
    local config
    cat >"$layout/config.json" <<EOF
{"architecture":"$arch","os":"linux","config":{"Entrypoint":$entrypoint,"Cmd":$cmd,"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["$diff_id"]},"history":[{"created_by":"hack/cluster/lib-image.sh oci_image"}]}
EOF
    config="$(oci_blob "$layout" "$layout/config.json")" || return 1

    cat >"$layout/manifest.json" <<EOF
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"${config% *}","size":${config#* }},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"${layer% *}","size":${layer#* }}]}
EOF
    local manifest
    manifest="$(oci_blob "$layout" "$layout/manifest.json")" || return 1

    # containerd names the image from io.containerd.image.name (the full reference);
    # other OCI tools read the tag from org.opencontainers.image.ref.name.
    cat >"$layout/index.json" <<EOF
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"${manifest% *}","size":${manifest#* },"platform":{"architecture":"$arch","os":"linux"},"annotations":{"io.containerd.image.name":"$ref","org.opencontainers.image.ref.name":"$tag"}}]}
EOF
    printf '{"imageLayoutVersion":"1.0.0"}\n' >"$layout/oci-layout"

    mkdir -p "$(dirname "$out")"
    tar -C "$layout" --numeric-owner --owner=0 --group=0 --mtime=@0 \
        -cf "$out.tmp" oci-layout index.json blobs || return 1
    mv "$out.tmp" "$out"
    echo "oci_image: $ref -> $out (${manifest% *})" >&2
}
