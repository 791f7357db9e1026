//! Where the project's binaries are: `NETKIT_BIN_DIR` (set by `hack/test.sh`, and inside
//! the VM), else the workspace's `target/debug`.

use std::path::PathBuf;

/// Directory holding `netkit-cni` and `netkit-agent`.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("NETKIT_BIN_DIR") {
        return PathBuf::from(dir);
    }
    workspace_root().join("target").join("debug")
}

/// The workspace root (parent of this crate).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests crate has a parent directory")
        .to_path_buf()
}

/// Path of a project binary, checked to exist so a missing build fails clearly.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} not found: build it first (hack/test.sh does `cargo build --bins`) or set NETKIT_BIN_DIR",
        path.display()
    );
    path
}

pub fn agent() -> PathBuf {
    bin("netkit-agent")
}

pub fn cni() -> PathBuf {
    bin("netkit-cni")
}
