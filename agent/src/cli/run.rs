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
use crate::install::{self, ConfSettings};
use crate::nodes::kube::{self as kube_nodes, KubeSource};
use crate::nodes::{self, FileSource, NodeList, NodeSource, SourceHealth};
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
    let health = Arc::new(SourceHealth::default());
    if let Some(addr) = args.metrics_addr {
        let tcp = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding metrics on {addr}"))?;
        let node_source = (args.nodes_file.is_some() || args.kubernetes).then(|| health.clone());
        tokio::spawn(metrics::serve(tcp, shared.clone(), node_source));
    }
    let listener = server::bind(&args.socket)?;
    tokio::spawn(server::serve(listener, shared.clone()));

    let result = tokio::select! {
        result = start_and_reconcile(&args, &shared, health) => result,
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
/// runtime so the socket and the metrics port answer meanwhile), learn the node list
/// when there is a node source, install the CNI when asked, declare the agent ready,
/// then reconcile periodically.
async fn start_and_reconcile(
    args: &RunArgs,
    shared: &SharedAgent,
    health: Arc<SourceHealth>,
) -> anyhow::Result<()> {
    // Settings that cannot work fail now, not after the datapath has loaded.
    let conf = conf_settings(args)?;
    // The Kubernetes client before the datapath: a configuration that cannot work is
    // reported at once, and the Node watch syncs while the datapath loads.
    let kube = match args.kubernetes {
        true => {
            let config = kube_nodes::client_config(args.kubeconfig.as_deref())
                .await
                .context("configuring the Kubernetes client")?;
            tracing::info!(api_server = %config.cluster_url, "watching Kubernetes Nodes");
            Some(KubeSource::start(config, health.clone())?)
        }
        false => None,
    };
    if args.kubernetes {
        ensure_host_bpffs(&args.bpffs_root)?;
    }
    let setup = Setup {
        bpffs_root: args.bpffs_root.clone(),
        translation_check: args.translation_check,
        uplink: match &args.uplink {
            _ if args.no_uplink => None,
            Some(uplink) => Some(uplink.clone()),
            None => default_route_device().await,
        },
        state_dir: args.state_dir.clone(),
    };
    let starting = shared.clone();
    let loaded = tokio::task::spawn_blocking(move || setup.load(&starting))
        .await
        .context("the startup task failed")??;
    let pools = pools(args, kube.as_ref(), shared).await?;
    let starting = shared.clone();
    let agent = tokio::task::spawn_blocking(move || loaded.into_agent(pools, &starting))
        .await
        .context("the startup task failed")?;
    let agent = Arc::new(agent);
    shared.set_agent(agent.clone());
    let source: Option<Box<dyn NodeSource + Send>> = match (kube, &args.nodes_file) {
        (Some(kube), _) => Some(Box::new(kube)),
        (None, Some(file)) => Some(Box::new(FileSource::new(file, health))),
        (None, None) => None,
    };
    let routing = match (source, &args.node_name) {
        (Some(source), Some(name)) => Some(Router::new(agent.clone(), source, name.clone())),
        // clap requires --node-name with either source.
        (Some(_), None) => anyhow::bail!("a node source needs --node-name"),
        (None, _) => None,
    };
    let Some(mut routing) = routing else {
        go_live(args, conf, shared).await?;
        reconcile_loop(agent).await;
        return Ok(());
    };
    // Ready once the routes to the other nodes are in place too: a pod started earlier
    // could not reach them.
    routing.until_applied(shared).await;
    go_live(args, conf, shared).await?;
    tokio::join!(reconcile_loop(agent), routing.run());
    Ok(())
}

/// In a cluster the agent runs in a container: a BPF filesystem it mounted there itself
/// would be private to the container and vanish with it, pins and all, and the next
/// agent could adopt nothing. So the pin root must already be on the node's bpffs,
/// shared into the container.
fn ensure_host_bpffs(root: &std::path::Path) -> anyhow::Result<()> {
    /// `BPF_FS_MAGIC` from include/uapi/linux/magic.h.
    const BPF_FS_MAGIC: i64 = 0xcafe4a11;
    let existing = root
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(std::path::Path::new("/"));
    let fs = nix::sys::statfs::statfs(existing)
        .with_context(|| format!("statfs {}", existing.display()))?;
    if fs.filesystem_type().0 != BPF_FS_MAGIC {
        anyhow::bail!(
            "{} is not on a BPF filesystem: mount one on the node (mount -t bpf bpf /sys/fs/bpf) \
             and share it into the agent's container; one mounted inside the container would \
             take the pinned datapath with it when the agent restarts",
            existing.display()
        );
    }
    Ok(())
}

/// Built-in IPAM's pools: `--pod-cidr`; else this node's pod CIDRs from the node
/// source — read from the node file, or awaited from Kubernetes when built-in IPAM
/// needs them (no `--cni-ipam`): a node's pod CIDRs are assigned a moment after its
/// kubelet registered it, and until then a pod could get no address.
async fn pools(
    args: &RunArgs,
    kube: Option<&KubeSource>,
    shared: &SharedAgent,
) -> anyhow::Result<Vec<IpNetwork>> {
    if !args.pod_cidrs.is_empty() {
        return Ok(args.pod_cidrs.clone());
    }
    let Some(name) = &args.node_name else {
        return Ok(Vec::new());
    };
    if let Some(file) = &args.nodes_file {
        let list = nodes::file::load(file)?;
        let this = list.get(name).with_context(|| {
            format!(
                "node {name} is not in {} (needed for its pod CIDRs)",
                file.display()
            )
        })?;
        return Ok(this.pod_cidrs.clone());
    }
    match kube {
        Some(kube) if args.install.cni_ipam.is_none() => {
            let pools = kube
                .pod_cidrs_of(name, |why| shared.set_not_ready(why))
                .await;
            tracing::info!(node = name, ?pools, "pod CIDRs from Kubernetes");
            Ok(pools)
        }
        _ => Ok(Vec::new()),
    }
}

/// The conflist's settings when `--install-cni-conf` asks for one, checked.
fn conf_settings(args: &RunArgs) -> anyhow::Result<Option<ConfSettings>> {
    let i = &args.install;
    if !i.install_cni_conf {
        return Ok(None);
    }
    let settings = ConfSettings {
        network_name: i.cni_network_name.clone(),
        mtu: i.cni_mtu,
        mode: i.cni_mode,
        ipam: i.cni_ipam.clone(),
        agent_socket: (args.socket != std::path::Path::new(netkit_api::DEFAULT_SOCKET))
            .then(|| args.socket.clone()),
        log_file: i.cni_log_file.clone(),
    };
    install::conflist(&settings)?;
    Ok(Some(settings))
}

/// Install the CNI when asked — binaries first, since the conflist names them — and
/// declare the agent ready. The runtime reports the node's network ready once the
/// conflist exists, so this comes only when the agent serves.
async fn go_live(
    args: &RunArgs,
    conf: Option<ConfSettings>,
    shared: &SharedAgent,
) -> anyhow::Result<()> {
    let bin = args
        .install
        .install_cni_bin_from
        .clone()
        .map(|from| (from, args.install.cni_bin_dir.clone()));
    let conf = conf.map(|settings| (args.install.cni_conf_dir.clone(), settings));
    if bin.is_some() || conf.is_some() {
        shared.set_not_ready("installing the CNI");
        tokio::task::spawn_blocking(move || install_cni(bin, conf))
            .await
            .context("the install task failed")??;
    }
    declare_ready(shared, &args.socket);
    Ok(())
}

fn install_cni(
    bin: Option<(PathBuf, PathBuf)>,
    conf: Option<(PathBuf, ConfSettings)>,
) -> anyhow::Result<()> {
    if let Some((from, to)) = bin {
        let written = install::install_binaries(&from, &to)
            .with_context(|| format!("installing the CNI binaries into {}", to.display()))?;
        match written.is_empty() {
            true => tracing::info!(dir = %to.display(), "CNI binaries up to date"),
            false => tracing::info!(dir = %to.display(), ?written, "CNI binaries installed"),
        }
    }
    if let Some((dir, settings)) = conf {
        let wrote = install::install_conflist(&dir, &settings)
            .with_context(|| format!("installing the CNI configuration into {}", dir.display()))?;
        let path = dir.join(install::CONFLIST_NAME);
        match wrote {
            true => tracing::info!(path = %path.display(), "CNI configuration written"),
            false => tracing::info!(path = %path.display(), "CNI configuration up to date"),
        }
        let earlier = install::earlier_configs(&dir);
        if !earlier.is_empty() {
            tracing::warn!(
                ?earlier,
                "the runtime uses the first CNI configuration in lexical order, and these come before ours"
            );
        }
    }
    Ok(())
}

/// Follows the node source: on every new node list (and every `RECONCILE_EVERY`, to
/// repair drift) brings the routes to the other nodes to it. A list the source cannot
/// read is reported and the last good one stays in force.
struct Router {
    agent: Arc<Agent>,
    source: Box<dyn NodeSource + Send>,
    name: String,
    last_good: Option<NodeList>,
    /// Why the source's current contents are refused, until it changes into something
    /// usable: status keeps saying so across the periodic reconciles meanwhile.
    refused: Option<String>,
    /// How the last reconcile went.
    summary: Option<String>,
    last_full: Option<tokio::time::Instant>,
    tick: tokio::time::Interval,
}

impl Router {
    fn new(agent: Arc<Agent>, source: Box<dyn NodeSource + Send>, name: String) -> Self {
        Router {
            agent,
            source,
            name,
            last_good: None,
            refused: None,
            summary: None,
            last_full: None,
            tick: tokio::time::interval(nodes::file::POLL_EVERY),
        }
    }

    /// Step until a node list has been applied, saying meanwhile what readiness waits
    /// for.
    async fn until_applied(&mut self, shared: &SharedAgent) {
        loop {
            let waiting = format!("waiting for the node list ({})", self.source.describe());
            shared.set_not_ready(match self.source.trouble().or(self.refused.clone()) {
                Some(why) => format!("{waiting}: {why}"),
                None => waiting,
            });
            if self.step().await {
                return;
            }
        }
    }

    async fn run(mut self) {
        loop {
            self.step().await;
        }
    }

    /// One round: poll the source, reconcile when the list changed or the periodic
    /// reconcile is due, refresh what `status` says. Returns whether a list was applied.
    async fn step(&mut self) -> bool {
        self.tick.tick().await;
        let changed = match self.source.poll() {
            Some(Ok(list)) => {
                self.refused = None;
                let changed = self.last_good.as_ref() != Some(&list);
                self.last_good = Some(list);
                changed
            }
            Some(Err(e)) => {
                tracing::error!(error = %e, "the node list cannot be used; keeping the last good one");
                self.refused = Some(e);
                false
            }
            None => false,
        };
        let due = changed
            || self
                .last_full
                .is_none_or(|at| at.elapsed() >= RECONCILE_EVERY);
        let mut applied = false;
        if due && let Some(list) = self.last_good.clone() {
            self.last_full = Some(tokio::time::Instant::now());
            let (agent, name, what) = (
                self.agent.clone(),
                self.name.clone(),
                self.source.describe(),
            );
            match tokio::task::spawn_blocking(move || apply_node_list(&agent, &list, &name, &what))
                .await
            {
                Ok(done) => {
                    self.summary = Some(done);
                    applied = true;
                }
                Err(e) => tracing::error!(error = %e, "the route reconcile failed"),
            }
        }
        if let Some(note) = self.note() {
            self.agent.set_nodes_note(note);
        }
        applied
    }

    /// What `status` says about the nodes: how the last reconcile went, why the
    /// source's current contents are refused, what keeps the source from news.
    fn note(&self) -> Option<String> {
        let base = match (&self.refused, &self.summary) {
            (Some(e), Some(summary)) => Some(format!(
                "{e} (the last good list stays in force: {summary})"
            )),
            (Some(e), None) => Some(e.clone()),
            (None, summary) => summary.clone(),
        };
        match (base, self.source.trouble()) {
            (Some(base), Some(trouble)) => Some(format!("{base}; {trouble}")),
            (Some(base), None) => Some(base),
            (None, Some(trouble)) => Some(format!("{}: {trouble}", self.source.describe())),
            (None, None) => None,
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
}

/// The datapath and the registry, loaded; the agent needs its IPAM pools still.
struct Loaded {
    datapath: Datapath,
    registry: Registry,
    uplink: Option<String>,
}

impl Setup {
    fn load(self, shared: &SharedAgent) -> anyhow::Result<Loaded> {
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
        Ok(Loaded {
            datapath,
            registry,
            uplink: self.uplink,
        })
    }
}

impl Loaded {
    fn into_agent(self, pools: Vec<IpNetwork>, shared: &SharedAgent) -> Agent {
        let agent = Agent::new(Box::new(self.datapath), self.registry, pools, self.uplink);
        shared.set_not_ready(format!("reconciling {} endpoints", agent.endpoint_count()));
        agent.reconcile(true);
        agent
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
