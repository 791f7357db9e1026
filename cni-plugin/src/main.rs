//! `netkit-cni`: connects the library to the process's environment, stdin, stdout and
//! exit status; everything else lives in the library.

use std::io::Write as _;
use std::process::ExitCode;

mod arena;

#[global_allocator]
static ALLOCATOR: arena::BumpArena = arena::BumpArena;

fn main() -> ExitCode {
    let outcome = netkit_cni::run(|name| std::env::var_os(name), &mut std::io::stdin().lock());
    if let Some(doc) = &outcome.stdout {
        let mut stdout = std::io::stdout().lock();
        if writeln!(stdout, "{doc}")
            .and_then(|()| stdout.flush())
            .is_err()
        {
            return ExitCode::FAILURE;
        }
    }
    if outcome.success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
