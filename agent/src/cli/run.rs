//! `netkit-agent run`: serve the socket and the metrics port at once (not ready), bring
//! the datapath up (adopting whatever a previous agent pinned), declare readiness, then
//! serve until SIGTERM/SIGINT. Exiting leaves every pin in place, so the
//! datapath keeps forwarding until the next agent adopts it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use ipnetwork::IpNetwork;

use super::RunArgs;
use crate::datapath::{Datapath, TranslationMode};
use crate::nodes::{self, FileSource, NodeList, NodeSource};
use crate::registry::Registry;
use crate::service::Agent;
use crate::shared::SharedAgent;
use crate::{endpoint_name, metrics, routing, server};

/// How often vanished links are noticed without a DEL (a pod netns destroyed under us).
const RECONCILE_EVERY: Duration = Duration::from_secs(30);

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    init_logging(&args)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: RunArgs) -> anyhow::Result<()> {
    // Signals, the metrics port and the socket come first: while the datapath loads, a
    // probe sees "alive, not ready" and a client gets "not ready" with the reason.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let shared = SharedAgent::new("loading the datapath");
    if let Some(addr) = args.metrics_addr {
        let tcp = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding metrics on {addr}"))?;
        tokio::spawn(metrics::serve(tcp, shared.clone()));
    }
    let listener = server::bind(&args.socket)?;
    tokio::spawn(server::serve(listener, shared.clone()));

    let result = tokio::select! {
        result = start_and_reconcile(&args, &shared) => result,
        _ = term.recv() => {
            tracing::info!("SIGTERM: exiting, datapath stays pinned");
            Ok(())
        }
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("SIGINT: exiting, datapath stays pinned");
            Ok(())
        }
    };
    // Until the process is gone, probes and clients hear why.
    shared.set_not_ready("shutting down");
    let _ = std::fs::remove_file(&args.socket);
    result
}

/// Load the datapath and the registry and reconcile them (blocking work, off the
/// runtime so the socket and the metrics port answer meanwhile), declare the agent
/// ready, then reconcile periodically.
async fn start_and_reconcile(args: &RunArgs, shared: &SharedAgent) -> anyhow::Result<()> {
    let setup = Setup {
        bpffs_root: args.bpffs_root.clone(),
        translation_check: args.translation_check,
        uplink: match &args.uplink {
            _ if args.no_uplink => None,
            Some(uplink) => Some(uplink.clone()),
            None => default_route_device().await,
        },
        state_dir: args.state_dir.clone(),
        pod_cidrs: args.pod_cidrs.clone(),
        node: args.node_name.clone().zip(args.nodes_file.clone()),
    };
    let starting = shared.clone();
    let agent = tokio::task::spawn_blocking(move || setup.start(&starting))
        .await
        .context("the startup task failed")??;
    let agent = Arc::new(agent);
    shared.set_agent(agent.clone());
    match args.node_name.clone().zip(args.nodes_file.clone()) {
        Some((name, file)) => {
            // Ready once the routes to the other nodes are in place too: a pod started
            // earlier could not reach them.
            shared.set_not_ready(format!("waiting for the node list ({})", file.display()));
            let source = FileSource::new(&file);
            tokio::join!(
                reconcile_loop(agent.clone()),
                route_loop(agent, source, name, shared.clone(), args.socket.clone())
            );
        }
        None => {
            declare_ready(shared, &args.socket);
            reconcile_loop(agent).await;
        }
    }
    Ok(())
}

/// Follow the node source: on every new node list (and every `RECONCILE_EVERY`, to repair
/// drift) bring the routes to the other nodes to it. A list the source cannot read is
/// reported and the last good one stays in force.
async fn route_loop(
    agent: Arc<Agent>,
    mut source: impl NodeSource,
    name: String,
    shared: SharedAgent,
    socket: PathBuf,
) {
    let mut last_good: Option<NodeList> = None;
    // Why the source's current contents are refused, until it changes into something
    // usable: status keeps saying so across the periodic reconciles meanwhile.
    let mut refused: Option<String> = None;
    let mut summary = String::new();
    let mut ready = false;
    let mut tick = tokio::time::interval(nodes::file::POLL_EVERY);
    let mut last_full = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        let changed = match source.poll() {
            Some(Ok(list)) => {
                refused = None;
                let changed = last_good.as_ref() != Some(&list);
                last_good = Some(list);
                changed
            }
            Some(Err(e)) => {
                tracing::error!(error = %e, "the node list cannot be used; keeping the last good one");
                refused = Some(e);
                false
            }
            None => false,
        };
        let note = |summary: &str| match &refused {
            Some(e) => format!("{e} (the last good list stays in force: {summary})"),
            None => summary.to_string(),
        };
        if !summary.is_empty() || refused.is_some() {
            agent.set_nodes_note(note(&summary));
        }
        if !changed && last_full.elapsed() < RECONCILE_EVERY {
            continue;
        }
        last_full = tokio::time::Instant::now();
        let Some(list) = last_good.clone() else {
            continue;
        };
        let (applying, name, what) = (agent.clone(), name.clone(), source.describe());
        match tokio::task::spawn_blocking(move || apply_node_list(&applying, &list, &name, &what))
            .await
        {
            Ok(done) => {
                summary = done;
                agent.set_nodes_note(note(&summary));
            }
            Err(e) => {
                tracing::error!(error = %e, "the route reconcile failed");
                continue;
            }
        }
        if !ready {
            ready = true;
            declare_ready(&shared, &socket);
        }
    }
}

fn declare_ready(shared: &SharedAgent, socket: &std::path::Path) {
    shared.set_ready();
    tracing::info!(socket = %socket.display(), "ready");
}

/// One reconcile of the routes to the other nodes against `list`; returns how it went,
/// for `status`.
fn apply_node_list(agent: &Agent, list: &NodeList, name: &str, what: &str) -> String {
    use std::sync::atomic::{AtomicBool, Ordering};
    static SAID_NO_MANAGED: AtomicBool = AtomicBool::new(false);
    if list.get(name).is_none() {
        tracing::warn!(node = name, "this node is not in the node list");
    }
    let (routes, unroutable) = nodes::remote_routes(list, name);
    for why in &unroutable {
        tracing::warn!(why, "pod CIDR not routed");
    }
    let mut kernel = match netkit_netlink::RtKernel::new() {
        Ok(kernel) => kernel,
        Err(e) => {
            tracing::error!(error = %e, "no netlink for routing");
            return format!("{what}: no netlink for routing: {e}");
        }
    };
    let report = routing::reconcile(
        &mut kernel,
        agent.datapath(),
        &routes,
        agent.uplink_ifindex(),
    );
    if report.no_managed_neighbours && !SAID_NO_MANAGED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            "this kernel refuses managed neighbour entries (NTF_EXT_MANAGED, Linux 5.16+): \
             routing works, next hops are resolved on first use instead"
        );
    }
    for problem in &report.problems {
        tracing::warn!(problem, "node routing");
    }
    if report.routes_added
        + report.routes_removed
        + report.neighbours_added
        + report.neighbours_removed
        > 0
    {
        tracing::info!(?report, "node routes reconciled");
    }
    let problems = report.problems.len() + unroutable.len();
    format!(
        "{what}: {} nodes, {} routes{}",
        list.nodes.len(),
        routes.len(),
        if problems > 0 {
            format!(", {problems} problems (see the log)")
        } else {
            String::new()
        }
    )
}

/// What bringing the agent up needs from the command line.
struct Setup {
    bpffs_root: PathBuf,
    translation_check: TranslationMode,
    uplink: Option<String>,
    state_dir: PathBuf,
    pod_cidrs: Vec<IpNetwork>,
    /// `--node-name` and `--nodes-file`.
    node: Option<(String, PathBuf)>,
}

impl Setup {
    /// Built-in IPAM's pools: `--pod-cidr`, else this node's pod CIDRs in the node file.
    fn pools(&self) -> anyhow::Result<Vec<IpNetwork>> {
        if !self.pod_cidrs.is_empty() {
            return Ok(self.pod_cidrs.clone());
        }
        let Some((name, file)) = &self.node else {
            return Ok(Vec::new());
        };
        let list = nodes::file::load(file)?;
        let this = list.get(name).with_context(|| {
            format!(
                "node {name} is not in {} (needed for its pod CIDRs)",
                file.display()
            )
        })?;
        Ok(this.pod_cidrs.clone())
    }

    fn start(self, shared: &SharedAgent) -> anyhow::Result<Agent> {
        let datapath = Datapath::open(&self.bpffs_root, self.translation_check)
            .with_context(|| format!("opening the datapath under {}", self.bpffs_root.display()))?;
        if let Some(uplink) = &self.uplink {
            datapath
                .attach_uplink(uplink)
                .with_context(|| format!("attaching to uplink {uplink}"))?;
            tracing::info!(uplink, "uplink program attached");
        }
        shared.set_not_ready("loading the endpoint registry");
        let registry = Registry::load(&self.state_dir, &datapath.pins().pinned_endpoints())?;
        endpoint_name::adopt_legacy_pins(
            &datapath.pins().endpoints_dir(),
            registry.all().map(|e| &e.id),
        );
        let pools = self.pools()?;
        let agent = Agent::new(Box::new(datapath), registry, pools, self.uplink);
        shared.set_not_ready(format!("reconciling {} endpoints", agent.endpoint_count()));
        agent.reconcile(true);
        Ok(agent)
    }
}

async fn reconcile_loop(agent: Arc<Agent>) {
    let mut tick = tokio::time::interval(RECONCILE_EVERY);
    tick.tick().await;
    loop {
        tick.tick().await;
        let agent = agent.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || agent.reconcile(false)).await {
            tracing::error!(error = %e, "the periodic reconcile failed");
        }
    }
}

/// The device that carries the default route (IPv4 first); `None`, logged, when netlink
/// cannot say.
async fn default_route_device() -> Option<String> {
    let found = match netkit_netlink::connect() {
        Ok(handle) => netkit_netlink::route::default_route_link(&handle).await,
        Err(e) => Err(e),
    };
    match found {
        Ok(link) => link.map(|l| l.name),
        Err(e) => {
            tracing::warn!(error = %e, "cannot find the default route's device; no uplink");
            None
        }
    }
}

fn init_logging(args: &RunArgs) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .with_context(|| format!("invalid --log-level {:?}", args.log_level))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match &args.log_file {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening log file {}", path.display()))?;
            builder.with_ansi(false).with_writer(Arc::new(file)).init();
        }
        None => builder.with_writer(std::io::stderr).init(),
    }
    Ok(())
}
