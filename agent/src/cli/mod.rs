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
    #[arg(long, env = "NETKIT_UPLINK")]
    pub uplink: Option<String>,
    /// Do not attach to any uplink.
    #[arg(long, conflicts_with = "uplink")]
    pub no_uplink: bool,
    /// How flows the host stack translated are kept off the fast path: `conntrack` asks
    /// the kernel's conntrack per packet (falling back to `stack-only`, with a warning,
    /// where it cannot be asked); `stack-only` sends every pod-bound TCP/UDP packet
    /// through the host stack.
    #[arg(
        long,
        env = "NETKIT_TRANSLATION_CHECK",
        value_enum,
        default_value_t = crate::datapath::TranslationMode::Conntrack
    )]
    pub translation_check: crate::datapath::TranslationMode,
    /// This node's name among the nodes (Kubernetes: the Node object's name, which a
    /// DaemonSet passes in NODE_NAME from spec.nodeName).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// The static node file (YAML or JSON: nodes with name, addresses, podCIDRs): the
    /// agent routes every other node's pod CIDRs, re-reading the file when it changes.
    /// This node's own pod CIDRs feed built-in IPAM when --pod-cidr is not given.
    #[arg(long, requires = "node_name")]
    pub nodes_file: Option<PathBuf>,
    /// Learn the nodes from Kubernetes Node objects (a watch): the agent routes every
    /// other node's spec.podCIDRs via its InternalIP; this node's pod CIDRs feed
    /// built-in IPAM when --pod-cidr is not given (readiness waits for them).
    #[arg(long, requires = "node_name", conflicts_with = "nodes_file")]
    pub kubernetes: bool,
    /// Kubeconfig to reach the API server with (outside a cluster). Default: the pod's
    /// service account when KUBERNETES_SERVICE_HOST is set, else KUBECONFIG or
    /// ~/.kube/config.
    #[arg(long, requires = "kubernetes")]
    pub kubeconfig: Option<PathBuf>,
    /// Serve /metrics, /healthz and /readyz on this address.
    #[arg(long)]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Log to this file instead of stderr.
    #[arg(long)]
    pub log_file: Option<PathBuf>,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "NETKIT_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    #[command(flatten)]
    pub install: InstallArgs,
}

/// Installing the CNI on the node (in a cluster, from the agent's image). Each
/// `--cni-*` setting also reads an environment variable, so a DaemonSet can take them
/// from a ConfigMap.
#[derive(Args)]
#[command(next_help_heading = "Installing the CNI")]
pub struct InstallArgs {
    /// Copy every regular file in this directory into --cni-bin-dir (atomically, only
    /// the files whose content differs), once the agent serves.
    #[arg(long, value_name = "DIR")]
    pub install_cni_bin_from: Option<PathBuf>,
    /// The node's CNI binary directory.
    #[arg(long, default_value = "/opt/cni/bin", value_name = "DIR")]
    pub cni_bin_dir: PathBuf,
    /// Write the conflist (10-netkit.conflist: netkit-cni, then portmap for hostPort)
    /// into --cni-conf-dir, atomically and only when it changes, once the agent serves.
    #[arg(long)]
    pub install_cni_conf: bool,
    /// The node's CNI configuration directory.
    #[arg(long, default_value = "/etc/cni/net.d", value_name = "DIR")]
    pub cni_conf_dir: PathBuf,
    /// The conflist's network name.
    #[arg(long, env = "NETKIT_CNI_NETWORK_NAME", default_value = "netkit")]
    pub cni_network_name: String,
    /// MTU of the pods' links (default: the plugin's, the default route device's MTU).
    #[arg(long, env = "NETKIT_CNI_MTU", value_parser = clap::value_parser!(u32).range(68..=65535))]
    pub cni_mtu: Option<u32>,
    /// Pod link kind (default: the plugin's, auto).
    #[arg(long, env = "NETKIT_CNI_MODE", value_enum)]
    pub cni_mode: Option<crate::install::LinkMode>,
    /// A delegated IPAM section for the conflist, as JSON (`{"type":"host-local",...}`).
    /// Absent: built-in IPAM from this node's pod CIDRs.
    #[arg(long, env = "NETKIT_CNI_IPAM", value_name = "JSON")]
    pub cni_ipam: Option<String>,
    /// The plugin's log file on the node (default: the plugin does not log).
    #[arg(long, env = "NETKIT_CNI_LOG_FILE", value_name = "PATH")]
    pub cni_log_file: Option<PathBuf>,
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
    if !matches!(cli.command, Command::Run(_)) {
        // A client printing into a closed pipe (`netkit-agent endpoints | head`) should
        // end quietly, as a shell tool does, not panic in println!. Only the client:
        // Rust ignores SIGPIPE so that the daemon survives peers closing sockets.
        // SAFETY: setting a signal's disposition to the default, before any thread.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    match cli.command {
        Command::Run(args) => run::run(*args).map(|()| ExitCode::SUCCESS),
        Command::Status(args) => client::status(&args),
        Command::Endpoints(args) => client::endpoints(&args),
        Command::Stats(args) => client::stats(&args),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn run_args(args: &[&str]) -> Result<RunArgs, clap::Error> {
        let argv = ["netkit-agent", "run"].iter().chain(args);
        match Cli::try_parse_from(argv)?.command {
            Command::Run(args) => Ok(*args),
            _ => unreachable!("parsed `run` as another subcommand"),
        }
    }

    #[test]
    fn kubernetes_flags_and_their_relations() {
        let args = run_args(&[
            "--kubernetes",
            "--node-name",
            "n1",
            "--kubeconfig",
            "/etc/kubeconfig",
            "--install-cni-bin-from",
            "/opt/netkit/cni-bin",
            "--install-cni-conf",
            "--cni-mtu",
            "1450",
        ])
        .unwrap();
        assert!(args.kubernetes && args.install.install_cni_conf);
        assert_eq!(args.node_name.as_deref(), Some("n1"));
        assert_eq!(args.install.cni_bin_dir, PathBuf::from("/opt/cni/bin"));
        assert_eq!(args.install.cni_mtu, Some(1450));

        let refused: &[&[&str]] = &[
            &["--kubernetes", "--node-name", "n1", "--nodes-file", "/x"],
            &["--kubeconfig", "/etc/kubeconfig"],
            &["--cni-mtu", "20"],
        ];
        for argv in refused {
            assert!(run_args(argv).is_err(), "{argv:?} was accepted");
        }
        // Without a node name (unless the environment gives one, as a DaemonSet does).
        if std::env::var_os("NODE_NAME").is_none() {
            assert!(run_args(&["--kubernetes"]).is_err());
            assert!(run_args(&["--nodes-file", "/x"]).is_err());
        }
        // A node name alone is harmless: nothing uses it without a source.
        assert!(run_args(&["--node-name", "n1"]).is_ok());
    }

    /// The manifests parse as the Kubernetes objects they claim to be, and the
    /// DaemonSet is consistent with the agent it runs: its command line and the
    /// ConfigMap's settings parse, the probes reach the metrics port, every host path
    /// the agent writes is mounted, and the ClusterRole grants Node reads only.
    #[test]
    fn manifests_match_the_agent() {
        use clap::CommandFactory as _;
        use k8s_openapi::api::apps::v1::DaemonSet;
        use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
        use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
        use serde::Deserialize as _;

        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        files.sort();
        let mut docs = Vec::new();
        for file in &files {
            let text = std::fs::read_to_string(file).unwrap();
            for doc in serde_norway::Deserializer::from_str(&text) {
                docs.push((file.clone(), serde_norway::Value::deserialize(doc).unwrap()));
            }
        }
        // Typed, and back: a misspelt or misplaced field (which the typed objects
        // ignore) makes the two differ.
        fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(
            doc: serde_norway::Value,
            at: &str,
        ) -> T {
            let original = serde_json::to_value(&doc).unwrap();
            let object: T = serde_norway::from_value(doc).unwrap_or_else(|e| panic!("{at}: {e}"));
            assert_eq!(
                serde_json::to_value(&object).unwrap(),
                original,
                "{at}: fields the Kubernetes API does not know"
            );
            object
        }
        let (mut daemonset, mut configmap, mut role) = (None, None, None);
        let mut kinds = Vec::new();
        for (file, doc) in docs {
            let kind = doc["kind"].as_str().unwrap_or_default().to_string();
            let at = format!("{} ({kind})", file.display());
            match kind.as_str() {
                "Namespace" => drop(typed::<Namespace>(doc, &at)),
                "ServiceAccount" => drop(typed::<ServiceAccount>(doc, &at)),
                "ClusterRoleBinding" => drop(typed::<ClusterRoleBinding>(doc, &at)),
                "ClusterRole" => role = Some(typed::<ClusterRole>(doc, &at)),
                "ConfigMap" => configmap = Some(typed::<ConfigMap>(doc, &at)),
                "DaemonSet" => daemonset = Some(typed::<DaemonSet>(doc, &at)),
                other => panic!("{at}: unexpected kind {other:?}"),
            }
            kinds.push(kind);
        }
        assert_eq!(kinds[0], "Namespace", "the namespace must apply first");

        let rules = role.unwrap().rules.unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(
            rules[0].resources.as_deref(),
            Some(&["nodes".to_string()][..])
        );
        assert_eq!(rules[0].verbs, ["get", "list", "watch"]);

        let daemonset = daemonset.unwrap();
        let pod = daemonset.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.host_network, Some(true));
        let agent = &pod.containers[0];
        let mut argv: Vec<String> = agent.command.clone().unwrap();
        argv.extend(agent.args.clone().unwrap());
        // NODE_NAME comes from the pod's spec.nodeName.
        assert!(
            agent
                .env
                .as_ref()
                .unwrap()
                .iter()
                .any(|e| e.name == "NODE_NAME")
        );
        argv.push("--node-name=node-a".into());
        let Command::Run(args) = Cli::try_parse_from(&argv).unwrap().command else {
            panic!("the DaemonSet does not run `netkit-agent run`");
        };
        assert!(args.kubernetes && args.install.install_cni_conf);
        let metrics = args.metrics_addr.expect("the probes need --metrics-addr");
        for (probe, path) in [
            (agent.readiness_probe.as_ref(), "/readyz"),
            (agent.liveness_probe.as_ref(), "/healthz"),
        ] {
            let get = probe.unwrap().http_get.as_ref().unwrap();
            assert_eq!(get.path.as_deref(), Some(path));
            assert_eq!(
                get.port,
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(
                    metrics.port().into()
                )
            );
            assert_eq!(get.host.as_deref(), Some(metrics.ip().to_string().as_str()));
        }
        let mounts: Vec<PathBuf> = agent
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| PathBuf::from(&m.mount_path))
            .collect();
        for written in [
            args.socket.parent().unwrap(),
            &args.state_dir,
            &args.bpffs_root,
            &args.install.cni_bin_dir,
            &args.install.cni_conf_dir,
        ] {
            assert!(
                mounts.iter().any(|m| written.starts_with(m)),
                "{} is not on a host mount",
                written.display()
            );
        }

        // Every setting in the ConfigMap is an environment variable of `run` (or the
        // client's API server override), and its value parses.
        let run = Cli::command();
        let run = run.find_subcommand("run").unwrap();
        let data = configmap.unwrap().data.unwrap();
        for (key, value) in &data {
            let Some(arg) = run
                .get_arguments()
                .find(|a| a.get_env().is_some_and(|e| e == key.as_str()))
            else {
                assert!(
                    key.starts_with("KUBERNETES_SERVICE_"),
                    "unknown setting {key}"
                );
                continue;
            };
            let flag = format!("--{}={value}", arg.get_long().unwrap());
            run_args(&[&flag]).unwrap_or_else(|e| panic!("{key}: {e}"));
        }
        let envfrom = agent.env_from.as_ref().unwrap();
        assert!(envfrom.iter().any(|e| {
            e.config_map_ref
                .as_ref()
                .is_some_and(|c| c.name == "netkit-config")
        }));
    }
}
