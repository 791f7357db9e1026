//! Builds the BPF object (`bpf-progs`, target bpfel-unknown-none, nightly + bpf-linker)
//! into OUT_DIR so `src/datapath/object.rs` can embed it.

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

/// The nightly the BPF programs are built with; `hack/setup.sh` installs it (with
/// rust-src) and builds bpf-linker against the same LLVM major. Keep the two in step:
/// a newer nightly may carry an LLVM that bpf-linker does not support.
const BPF_TOOLCHAIN: &str = "nightly-2026-05-20";

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let root_dir = std::path::Path::new(&manifest_dir)
        .parent()
        .ok_or_else(|| anyhow!("agent crate has no parent directory"))?
        .join("bpf-progs");
    let root_dir = root_dir
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", root_dir.display()))?;
    aya_build::build_ebpf(
        [Package {
            name: "netkit-bpf",
            root_dir,
            ..Default::default()
        }],
        Toolchain::Custom(BPF_TOOLCHAIN),
    )
}
