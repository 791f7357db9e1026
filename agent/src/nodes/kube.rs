//! Kubernetes Node objects as a node source. A watcher (kube-runtime) feeds a reflector
//! store of every Node; after the first full list and on every change after it the
//! store is mapped whole to a [`NodeList`] and published to the route loop, which
//! reconciles against it exactly as against the node file. The list, not the events,
//! is what counts: a deleted node or a changed pod CIDR is simply absent or different in
//! the next list.
//!
//! A lost API connection keeps the store (and so the routes) as they were; the watcher
//! retries with kube-runtime's default backoff, re-listing when its resource version has
//! expired, and the loss shows in `status` ([`NodeSource::trouble`]) and in `/metrics`
//! ([`SourceHealth`]).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use ipnetwork::IpNetwork;
use k8s_openapi::api::core::v1::Node as KubeNode;
use kube::api::{Api, ListParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use tokio::sync::watch;

use super::{Node, NodeList, NodeSource, SourceHealth};

/// While the watch is failing, how often a one-item list checks whether the API server
/// answers again: a watch that resumes where it stopped yields no event to tell.
const PROBE_EVERY: Duration = Duration::from_secs(5);

const WAITING_FOR_FIRST_LIST: &str = "waiting for the first full list of Kubernetes Nodes";

/// The messages leave the cause to the error's source: kube's own errors carry their
/// whole chain in their text already, and printing it twice buries the point.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("reading kubeconfig {path}")]
    Kubeconfig {
        path: PathBuf,
        source: kube::config::KubeconfigError,
    },
    #[error("in-cluster configuration (the pod's service account)")]
    InCluster(#[from] kube::config::InClusterError),
    #[error("no Kubernetes configuration found (in-cluster or kubeconfig)")]
    Infer(#[from] kube::config::InferConfigError),
    #[error("building the Kubernetes client")]
    Client(#[from] kube::Error),
}

pub type Result<T> = std::result::Result<T, KubeError>;

/// The client configuration: `kubeconfig` when given; else the pod's service account
/// when the process runs in a cluster (`KUBERNETES_SERVICE_HOST` is set); else what
/// kubectl would use (`KUBECONFIG`, `~/.kube/config`).
pub async fn client_config(kubeconfig: Option<&Path>) -> Result<kube::Config> {
    use kube::config::{KubeConfigOptions, Kubeconfig};
    let kubeconfig_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| KubeError::Kubeconfig { path, source }
    };
    match kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path).map_err(kubeconfig_err(path))?;
            Ok(
                kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                    .await
                    .map_err(kubeconfig_err(path))?,
            )
        }
        None if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some_and(|h| !h.is_empty()) => {
            Ok(kube::Config::incluster()?)
        }
        None => Ok(kube::Config::infer().await?),
    }
}

/// One Node as the agent routes it: its pod CIDRs from `spec.podCIDRs`, else the older
/// single `spec.podCIDR` (none while the controller-manager has not assigned one yet),
/// and the `InternalIP` entries of `status.addresses`, both families, in their order.
/// Values that do not parse are left out and described in the second list. A CIDR
/// with host bits set is taken as its network.
pub fn map_node(node: &KubeNode) -> (Node, Vec<String>) {
    let name = node.metadata.name.clone().unwrap_or_default();
    let mut problems = Vec::new();
    let spec = node.spec.as_ref();
    let cidrs: Vec<&String> = match spec.and_then(|s| s.pod_cidrs.as_ref()) {
        Some(cidrs) if !cidrs.is_empty() => cidrs.iter().collect(),
        _ => spec.and_then(|s| s.pod_cidr.as_ref()).into_iter().collect(),
    };
    let mut pod_cidrs = Vec::new();
    for text in cidrs {
        match text.trim().parse::<IpNetwork>() {
            Ok(cidr) => match IpNetwork::new(cidr.network(), cidr.prefix()) {
                Ok(network) if !pod_cidrs.contains(&network) => pod_cidrs.push(network),
                Ok(_) => {}
                Err(e) => problems.push(format!("node {name}: pod CIDR {text:?}: {e}")),
            },
            Err(_) => problems.push(format!("node {name}: pod CIDR {text:?} is not a CIDR")),
        }
    }
    let mut addresses = Vec::new();
    let listed = node.status.as_ref().and_then(|s| s.addresses.as_ref());
    for entry in listed.into_iter().flatten() {
        if entry.type_ != "InternalIP" {
            continue;
        }
        match entry.address.trim().parse::<IpAddr>() {
            Ok(addr) if !addresses.contains(&addr) => addresses.push(addr),
            Ok(_) => {}
            Err(_) => problems.push(format!(
                "node {name}: InternalIP {:?} is not an IP address",
                entry.address
            )),
        }
    }
    (
        Node {
            name,
            addresses,
            pod_cidrs,
        },
        problems,
    )
}

/// Every node of the store, sorted by name, checked as a node file is (unique names,
/// no overlapping pod CIDRs). Problems with single values come back beside the list.
pub fn map_nodes<'a>(
    nodes: impl IntoIterator<Item = &'a KubeNode>,
) -> (std::result::Result<NodeList, String>, Vec<String>) {
    let mut problems = Vec::new();
    let mut list = NodeList::default();
    for node in nodes {
        let (mapped, mut trouble) = map_node(node);
        problems.append(&mut trouble);
        if mapped.name.is_empty() {
            problems.push("a Node without a name was left out".to_string());
            continue;
        }
        list.nodes.push(mapped);
    }
    list.nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let checked = match list.check() {
        Ok(()) => Ok(list),
        Err((field, message)) => {
            // `field` indexes the sorted list; name the node instead.
            let node = field
                .strip_prefix("nodes[")
                .and_then(|rest| rest.split(']').next())
                .and_then(|i| i.parse::<usize>().ok())
                .and_then(|i| list.nodes.get(i))
                .map_or_else(|| field.clone(), |n| format!("node {}", n.name));
            Err(format!("Kubernetes Nodes: {node}: {message}"))
        }
    };
    (checked, problems)
}

/// Since when, and why, the API server cannot be reached.
struct Lost {
    since: k8s_openapi::jiff::Timestamp,
    at: Instant,
    error: String,
}

/// What the watch task shares with the source.
struct Shared {
    health: Arc<SourceHealth>,
    lost: Mutex<Option<Lost>>,
}

impl Shared {
    fn lost(&self) -> std::sync::MutexGuard<'_, Option<Lost>> {
        self.lost.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn failed(&self, error: String) {
        self.health.failed();
        let mut lost = self.lost();
        match &mut *lost {
            Some(lost) => {
                tracing::debug!(error, "Kubernetes API still unreachable");
                lost.error = error;
            }
            None => {
                tracing::warn!(
                    error,
                    "Kubernetes API connection lost; keeping the last known nodes, retrying"
                );
                *lost = Some(Lost {
                    since: k8s_openapi::jiff::Timestamp::now(),
                    at: Instant::now(),
                    error,
                });
            }
        }
    }

    fn succeeded(&self) {
        self.health.succeeded();
        if let Some(lost) = self.lost().take() {
            tracing::info!(
                after_s = lost.at.elapsed().as_secs(),
                "Kubernetes API connection back"
            );
        }
    }
}

/// The published node list: `None` until the first full list; then the mapped store,
/// or why it cannot be used.
type Published = Option<std::result::Result<NodeList, String>>;

/// The Node watch. Dropping it stops the watch.
pub struct KubeSource {
    published: watch::Receiver<Published>,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for KubeSource {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl KubeSource {
    /// Connect with `config` and start watching Nodes in the background (on the current
    /// tokio runtime).
    pub fn start(config: kube::Config, health: Arc<SourceHealth>) -> Result<Self> {
        Self::start_probing(config, health, PROBE_EVERY)
    }

    fn start_probing(
        config: kube::Config,
        health: Arc<SourceHealth>,
        probe_every: Duration,
    ) -> Result<Self> {
        let client = kube::Client::try_from(config)?;
        let (tx, published) = watch::channel(None);
        let shared = Arc::new(Shared {
            health,
            lost: Mutex::new(None),
        });
        let task = tokio::spawn(watch_nodes(client, tx, shared.clone(), probe_every));
        Ok(KubeSource {
            published,
            shared,
            task,
        })
    }

    /// Wait for the first full list to give node `name` pod CIDRs (a node registered by
    /// its kubelet gets them from the controller-manager a moment later), calling
    /// `waiting` with why it is still waiting whenever that changes.
    pub async fn pod_cidrs_of(
        &self,
        name: &str,
        mut waiting: impl FnMut(String),
    ) -> Vec<IpNetwork> {
        let mut published = self.published.clone();
        let (mut said, mut logged) = (String::new(), String::new());
        loop {
            let why = match &*published.borrow_and_update() {
                Some(Ok(list)) => match list.get(name) {
                    Some(node) if !node.pod_cidrs.is_empty() => return node.pod_cidrs.clone(),
                    Some(_) => format!(
                        "waiting for node {name}'s pod CIDRs (spec.podCIDRs, assigned by the controller-manager)"
                    ),
                    None => format!("waiting for node {name} to be in the Kubernetes node list"),
                },
                Some(Err(e)) => format!("waiting for a usable Kubernetes node list: {e}"),
                None => WAITING_FOR_FIRST_LIST.to_string(),
            };
            if why != logged {
                tracing::info!(why, "built-in IPAM waits for this node's pod CIDRs");
                logged = why.clone();
            }
            // With what keeps the news away, if anything (its age changes each time).
            let why = match self.trouble() {
                Some(trouble) if trouble != why => format!("{why}; {trouble}"),
                _ => why,
            };
            if why != said {
                waiting(why.clone());
                said = why;
            }
            // Woken by a new list, or after a while to refresh the reason (the API
            // connection's state is not part of the list). A watch that ended sends
            // nothing more; then only the reason is refreshed.
            if let Ok(Err(_)) = tokio::time::timeout(PROBE_EVERY, published.changed()).await {
                tokio::time::sleep(PROBE_EVERY).await;
            }
        }
    }
}

impl NodeSource for KubeSource {
    fn describe(&self) -> String {
        "kubernetes Node watch".to_string()
    }

    fn poll(&mut self) -> Option<std::result::Result<NodeList, String>> {
        if !self.published.has_changed().unwrap_or(false) {
            return None;
        }
        self.published.borrow_and_update().clone()
    }

    fn trouble(&self) -> Option<String> {
        let (synced, known) = match &*self.published.borrow() {
            None => (false, None),
            Some(Ok(list)) => (true, Some(list.nodes.len())),
            // Why the list is unusable reaches the route loop through `poll`.
            Some(Err(_)) => (true, None),
        };
        let lost = self.shared.lost();
        let Some(lost) = lost.as_ref() else {
            return (!synced).then(|| WAITING_FOR_FIRST_LIST.to_string());
        };
        let kept = match known {
            Some(n) => format!("keeping the last known {n} nodes"),
            None => "no usable node list yet".to_string(),
        };
        Some(format!(
            "API connection lost since {} ({} s): {} ({kept})",
            lost.since,
            lost.at.elapsed().as_secs(),
            lost.error
        ))
    }
}

/// Trim what the agent never reads from each Node before the store keeps it: a node's
/// image list and managed fields are most of its size.
fn slim(node: &mut KubeNode) {
    node.metadata.managed_fields = None;
    node.metadata.annotations = None;
    if let Some(status) = node.status.as_mut() {
        status.images = None;
    }
}

/// The watch: keep a reflector store of every Node and publish its mapped list after
/// the first full list (`InitDone`) and every change after it. Runs until dropped.
async fn watch_nodes(
    client: kube::Client,
    tx: watch::Sender<Published>,
    shared: Arc<Shared>,
    probe_every: Duration,
) {
    let api: Api<KubeNode> = Api::all(client);
    let (store, writer) = reflector::store();
    // "Any" lets the API server answer the (re-)list from its watch cache instead of
    // etcd: every node's agent lists, and the watch that follows catches up anyway.
    let config = watcher::Config::default().any_semantic();
    let stream = watcher(api.clone(), config)
        .modify(slim)
        .default_backoff()
        .reflect(writer);
    let mut stream = std::pin::pin!(stream);
    let mut probe = tokio::time::interval(probe_every);
    let mut said: Vec<String> = Vec::new();
    loop {
        tokio::select! {
            item = stream.next() => match item {
                Some(Ok(event)) => {
                    shared.succeeded();
                    match event {
                        // The store swapped in a full list, or changed by one Node.
                        watcher::Event::InitDone
                        | watcher::Event::Apply(_)
                        | watcher::Event::Delete(_) => publish(&store, &tx, &mut said),
                        // A re-list in progress: the store keeps the old list until
                        // InitDone, and so do we.
                        watcher::Event::Init | watcher::Event::InitApply(_) => {}
                    }
                }
                Some(Err(e)) => shared.failed(e.to_string()),
                None => {
                    tracing::error!("the Kubernetes Node watch ended; no more node updates");
                    shared.failed("the watch ended".to_string());
                    return;
                }
            },
            _ = probe.tick(), if !shared.health.connected() => {
                if api.list_metadata(&ListParams::default().limit(1)).await.is_ok() {
                    shared.succeeded();
                }
            }
        }
    }
}

fn publish(store: &Store<KubeNode>, tx: &watch::Sender<Published>, said: &mut Vec<String>) {
    let nodes = store.state();
    let (list, problems) = map_nodes(nodes.iter().map(|n| n.as_ref()));
    // Node status changes every few seconds somewhere in a cluster; say each problem
    // once, when the set of them changes.
    if problems != *said {
        for problem in &problems {
            tracing::warn!(problem, "Kubernetes Node left partly unrouted");
        }
        *said = problems;
    }
    tx.send_if_modified(|published| {
        let new = Some(list);
        if *published == new {
            return false;
        }
        *published = new;
        true
    });
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn kube_node(
        name: &str,
        pod_cidr: Option<&str>,
        pod_cidrs: Option<&[&str]>,
        addresses: &[(&str, &str)],
    ) -> KubeNode {
        KubeNode {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: pod_cidr.map(str::to_string),
                pod_cidrs: pod_cidrs.map(|c| c.iter().map(|s| s.to_string()).collect()),
                ..NodeSpec::default()
            }),
            status: Some(NodeStatus {
                addresses: Some(
                    addresses
                        .iter()
                        .map(|(type_, address)| NodeAddress {
                            type_: type_.to_string(),
                            address: address.to_string(),
                        })
                        .collect(),
                ),
                ..NodeStatus::default()
            }),
        }
    }

    fn parsed<T: std::str::FromStr>(items: &[&str]) -> Vec<T>
    where
        T::Err: std::fmt::Debug,
    {
        items.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn dual_stack_node_maps_internal_ips_and_pod_cidrs() {
        let node = kube_node(
            "node-a",
            Some("10.244.1.0/24"),
            Some(&["10.244.1.0/24", "fd00:244:1::/64"]),
            &[
                ("Hostname", "node-a"),
                ("ExternalIP", "203.0.113.7"),
                ("InternalIP", "192.168.50.1"),
                ("InternalIP", "fd00:50::1"),
            ],
        );
        let (mapped, problems) = map_node(&node);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            mapped,
            Node {
                name: "node-a".into(),
                addresses: parsed(&["192.168.50.1", "fd00:50::1"]),
                pod_cidrs: parsed(&["10.244.1.0/24", "fd00:244:1::/64"]),
            }
        );
    }

    #[test]
    fn pod_cidr_alone_is_used_when_pod_cidrs_is_absent_or_empty() {
        for cidrs in [None, Some(&[][..])] {
            let node = kube_node(
                "old",
                Some("10.244.7.0/24"),
                cidrs,
                &[("InternalIP", "10.0.0.7")],
            );
            assert_eq!(map_node(&node).0.pod_cidrs, parsed(&["10.244.7.0/24"]));
        }
    }

    #[test]
    fn a_node_without_pod_cidr_or_status_is_listed_with_none() {
        let mut node = kube_node("new", None, None, &[]);
        node.status = None;
        let (mapped, problems) = map_node(&node);
        assert!(problems.is_empty());
        assert_eq!(mapped.name, "new");
        assert!(mapped.pod_cidrs.is_empty() && mapped.addresses.is_empty());
        node.spec = None;
        assert!(map_node(&node).0.pod_cidrs.is_empty());
    }

    #[test]
    fn bad_values_are_left_out_and_named() {
        let node = kube_node(
            "odd",
            None,
            Some(&["10.244.9.5/24", "nonsense", "10.244.9.0/24"]),
            &[("InternalIP", "not-an-ip"), ("InternalIP", "10.0.0.9")],
        );
        let (mapped, problems) = map_node(&node);
        // Host bits are cleared (and the duplicate that leaves is dropped).
        assert_eq!(mapped.pod_cidrs, parsed(&["10.244.9.0/24"]));
        assert_eq!(mapped.addresses, parsed::<IpAddr>(&["10.0.0.9"]));
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("nonsense") && problems[0].contains("node odd"));
        assert!(problems[1].contains("not-an-ip"));
    }

    #[test]
    fn the_list_is_sorted_and_checked() {
        let b = kube_node(
            "b",
            Some("10.244.2.0/24"),
            None,
            &[("InternalIP", "10.0.0.2")],
        );
        let a = kube_node(
            "a",
            Some("10.244.1.0/24"),
            None,
            &[("InternalIP", "10.0.0.1")],
        );
        let (list, problems) = map_nodes([&b, &a]);
        assert!(problems.is_empty());
        let names: Vec<String> = list.unwrap().nodes.into_iter().map(|n| n.name).collect();
        assert_eq!(names, ["a", "b"]);

        let clash = kube_node("c", Some("10.244.0.0/16"), None, &[]);
        let err = map_nodes([&a, &b, &clash]).0.unwrap_err();
        assert!(err.contains("node c") && err.contains("overlaps"), "{err}");

        let mut unnamed = kube_node("x", None, None, &[]);
        unnamed.metadata.name = None;
        let (list, problems) = map_nodes([&a, &unnamed]);
        assert_eq!(list.unwrap().nodes.len(), 1);
        assert_eq!(problems.len(), 1);
    }

    /// The list the route loop gets is the node file's, for the same cluster: the
    /// routes it derives are the same.
    #[test]
    fn routes_from_nodes_match_the_node_file() {
        let a = kube_node(
            "node-a",
            None,
            Some(&["10.244.1.0/24", "fd00:244:1::/64"]),
            &[("InternalIP", "192.168.50.1"), ("InternalIP", "fd00:50::1")],
        );
        let b = kube_node(
            "node-b",
            None,
            Some(&["10.244.2.0/24", "fd00:244:2::/64"]),
            &[("InternalIP", "192.168.50.2"), ("InternalIP", "fd00:50::2")],
        );
        let from_kube = map_nodes([&a, &b]).0.unwrap();
        let from_file = super::super::file::parse(
            Path::new("nodes.yaml"),
            "nodes:\n  - name: node-a\n    addresses: [192.168.50.1, \"fd00:50::1\"]\n    podCIDRs: [10.244.1.0/24, \"fd00:244:1::/64\"]\n  - name: node-b\n    addresses: [192.168.50.2, \"fd00:50::2\"]\n    podCIDRs: [10.244.2.0/24, \"fd00:244:2::/64\"]\n",
        )
        .unwrap();
        assert_eq!(from_kube, from_file);
    }

    /// A stand-in for the API server's Node endpoints, just enough for a watcher: a
    /// list, and watches that stream the changes made after it. `set_up(false)` drops
    /// every watch and every new connection, as a dead API server would.
    struct FakeApi {
        addr: std::net::SocketAddr,
        state: Arc<Mutex<FakeState>>,
        events: tokio::sync::broadcast::Sender<String>,
        up: watch::Sender<bool>,
        task: tokio::task::JoinHandle<()>,
    }

    struct FakeState {
        nodes: std::collections::BTreeMap<String, KubeNode>,
        version: u64,
        /// Every event with its version: a watch from a resource version replays what
        /// came after it, as the API server does.
        history: Vec<(u64, String)>,
    }

    impl Drop for FakeApi {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    impl FakeApi {
        async fn start(nodes: Vec<KubeNode>) -> FakeApi {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let state = Arc::new(Mutex::new(FakeState {
                nodes: Default::default(),
                version: 1,
                history: Vec::new(),
            }));
            let (events, _) = tokio::sync::broadcast::channel(64);
            let (up, _) = watch::channel(true);
            let task = tokio::spawn(serve_fake(
                listener,
                state.clone(),
                events.clone(),
                up.subscribe(),
            ));
            let api = FakeApi {
                addr,
                state,
                events,
                up,
                task,
            };
            for node in nodes {
                api.apply(node);
            }
            api
        }

        fn config(&self) -> kube::Config {
            kube::Config::new(format!("http://{}", self.addr).parse().unwrap())
        }

        fn apply(&self, mut node: KubeNode) {
            let mut state = self.state.lock().unwrap();
            state.version += 1;
            node.metadata.resource_version = Some(state.version.to_string());
            let name = node.metadata.name.clone().unwrap();
            let kind = match state.nodes.insert(name, node.clone()) {
                Some(_) => "MODIFIED",
                None => "ADDED",
            };
            let event = serde_json::json!({"type": kind, "object": node}).to_string();
            let version = state.version;
            state.history.push((version, event.clone()));
            let _ = self.events.send(event);
        }

        fn delete(&self, name: &str) {
            let mut state = self.state.lock().unwrap();
            state.version += 1;
            let mut node = state.nodes.remove(name).unwrap();
            node.metadata.resource_version = Some(state.version.to_string());
            let event = serde_json::json!({"type": "DELETED", "object": node}).to_string();
            let version = state.version;
            state.history.push((version, event.clone()));
            let _ = self.events.send(event);
        }

        fn set_up(&self, up: bool) {
            self.up.send_replace(up);
        }
    }

    async fn serve_fake(
        listener: tokio::net::TcpListener,
        state: Arc<Mutex<FakeState>>,
        events: tokio::sync::broadcast::Sender<String>,
        up: watch::Receiver<bool>,
    ) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        loop {
            let (mut conn, _) = listener.accept().await.unwrap();
            if !*up.borrow() {
                continue; // dropped: the connection closes unanswered
            }
            let (state, events, mut up) = (state.clone(), events.clone(), up.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let target = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                if !target.starts_with("/api/v1/nodes") {
                    let _ = conn
                        .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        .await;
                    return;
                }
                if target.contains("watch=true") || target.contains("watch=1") {
                    // Changes after the resource version asked for, until the server
                    // goes down; the body ends with the connection.
                    let since: u64 = target
                        .split(['?', '&'])
                        .find_map(|p| p.strip_prefix("resourceVersion="))
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    let (missed, mut events) = {
                        let state = state.lock().unwrap();
                        let missed: Vec<String> = state
                            .history
                            .iter()
                            .filter(|(v, _)| *v > since)
                            .map(|(_, e)| format!("{e}\n"))
                            .collect();
                        (missed.concat(), events.subscribe())
                    };
                    let header = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n";
                    if conn
                        .write_all(format!("{header}{missed}").as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                    loop {
                        tokio::select! {
                            event = events.recv() => {
                                let Ok(event) = event else { return };
                                if conn.write_all(format!("{event}\n").as_bytes()).await.is_err() {
                                    return;
                                }
                            }
                            _ = async { up.wait_for(|up| !*up).await.map(|_| ()) } => return,
                        }
                    }
                }
                let body = {
                    let state = state.lock().unwrap();
                    serde_json::json!({
                        "apiVersion": "v1",
                        "kind": "NodeList",
                        "metadata": {"resourceVersion": state.version.to_string()},
                        "items": state.nodes.values().collect::<Vec<_>>(),
                    })
                    .to_string()
                };
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(reply.as_bytes()).await;
            });
        }
    }

    /// Poll `source` (as the route loop does) until `done` holds for what it says.
    async fn until<T>(
        source: &mut KubeSource,
        what: &str,
        mut done: impl FnMut(&mut KubeSource) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(out) = done(source) {
                return out;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; trouble: {:?}",
                source.trouble()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn names(list: &NodeList) -> Vec<(String, Vec<String>)> {
        list.nodes
            .iter()
            .map(|n| {
                (
                    n.name.clone(),
                    n.pod_cidrs.iter().map(|c| c.to_string()).collect(),
                )
            })
            .collect()
    }

    /// The source against a live (fake) API server: nothing before the first full
    /// list; then every change; the last list kept, and the loss visible, while the
    /// server is down; recovery noticed; this node's pod CIDRs awaited.
    #[tokio::test]
    async fn the_watch_follows_the_api_server_and_survives_its_loss() {
        let a = kube_node("node-a", None, None, &[("InternalIP", "10.0.0.1")]);
        let b = kube_node(
            "node-b",
            Some("10.244.2.0/24"),
            None,
            &[("InternalIP", "10.0.0.2")],
        );
        let api = FakeApi::start(vec![a.clone(), b.clone()]).await;
        let health = Arc::new(SourceHealth::default());
        let mut source =
            KubeSource::start_probing(api.config(), health.clone(), Duration::from_millis(50))
                .unwrap();

        let list = until(&mut source, "the first list", |s| s.poll())
            .await
            .unwrap();
        assert_eq!(
            names(&list),
            [
                ("node-a".into(), vec![]),
                ("node-b".into(), vec!["10.244.2.0/24".into()])
            ]
        );
        assert!(source.trouble().is_none(), "{:?}", source.trouble());

        // node-a has no pod CIDR yet: built-in IPAM waits for it.
        let mut waited = Vec::new();
        let pools = {
            let wait = source.pod_cidrs_of("node-a", |why| waited.push(why));
            tokio::pin!(wait);
            assert!(
                tokio::time::timeout(Duration::from_millis(200), &mut wait)
                    .await
                    .is_err(),
                "pod CIDRs before node-a has any"
            );
            let mut with_cidr = a.clone();
            with_cidr.spec.as_mut().unwrap().pod_cidrs = Some(vec!["10.244.1.0/24".into()]);
            api.apply(with_cidr);
            tokio::time::timeout(Duration::from_secs(20), wait)
                .await
                .unwrap()
        };
        assert_eq!(pools, parsed::<IpNetwork>(&["10.244.1.0/24"]));
        assert!(
            waited.iter().any(|w| w.contains("node-a's pod CIDRs")),
            "{waited:?}"
        );
        let list = until(&mut source, "node-a's CIDR", |s| s.poll())
            .await
            .unwrap();
        assert_eq!(list.get("node-a").unwrap().pod_cidrs.len(), 1);

        // A change and a deletion arrive as whole new lists; an identical update is
        // no news.
        api.apply(b.clone());
        let mut moved = b.clone();
        moved.spec.as_mut().unwrap().pod_cidr = Some("10.244.3.0/24".into());
        api.apply(moved);
        let list = until(&mut source, "node-b's new CIDR", |s| s.poll())
            .await
            .unwrap();
        assert_eq!(
            names(&list)[1],
            ("node-b".into(), vec!["10.244.3.0/24".into()])
        );
        api.delete("node-b");
        let list = until(&mut source, "node-b's deletion", |s| s.poll())
            .await
            .unwrap();
        assert_eq!(list.nodes.len(), 1);
        assert!(source.poll().is_none(), "no change, no news");

        // The server goes away: the list stays, the loss shows.
        api.set_up(false);
        let trouble = until(&mut source, "the loss", |s| {
            s.trouble().filter(|t| t.contains("keeping"))
        })
        .await;
        assert!(
            trouble.contains("API connection lost since")
                && trouble.contains("keeping the last known 1 nodes"),
            "{trouble}"
        );
        assert!(!health.connected() && health.errors() >= 1);
        assert!(source.poll().is_none(), "the last list stays in force");

        // Back: noticed without any change to announce it; later changes arrive.
        api.set_up(true);
        until(&mut source, "the recovery", |s| {
            s.trouble().is_none().then_some(())
        })
        .await;
        assert!(health.connected());
        api.apply(b);
        let list = until(&mut source, "node-b's return", |s| s.poll())
            .await
            .unwrap();
        assert_eq!(list.nodes.len(), 2);
    }
}
