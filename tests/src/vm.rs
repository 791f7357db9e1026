//! The VM rig: runs a command inside a qemu VM booting a kernel with `CONFIG_NETKIT=y`
//! (Debian trixie's cloud kernel), through `hack/vm/run.sh`.
//!
//! The guest console (the command's stdout and stderr) is echoed line by line as it arrives —
//! through the test harness's capture, so it shows with `--nocapture` or when the test fails —
//! and returned in [`VmOutput::stdout`].

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::bins::workspace_root;

/// What a command run in the VM did.
#[derive(Debug)]
pub struct VmOutput {
    /// The guest command's exit status.
    pub status: i32,
    /// The guest console: the command's stdout and stderr (plus kernel warnings), `\r` removed.
    pub stdout: String,
    /// `hack/vm/run.sh`'s own messages (kernel/initramfs preparation, boot time).
    pub stderr: String,
}

impl VmOutput {
    pub fn success(&self) -> bool {
        self.status == 0
    }
}

/// `hack/vm/run.sh` in this workspace.
pub fn run_script() -> PathBuf {
    workspace_root().join("hack").join("vm").join("run.sh")
}

/// Boot the VM with `bins` in the guest's `/opt/netkit/bin` (its `NETKIT_BIN_DIR`, first in
/// `PATH`) and run `command` there; see `hack/vm/run.sh`. Panics, with the output, if the VM
/// itself failed (no boot, guest setup failed, timeout): only the command's own failure is
/// returned as a status.
pub fn run_in_vm(bins: &[&Path], command: &[&str]) -> VmOutput {
    run_in_vm_with_env(bins, &[], command)
}

/// [`run_in_vm`] with extra environment variables for the guest command.
pub fn run_in_vm_with_env(bins: &[&Path], env: &[(&str, &str)], command: &[&str]) -> VmOutput {
    assert!(!command.is_empty(), "run_in_vm: empty command");
    let script = run_script();
    let status_dir = tempfile::tempdir().expect("temporary directory for the VM status file");
    let status_file = status_dir.path().join("status");

    let mut cmd = Command::new(&script);
    cmd.arg("--status-file").arg(&status_file);
    for bin in bins {
        assert!(bin.is_file(), "run_in_vm: {} is not a file", bin.display());
        cmd.arg("--bin").arg(bin);
    }
    for (name, value) in env {
        cmd.arg("--env").arg(format!("{name}={value}"));
    }
    cmd.arg("--").args(command);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());

    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", script.display()));
    let child_stderr = child.stderr.take().expect("piped stderr");
    let stderr_thread = std::thread::spawn(move || echo_lines(child_stderr, true));
    let stdout = echo_lines(child.stdout.take().expect("piped stdout"), false);
    let stderr = stderr_thread.join().expect("stderr reader thread");
    let exit = child
        .wait()
        .unwrap_or_else(|e| panic!("waiting for {}: {e}", script.display()));

    let status = match std::fs::read_to_string(&status_file) {
        Ok(text) => text
            .trim()
            .parse::<i32>()
            .unwrap_or_else(|e| panic!("bad status file {}: {text:?}: {e}", status_file.display())),
        Err(_) => panic!(
            "the VM failed ({} exited with {exit}) before the command finished\n\
             --- console\n{stdout}\n--- run.sh\n{stderr}",
            script.display()
        ),
    };
    assert_eq!(
        exit.code(),
        Some(status),
        "run.sh's exit status disagrees with the guest status it recorded\n--- run.sh\n{stderr}"
    );
    VmOutput {
        status,
        stdout,
        stderr,
    }
}

/// Copy `reader` line by line to the test's stdout or stderr (both captured by the test
/// harness) and return everything read.
fn echo_lines(reader: impl Read, to_stderr: bool) -> String {
    let mut all = String::new();
    let mut reader = BufReader::new(reader);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                if to_stderr {
                    eprint!("{text}");
                } else {
                    print!("{text}");
                }
                all.push_str(&text);
            }
            Err(e) => panic!("reading hack/vm/run.sh output: {e}"),
        }
    }
    if !all.is_empty() && !all.ends_with('\n') {
        if to_stderr {
            eprintln!();
        } else {
            println!();
        }
    }
    all
}
