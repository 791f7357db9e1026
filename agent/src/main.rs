//! `netkit-agent`: the node daemon (`run`) and the CLI that talks to it.

use clap::Parser as _;
use netkit_agent::cli;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    match cli::dispatch(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("netkit-agent: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
