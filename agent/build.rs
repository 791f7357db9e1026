//! Builds the BPF object (`bpf-progs`, target bpfel-unknown-none, nightly + bpf-linker)
//! into OUT_DIR so `src/datapath/object.rs` can embed it.

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

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
        Toolchain::default(),
    )
}
