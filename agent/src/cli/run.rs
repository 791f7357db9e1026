//! `netkit-agent run`: bring the datapath up (adopting whatever a previous agent
//! pinned), then serve until SIGTERM/SIGINT. Exiting leaves every pin in place, so the
//! datapath keeps forwarding until the next agent adopts it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::Mutex;

use super::RunArgs;
use crate::datapath::Datapath;
use crate::registry::Registry;
use crate::service::Agent;
use crate::{endpoint_name, metrics, server};

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
    let mut datapath = Datapath::open(&args.bpffs_root, args.translation_check)
        .with_context(|| format!("opening the datapath under {}", args.bpffs_root.display()))?;
    let uplink = if args.no_uplink {
        None
    } else {
        args.uplink.clone().or_else(default_route_device)
    };
    if let Some(uplink) = &uplink {
        datapath
            .attach_uplink(uplink)
            .with_context(|| format!("attaching to uplink {uplink}"))?;
        tracing::info!(uplink, "uplink program attached");
    }
    let registry = Registry::load(&args.state_dir, &datapath.pins().pinned_endpoints())?;
    endpoint_name::adopt_legacy_pins(
        &datapath.pins().endpoints_dir(),
        registry.all().map(|e| &e.id),
    );
    let mut agent = Agent::new(datapath, registry, args.pod_cidrs.clone(), uplink);
    agent.reconcile(true);
    let agent = Arc::new(Mutex::new(agent));

    let listener = server::bind(&args.socket)?;
    if let Some(addr) = args.metrics_addr {
        let tcp = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding metrics on {addr}"))?;
        tokio::spawn(metrics::serve(tcp, agent.clone()));
    }
    tokio::spawn(reconcile_loop(agent.clone()));
    tracing::info!(socket = %args.socket.display(), "ready");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        () = server::serve(listener, agent) => {}
        _ = term.recv() => tracing::info!("SIGTERM: exiting, datapath stays pinned"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: exiting, datapath stays pinned"),
    }
    let _ = std::fs::remove_file(&args.socket);
    Ok(())
}

async fn reconcile_loop(agent: Arc<Mutex<Agent>>) {
    let mut tick = tokio::time::interval(RECONCILE_EVERY);
    tick.tick().await;
    loop {
        tick.tick().await;
        agent.lock().await.reconcile(false);
    }
}

/// The device of the IPv4 default route, from /proc/net/route (no netlink needed).
fn default_route_device() -> Option<String> {
    let table = std::fs::read_to_string("/proc/net/route").ok()?;
    table.lines().skip(1).find_map(|line| {
        let mut fields = line.split_whitespace();
        let iface = fields.next()?;
        let destination = fields.next()?;
        (destination == "00000000").then(|| iface.to_string())
    })
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
