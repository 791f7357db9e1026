//! `netkit-agent`: the node daemon (`run`) and the CLI that talks to it.

mod cli;
mod datapath;
mod endpoint_name;
mod fault;
mod ipam;
mod metrics;
mod nodes;
mod registry;
mod routing;
mod server;
mod service;
mod shared;

use clap::Parser as _;

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
