//! vm tier: boots a kernel with `CONFIG_NETKIT=y` under qemu (`hack/vm/run.sh`) and runs the
//! `vm_guest` test binary inside it.
//!
//! The guest binary comes from `NETKIT_VM_GUEST_BIN` (set by `hack/test.sh`; a relative path
//! is taken from the workspace root if it is not found from `tests/`); without it this
//! test asks cargo to build `--test vm_guest` and takes the executable cargo reports. The
//! project binaries found in `NETKIT_BIN_DIR` (else `target/debug`) go along into the guest's
//! `/opt/netkit/bin`, which is the guest's `NETKIT_BIN_DIR`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failure is reported by the panic"
)]

use std::path::{Path, PathBuf};
use std::process::Command;

use netkit_tests::bins::{bin_dir, workspace_root};
use netkit_tests::cmd::{describe, output};
use netkit_tests::vm::run_in_vm;

/// Printed by every `vm_guest` test that finds itself outside the VM.
const GUEST_SKIP_LINE: &str = "skip: not inside the netkit VM";

/// The `vm_guest` test executable: `NETKIT_VM_GUEST_BIN`, else built by cargo.
fn guest_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("NETKIT_VM_GUEST_BIN") {
        let mut path = PathBuf::from(path);
        // cargo runs tests in the package directory; a relative path is more likely meant
        // from the workspace root.
        if path.is_relative() && !path.is_file() {
            path = workspace_root().join(path);
        }
        assert!(
            path.is_file(),
            "NETKIT_VM_GUEST_BIN={} is not a file",
            path.display()
        );
        return path;
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root()).args([
        "test",
        "-p",
        "netkit-tests",
        "--test",
        "vm_guest",
        "--no-run",
        "--message-format=json",
    ]);
    let out = output(&mut cmd);
    assert!(out.status.success(), "{}", describe(&cmd, &out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|msg| msg["reason"] == "compiler-artifact" && msg["target"]["name"] == "vm_guest")
        .find_map(|msg| msg["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| {
            panic!(
                "cargo reported no vm_guest executable\n{}",
                describe(&cmd, &out)
            )
        })
}

/// The project's binaries that exist, to ship into the guest.
fn project_binaries() -> Vec<PathBuf> {
    ["netkit-cni", "netkit-agent"]
        .iter()
        .map(|name| bin_dir().join(name))
        .filter(|path| {
            let present = path.is_file();
            if !present {
                println!("vm: {} not built; not in the guest", path.display());
            }
            present
        })
        .collect()
}

/// The number of passed tests in libtest's "test result: ok. N passed; ..." line.
fn passed_count(console: &str) -> Option<u32> {
    console.lines().find_map(|line| {
        line.trim()
            .strip_prefix("test result: ok. ")?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

#[test]
fn guest_suite_passes_in_netkit_vm() {
    let guest = guest_binary();
    let mut bins = vec![guest.clone()];
    bins.extend(project_binaries());
    let bin_refs: Vec<&Path> = bins.iter().map(PathBuf::as_path).collect();
    let name = guest
        .file_name()
        .and_then(|n| n.to_str())
        .expect("guest binary has a UTF-8 file name");

    println!("vm: running {} in the VM", guest.display());
    let out = run_in_vm(&bin_refs, &[name, "--test-threads=1", "--nocapture"]);

    assert_eq!(
        out.status, 0,
        "the guest test binary failed in the VM (output above)"
    );
    assert!(
        !out.stdout.contains(GUEST_SKIP_LINE),
        "guest tests skipped: NETKIT_VM_GUEST did not reach them"
    );
    let passed = passed_count(&out.stdout)
        .unwrap_or_else(|| panic!("no 'test result: ok.' line from the guest"));
    assert!(passed > 0, "the guest ran no tests");
}
