//! The multi-node rig: N "nodes", each a network namespace with an uplink `eth0` plugged
//! into one Linux bridge that lives in a "wire" namespace, with node addresses (IPv4 and
//! IPv6 ULA), forwarding on, a pod CIDR pair, a private bpffs pin root, a private agent
//! socket and state directory. Pods are further namespaces tracked by their node. Dropping
//! the [`Cluster`] stops agents and removes everything.
//!
//! Everything lives in the cluster's own namespaces, never in the host's, so clusters of
//! parallel tests cannot see each other even if their subnets overlap; the per-cluster
//! "slot" that picks the subnets only keeps captures and logs apart.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::netns::{BpfDir, Netns, veth_pair, wait_until};

/// At most this many nodes per cluster (the pod-CIDR plan gives each cluster 16 /24s).
pub const MAX_NODES: usize = 16;
/// The bridge in the wire namespace.
pub const BRIDGE: &str = "br0";
/// Each node's uplink, inside the node namespace.
pub const UPLINK: &str = "eth0";
/// Prefix lengths of the node network (all nodes share one subnet on the bridge).
pub const NODE_PREFIX_V4: u8 = 24;
pub const NODE_PREFIX_V6: u8 = 64;

/// A network prefix, e.g. a node's pod CIDR. Displays as `addr/len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr<A> {
    pub addr: A,
    pub len: u8,
}

impl<A: fmt::Display> fmt::Display for Cidr<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl Cidr<Ipv4Addr> {
    /// The `n`th address of the prefix (`n = 1` is the first host address).
    pub fn host(&self, n: u32) -> Ipv4Addr {
        assert!(
            self.len == 0 || u64::from(n) < 1u64 << (32 - self.len),
            "host {n} is outside {self}"
        );
        Ipv4Addr::from(u32::from(self.addr) + n)
    }
}

impl Cidr<Ipv6Addr> {
    /// The `n`th address of the prefix.
    pub fn host(&self, n: u64) -> Ipv6Addr {
        assert!(
            self.len <= 64 || u128::from(n) < 1u128 << (128 - self.len),
            "host {n} is outside {self}"
        );
        Ipv6Addr::from(u128::from(self.addr) + u128::from(n))
    }
}

/// The address plan of one cluster: slot `s` (0..4096) and node `i` get
/// - node network 198.18.0.0/15 (RFC 2544): `198.(18 + s/256 % 2).(s % 256).(i+1)/24`,
///   and `fd00:6e6b:1:<s>::(i+1)/64`;
/// - pod CIDRs in 10.0.0.0/8 with `k = 16 s + i`: `10.(k / 256).(k % 256).0/24`, and
///   `fd00:6e6b:2:<k>::/64`.
#[derive(Clone, Copy, Debug)]
struct Plan {
    slot: u32,
}

impl Plan {
    fn next() -> Plan {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        // Spread processes apart, consecutive clusters of one process next to each other.
        Plan {
            slot: (std::process::id().wrapping_mul(97).wrapping_add(n)) % 4096,
        }
    }

    fn node_v4(&self, i: usize) -> Ipv4Addr {
        let s = self.slot % 512;
        Ipv4Addr::new(198, 18 + (s / 256) as u8, (s % 256) as u8, i as u8 + 1)
    }

    fn node_v6(&self, i: usize) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0x6e6b, 1, self.slot as u16, 0, 0, 0, i as u16 + 1)
    }

    fn pod_v4(&self, i: usize) -> Cidr<Ipv4Addr> {
        let k = self.slot * 16 + i as u32;
        Cidr {
            addr: Ipv4Addr::new(10, (k / 256) as u8, (k % 256) as u8, 0),
            len: 24,
        }
    }

    fn pod_v6(&self, i: usize) -> Cidr<Ipv6Addr> {
        let k = self.slot * 16 + i as u32;
        Cidr {
            addr: Ipv6Addr::new(0xfd00, 0x6e6b, 2, k as u16, 0, 0, 0, 0),
            len: 64,
        }
    }
}

/// N nodes on one bridge. Fields drop in order: nodes (agents, pods, pins, namespaces)
/// before the wire.
pub struct Cluster {
    pub nodes: Vec<Node>,
    /// The namespace holding the bridge [`BRIDGE`] and the wire ends `p<i>` of the uplinks.
    pub wire: Netns,
}

impl Cluster {
    /// Build `n` nodes (1..=16) on a fresh bridge.
    pub fn new(n: usize) -> Cluster {
        assert!(
            (1..=MAX_NODES).contains(&n),
            "a cluster has 1 to {MAX_NODES} nodes, not {n}"
        );
        let plan = Plan::next();
        let wire = Netns::new("wire");
        // No multicast snooping: without a querier on the wire it only adds ways for the
        // first neighbour solicitations to get lost.
        wire.ip(&format!("link add {BRIDGE} type bridge mcast_snooping 0"));
        wire.ip(&format!("link set {BRIDGE} up"));
        let mut cluster = Cluster {
            nodes: Vec::with_capacity(n),
            wire,
        };
        for i in 0..n {
            let node = Node::new(&cluster.wire, plan, i);
            cluster.nodes.push(node);
        }
        cluster
    }

    /// Names of every namespace of the cluster (wire, nodes, pods), e.g. to check after
    /// Drop that none is left.
    pub fn netns_names(&self) -> Vec<String> {
        let mut names = vec![self.wire.name().to_owned()];
        for node in &self.nodes {
            names.push(node.netns.name().to_owned());
            let pods = node.pods.lock().expect("pod list poisoned");
            names.extend(pods.iter().map(|p| p.name().to_owned()));
        }
        names
    }
}

/// One node. Drop stops the agent, then drops the node's pods, its pins, its namespace and
/// its directories, in that order.
pub struct Node {
    /// The agent (or any long-running child) of this node: stopped on Drop.
    pub agent: Option<Child>,
    /// Pods made by [`Node::pod_netns`]; dropped before the node itself.
    pods: Mutex<Vec<Arc<Netns>>>,
    /// Private pin root under /sys/fs/bpf; removed before the namespace goes, so nothing
    /// pinned can keep the node's objects alive.
    pub bpffs: BpfDir,
    pub netns: Netns,
    /// `node0`, `node1`, … (the index in [`Cluster::nodes`]).
    pub name: String,
    pub index: usize,
    /// The uplink's name inside the node namespace ([`UPLINK`]).
    pub uplink: String,
    /// Node addresses on the uplink, with prefix lengths [`NODE_PREFIX_V4`] / [`NODE_PREFIX_V6`].
    pub ipv4: Ipv4Addr,
    pub ipv6: Ipv6Addr,
    pub pod_cidr_v4: Cidr<Ipv4Addr>,
    pub pod_cidr_v6: Cidr<Ipv6Addr>,
    /// Private unix socket path for the agent (not created by the rig).
    pub socket: PathBuf,
    /// Private, empty state directory for the agent.
    pub state_dir: PathBuf,
    /// Holds `socket` and `state_dir`; removed last.
    _base: tempfile::TempDir,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.name)
            .field("netns", &self.netns.name())
            .field("ipv4", &self.ipv4)
            .field("ipv6", &self.ipv6)
            .finish_non_exhaustive()
    }
}

impl Node {
    fn new(wire: &Netns, plan: Plan, index: usize) -> Node {
        let name = format!("node{index}");
        let netns = Netns::new(&format!("n{index}"));
        netns.run(|| {
            // Before the uplink exists, so it is created with these defaults: addresses are
            // usable at once instead of after ~1 s of duplicate address detection.
            for (key, value) in [
                ("ipv6/conf/default/accept_dad", "0"),
                ("ipv6/conf/all/accept_dad", "0"),
                ("ipv4/ip_forward", "1"),
                ("ipv6/conf/all/forwarding", "1"),
            ] {
                // /proc/sys/net shows the namespace of the thread that opens it.
                let path = format!("/proc/sys/net/{key}");
                std::fs::write(&path, value)
                    .unwrap_or_else(|e| panic!("cannot write {value} to {path}: {e}"));
            }
        });
        let port = format!("p{index}");
        // Both ends live in namespaces that die with the cluster: nothing to keep.
        let _ = veth_pair((wire, port.as_str()), (&netns, UPLINK));
        wire.ip(&format!("link set {port} master {BRIDGE}"));
        let (ipv4, ipv6) = (plan.node_v4(index), plan.node_v6(index));
        netns.ip(&format!("addr add {ipv4}/{NODE_PREFIX_V4} dev {UPLINK}"));
        netns.ip(&format!(
            "-6 addr add {ipv6}/{NODE_PREFIX_V6} dev {UPLINK} nodad"
        ));

        let base = tempfile::Builder::new()
            .prefix(&format!("nkt-{name}-"))
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir for {name}: {e}"));
        let state_dir = base.path().join("state");
        std::fs::create_dir(&state_dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", state_dir.display()));
        Node {
            agent: None,
            pods: Mutex::new(Vec::new()),
            bpffs: BpfDir::new(&format!("n{index}")),
            netns,
            name,
            index,
            uplink: UPLINK.to_owned(),
            ipv4,
            ipv6,
            pod_cidr_v4: plan.pod_v4(index),
            pod_cidr_v6: plan.pod_v6(index),
            socket: base.path().join("agent.sock"),
            state_dir,
            _base: base,
        }
    }

    /// A Command running inside the node namespace (real /sys/fs/bpf, see
    /// [`Netns::command`]).
    pub fn spawn(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        self.netns.command(program)
    }

    /// A new pod namespace on this node (`nkt-n<i>-<name>-…`), dropped with the node at
    /// the latest. No links: wiring it is the CNI plugin's job.
    pub fn pod_netns(&self, name: &str) -> Arc<Netns> {
        let pod = Arc::new(Netns::new(&format!("n{}-{name}", self.index)));
        self.pods
            .lock()
            .expect("pod list poisoned")
            .push(Arc::clone(&pod));
        pod
    }

    /// Stop the agent, if any: SIGTERM, then SIGKILL after 3 s. Safe to call twice.
    pub fn stop_agent(&mut self) {
        let Some(mut child) = self.agent.take() else {
            return;
        };
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        let pid = Pid::from_raw(child.id() as i32);
        // A graceful stop first, so the agent's own shutdown path is what tests exercise.
        let _ = kill(pid, Signal::SIGTERM);
        let exited = wait_until(Duration::from_secs(3), || {
            matches!(child.try_wait(), Ok(Some(_)))
        });
        if !exited {
            eprintln!("{}: agent ignored SIGTERM for 3 s, killing it", self.name);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop_agent();
        // Pods go before the node so no pod outlives the node it is wired to, unless a test
        // still holds its Arc.
        // A poisoned list (a panic while pushing) still holds pods to drop.
        self.pods
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clear();
        // The remaining fields drop in declaration order: bpffs, netns, then the temp dir.
    }
}
