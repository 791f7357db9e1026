//! Making sure the pin root is on a BPF filesystem. Our machines boot without one at
//! /sys/fs/bpf, so the agent mounts it there when the root lives under it.

use std::path::Path;

use super::{DatapathError, Result};

/// `BPF_FS_MAGIC` from include/uapi/linux/magic.h.
const BPF_FS_MAGIC: i64 = 0xcafe4a11;
const DEFAULT_BPFFS: &str = "/sys/fs/bpf";

fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type().0 == BPF_FS_MAGIC)
        .unwrap_or(false)
}

pub fn ensure_mounted(root: &Path) -> Result<()> {
    // The nearest existing ancestor decides which filesystem `root` will be created on.
    let existing = root
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    if is_bpffs(existing) {
        return Ok(());
    }
    let default = Path::new(DEFAULT_BPFFS);
    if !root.starts_with(default) {
        return Err(DatapathError::Bpffs(format!(
            "{} is not on a BPF filesystem; mount one there or use a root under {DEFAULT_BPFFS}",
            root.display()
        )));
    }
    tracing::info!("mounting bpffs at {DEFAULT_BPFFS}");
    nix::mount::mount(
        Some("bpf"),
        default,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        Some("mode=0700"),
    )
    .map_err(|e| DatapathError::Bpffs(format!("mount -t bpf bpf {DEFAULT_BPFFS}: {e}")))
}
