//! Command-line arguments (one struct per subcommand) and dispatch; each handler lives
//! in its own file.

mod client;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "netkit-agent",
    version,
    about = "netkit-cni node agent and its CLI"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent: load and pin the datapath, serve the CNI plugin.
    // Boxed: the run arguments dwarf the client ones (clippy::large_enum_variant).
    Run(Box<RunArgs>),
    /// Is the agent ready? Exit status 0 when it is.
    Status(ClientArgs),
    /// The endpoints the agent serves.
    Endpoints(ClientArgs),
    /// Datapath counters (packets per decision, summed over CPUs).
    Stats(ClientArgs),
}

#[derive(Args)]
pub struct RunArgs {
    /// Unix socket to serve (created 0600).
    #[arg(long, default_value = netkit_api::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Directory on a bpffs where maps and links are pinned.
    #[arg(long, default_value = "/sys/fs/bpf/netkit")]
    pub bpffs_root: PathBuf,
    /// Where the endpoint registry is kept.
    #[arg(long, default_value = "/var/lib/netkit-agent")]
    pub state_dir: PathBuf,
    /// Pod CIDR(s) for built-in IPAM; repeat for dual-stack.
    #[arg(long = "pod-cidr")]
    pub pod_cidrs: Vec<ipnetwork::IpNetwork>,
    /// Uplink device for the inbound fast path; default: the IPv4 default route's device.
    #[arg(long)]
    pub uplink: Option<String>,
    /// Do not attach to any uplink.
    #[arg(long, conflicts_with = "uplink")]
    pub no_uplink: bool,
    /// How flows the host stack translated are kept off the fast path: `conntrack` asks
    /// the kernel's conntrack per packet (falling back to `stack-only`, with a warning,
    /// where it cannot be asked); `stack-only` sends every pod-bound TCP/UDP packet
    /// through the host stack.
    #[arg(long, value_enum, default_value_t = crate::datapath::TranslationMode::Conntrack)]
    pub translation_check: crate::datapath::TranslationMode,
    /// This node's name in the node list (with --nodes-file).
    #[arg(long, requires = "nodes_file")]
    pub node_name: Option<String>,
    /// The static node file (YAML or JSON: nodes with name, addresses, podCIDRs): the
    /// agent routes every other node's pod CIDRs, re-reading the file when it changes.
    /// This node's own pod CIDRs feed built-in IPAM when --pod-cidr is not given.
    #[arg(long, requires = "node_name")]
    pub nodes_file: Option<PathBuf>,
    /// Serve /metrics, /healthz and /readyz on this address.
    #[arg(long)]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Log to this file instead of stderr.
    #[arg(long)]
    pub log_file: Option<PathBuf>,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, default_value = "info")]
    pub log_level: String,
}

#[derive(Args)]
pub struct ClientArgs {
    /// The agent's socket.
    #[arg(long, default_value = netkit_api::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
}

pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(args) => run::run(*args).map(|()| ExitCode::SUCCESS),
        Command::Status(args) => client::status(&args),
        Command::Endpoints(args) => client::endpoints(&args),
        Command::Stats(args) => client::stats(&args),
    }
}
