# syntax=docker/dockerfile:1
# The netkit-cni agent image, built from source:
#   docker build -t netkit-cni/agent:dev .
# The same layout as hack/cluster/image.sh makes without Docker: the agent in
# /usr/local/bin, and in /opt/netkit/cni-bin the binaries it installs on the node
# (netkit-cni and Debian's portmap, for hostPort). manifests/ runs it.

# Build: stable Rust for user space, the pinned nightly + rust-src + bpf-linker for the
# BPF programs, as hack/setup.sh installs them (keep the three versions in step with it
# and with BPF_TOOLCHAIN in agent/build.rs).
FROM rust:1.95-bookworm AS build
ARG BPF_NIGHTLY=nightly-2026-05-20
ARG BPF_LINKER_VERSION=0.13.0
ARG LLVM_MAJOR=22
# bpf-linker links against LLVM ${LLVM_MAJOR}; the builder's apt sources must carry it
# (on our machines Debian's do; elsewhere add LLVM's own Debian repository).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      "llvm-${LLVM_MAJOR}-dev" "libpolly-${LLVM_MAJOR}-dev" libzstd-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
RUN rustup toolchain install "${BPF_NIGHTLY}" --profile minimal --component rust-src \
 && rustup target add "$(uname -m)-unknown-linux-musl"
RUN LLVM_PREFIX="/usr/lib/llvm-${LLVM_MAJOR}" cargo +"${BPF_NIGHTLY}" install bpf-linker \
      --version "${BPF_LINKER_VERSION}" --no-default-features --features "llvm-${LLVM_MAJOR}"
WORKDIR /src
COPY . .
# The registry and target dirs are caches across builds; the binaries leave the cache
# in the same step. hack/release.sh builds them as we ship them: the plugin statically
# linked against musl.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    hack/release.sh --out /out

# portmap from Debian's reference plugins (only that one is shipped).
FROM debian:bookworm-slim AS plugins
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends containernetworking-plugins \
 && rm -rf /var/lib/apt/lists/*

FROM debian:bookworm-slim
# CA roots for a --kubeconfig whose server has a public certificate (in a cluster the
# service account's CA is used).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/netkit-agent /usr/local/bin/netkit-agent
# netkit-cni runs on the node, not in this image: it is static (musl), so it runs on
# whatever distribution the node has.
COPY --from=build /out/netkit-cni /opt/netkit/cni-bin/netkit-cni
COPY --from=plugins /usr/lib/cni/portmap /opt/netkit/cni-bin/portmap
ENTRYPOINT ["/usr/local/bin/netkit-agent"]
# What manifests/03-daemonset.yaml runs (it names the arguments itself too).
CMD ["run", "--kubernetes", "--metrics-addr=127.0.0.1:9964", "--install-cni-bin-from=/opt/netkit/cni-bin", "--install-cni-conf"]
