//! Running commands from tests: failures panic with the command line, status and both
//! output streams, so a broken rig explains itself.

use std::ffi::OsStr;
use std::process::{Command, Output};

/// Run `cmd`, panicking unless it exits 0. Returns its output.
pub fn run(cmd: &mut Command) -> Output {
    let out = output(cmd);
    assert!(out.status.success(), "{}", describe(cmd, &out));
    out
}

/// Run `cmd` and return its output whatever its exit status.
pub fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"))
}

/// Run a program with arguments, panicking unless it exits 0; returns stdout as text.
pub fn run_text<I, S>(program: &str, args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let out = run(Command::new(program).args(args));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A one-paragraph account of a finished command for panic messages.
pub fn describe(cmd: &Command, out: &Output) -> String {
    format!(
        "{cmd:?} exited with {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
