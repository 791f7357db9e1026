//! The nodes of the cluster, as a node source tells them: names, addresses, pod CIDRs.
//! One trait, two sources: the static file (`file`) for standalone hosts and, in a
//! cluster, Kubernetes Node objects (`kube`). From the list the agent derives what it
//! must route to the other nodes (`remote_routes`).

pub mod file;
// The fuzz tier compiles this module from its source (cargo-fuzz sets `fuzzing`),
// without the agent's dependencies; the Kubernetes source is not what it fuzzes.
#[cfg(not(fuzzing))]
pub mod kube;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ipnetwork::IpNetwork;

/// One node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub addresses: Vec<IpAddr>,
    pub pod_cidrs: Vec<IpNetwork>,
}

/// Every node, this one included.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeList {
    pub nodes: Vec<Node>,
}

/// Where the node list comes from. `poll` is called periodically; it returns a new list
/// when there is one, an error when the source changed into something unusable (the
/// caller keeps the last good list), and `None` when nothing changed.
pub trait NodeSource {
    fn describe(&self) -> String;
    fn poll(&mut self) -> Option<Result<NodeList, String>>;
    /// What stands between the source and fresh news, while something does (a lost API
    /// connection): `status` shows it beside the last list applied.
    fn trouble(&self) -> Option<String> {
        None
    }
}

/// Whether the node source can currently be read, for `/metrics`: `connected` is 1
/// while the last attempt to read it worked, `errors` counts the attempts that failed
/// (an unusable node file, a failed API request or watch).
#[derive(Debug)]
pub struct SourceHealth {
    connected: AtomicBool,
    errors: AtomicU64,
}

impl Default for SourceHealth {
    fn default() -> Self {
        SourceHealth {
            // Nothing has failed yet; a source that cannot even start is an error at
            // start-up rather than a gauge.
            connected: AtomicBool::new(true),
            errors: AtomicU64::new(0),
        }
    }
}

impl SourceHealth {
    pub fn succeeded(&self) {
        self.connected.store(true, Ordering::Relaxed);
    }

    pub fn failed(&self) {
        self.connected.store(false, Ordering::Relaxed);
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
}

/// The static node file as a source.
pub struct FileSource {
    watch: file::FileWatch,
    health: std::sync::Arc<SourceHealth>,
}

impl FileSource {
    pub fn new(path: &std::path::Path, health: std::sync::Arc<SourceHealth>) -> Self {
        FileSource {
            watch: file::FileWatch::new(path),
            health,
        }
    }
}

impl NodeSource for FileSource {
    fn describe(&self) -> String {
        format!("node file {}", self.watch.path().display())
    }

    fn poll(&mut self) -> Option<Result<NodeList, String>> {
        if !self.watch.changed() {
            return None;
        }
        let loaded = file::load(self.watch.path()).map_err(|e| e.to_string());
        match &loaded {
            Ok(_) => self.health.succeeded(),
            Err(_) => self.health.failed(),
        }
        Some(loaded)
    }
}

impl NodeList {
    pub fn get(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Names are unique and no two pod CIDRs (of one node or of two) overlap: either
    /// would make a packet's owner ambiguous. The error names the later offending field.
    pub fn check(&self) -> Result<(), (String, String)> {
        let mut seen_names = BTreeMap::new();
        let mut seen_cidrs: Vec<(IpNetwork, &str)> = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            if let Some(first) = seen_names.insert(node.name.as_str(), i) {
                return Err((
                    format!("nodes[{i}].name"),
                    format!("{:?} is also nodes[{first}]", node.name),
                ));
            }
            for (j, cidr) in node.pod_cidrs.iter().enumerate() {
                if let Some((other, owner)) = seen_cidrs.iter().find(|(c, _)| overlap(*c, *cidr)) {
                    return Err((
                        format!("nodes[{i}].podCIDRs[{j}]"),
                        format!("{cidr} overlaps {other} of node {owner}"),
                    ));
                }
                seen_cidrs.push((*cidr, &node.name));
            }
        }
        Ok(())
    }
}

fn overlap(a: IpNetwork, b: IpNetwork) -> bool {
    a.is_ipv4() == b.is_ipv4() && (a.contains(b.network()) || b.contains(a.network()))
}

/// One route to another node's pods.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RemoteRoute {
    pub cidr: IpNetwork,
    /// The node's address of the CIDR's family: the next hop.
    pub via: IpAddr,
    pub node: String,
}

/// What `this` node routes: every other node's pod CIDRs via that node's first address
/// of the same family. A CIDR whose node has no address of its family cannot be routed;
/// it is left out and named in the second list.
pub fn remote_routes(list: &NodeList, this: &str) -> (Vec<RemoteRoute>, Vec<String>) {
    let mut routes = Vec::new();
    let mut unroutable = Vec::new();
    for node in list.nodes.iter().filter(|n| n.name != this) {
        for cidr in &node.pod_cidrs {
            match node
                .addresses
                .iter()
                .find(|a| a.is_ipv4() == cidr.is_ipv4())
            {
                Some(via) => routes.push(RemoteRoute {
                    cidr: *cidr,
                    via: *via,
                    node: node.name.clone(),
                }),
                None => unroutable.push(format!(
                    "{cidr} of node {}: the node has no {} address",
                    node.name,
                    if cidr.is_ipv4() { "IPv4" } else { "IPv6" }
                )),
            }
        }
    }
    routes.sort();
    (routes, unroutable)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, addresses: &[&str], cidrs: &[&str]) -> Node {
        Node {
            name: name.into(),
            addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
            pod_cidrs: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn routes_go_to_every_other_node_by_family() {
        let list = NodeList {
            nodes: vec![
                node(
                    "a",
                    &["192.168.50.1", "fd00:50::1"],
                    &["10.244.1.0/24", "fd00:244:1::/64"],
                ),
                node(
                    "b",
                    &["192.168.50.2", "fd00:50::2"],
                    &["10.244.2.0/24", "fd00:244:2::/64"],
                ),
                node(
                    "c",
                    &["192.168.50.3"],
                    &["10.244.3.0/24", "fd00:244:3::/64"],
                ),
            ],
        };
        list.check().unwrap();
        let (routes, unroutable) = remote_routes(&list, "a");
        let got: Vec<(String, String)> = routes
            .iter()
            .map(|r| (r.cidr.to_string(), r.via.to_string()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("10.244.2.0/24".into(), "192.168.50.2".into()),
                ("10.244.3.0/24".into(), "192.168.50.3".into()),
                ("fd00:244:2::/64".into(), "fd00:50::2".into()),
            ]
        );
        assert_eq!(unroutable.len(), 1, "{unroutable:?}");
        assert!(unroutable[0].contains("fd00:244:3::/64"));
    }

    #[test]
    fn overlaps_and_duplicates_are_refused() {
        let dup = NodeList {
            nodes: vec![node("a", &[], &[]), node("a", &[], &[])],
        };
        assert_eq!(dup.check().unwrap_err().0, "nodes[1].name");
        let within = NodeList {
            nodes: vec![node("a", &[], &["10.0.0.0/8", "10.1.0.0/16"])],
        };
        assert_eq!(within.check().unwrap_err().0, "nodes[0].podCIDRs[1]");
        let families = NodeList {
            nodes: vec![
                node("a", &[], &["0.0.0.0/0"]),
                node("b", &[], &["fd00::/64"]),
            ],
        };
        families.check().unwrap();
    }
}
