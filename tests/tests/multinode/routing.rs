//! Cross-node pod networking from a static node file: three nodes on one wire, two pods
//! each, an agent per node routing the others' pod CIDRs; every pod reaches every pod and
//! every node on the fast path; the node file drives routes, map entries and managed
//! neighbour entries, and only ours are ever touched.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use netkit_netlink::{Kernel as _, Ns, RtKernel};
use netkit_tests::bins;
use netkit_tests::multinode::{Cluster, Node, UPLINK};
use netkit_tests::netns::{Netns, wait_until};
use netkit_tests::pods::{Call, invoke, pod_ip};
use netkit_tests::traffic;
use serde_json::{Value, json};

/// Our route protocol (`agent/src/routing.rs`).
const RTPROT_NETKIT: &str = "197";

struct Pod {
    ns: Arc<Netns>,
    result: Value,
}

impl Pod {
    fn ip(&self, v6: bool) -> IpAddr {
        pod_ip(&self.result, v6).parse().unwrap()
    }
}

/// The node file for `nodes`, each with the addresses `addrs(node)`.
fn node_file(cluster: &Cluster, addrs: impl Fn(&Node) -> Vec<String>, skip: &[usize]) -> String {
    let nodes: Vec<Value> = cluster
        .nodes
        .iter()
        .filter(|n| !skip.contains(&n.index))
        .map(|n| {
            json!({
                "name": n.name,
                "addresses": addrs(n),
                "podCIDRs": [n.pod_cidr_v4.to_string(), n.pod_cidr_v6.to_string()],
            })
        })
        .collect();
    // JSON is YAML too; the YAML spelling is covered by the parser's unit tests.
    serde_json::to_string_pretty(&json!({ "nodes": nodes })).unwrap()
}

fn default_addrs(n: &Node) -> Vec<String> {
    vec![n.ipv4.to_string(), n.ipv6.to_string()]
}

/// Replace the node file atomically, as an operator's tooling would.
fn write_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn agent_cli(node: &Node, args: &[&str]) -> Output {
    Command::new(bins::agent())
        .args(args)
        .arg("--socket")
        .arg(&node.socket)
        .output()
        .unwrap()
}

fn status(node: &Node) -> Value {
    serde_json::from_slice(&agent_cli(node, &["status", "--json"]).stdout).unwrap_or(Value::Null)
}

fn counter(node: &Node, name: &str) -> u64 {
    let out = agent_cli(node, &["stats", "--json"]);
    let stats: Value = serde_json::from_slice(&out.stdout).unwrap();
    stats[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name}: {stats}"))
}

fn start_agent(node: &mut Node, file: &Path) {
    let log = node.state_dir.join("agent.log");
    let child = node
        .spawn(bins::agent())
        .arg("run")
        .arg("--socket")
        .arg(&node.socket)
        .arg("--bpffs-root")
        .arg(node.bpffs.path())
        .arg("--state-dir")
        .arg(&node.state_dir)
        .args(["--node-name", &node.name, "--nodes-file"])
        .arg(file)
        .args(["--uplink", UPLINK, "--log-file"])
        .arg(&log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    node.agent = Some(child);
    assert!(
        wait_until(Duration::from_secs(20), || status(node)["ready"] == true),
        "{}'s agent not ready:\n{}",
        node.name,
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

fn add_pod(node: &Node, name: &str) -> Pod {
    let ns = node.pod_netns(name);
    let container = format!(
        "{:0>64}",
        ns.name().replace(|c: char| !c.is_ascii_alphanumeric(), "")
    );
    let conf = json!({
        "cniVersion": "1.1.0",
        "name": "pods",
        "type": "netkit-cni",
        "agentSocket": node.socket,
        "stateDir": node.state_dir.join("cni"),
        "logFile": node.state_dir.join("cni.log"),
    });
    let call = Call {
        command: "ADD",
        container: &container,
        ifname: "eth0",
        netns: Some(ns.path()),
        cni_path: Some("/usr/lib/cni"),
    };
    let reply = invoke(&mut node.spawn(bins::cni()), call, &conf.to_string());
    assert!(reply.ok, "ADD on {} failed: {reply:?}", node.name);
    Pod {
        ns,
        result: reply.json,
    }
}

/// A TCP echo from `from` to a server in `to` at `addr:port`.
fn tcp_echo(from: &Netns, to: &Netns, addr: IpAddr, port: u16) -> bool {
    let sa = SocketAddr::new(addr, port);
    traffic::tcp_echo(from, to, sa, sa)
}

/// `(cidr, gateway)` of the node's routes under our protocol.
fn our_routes(node: &Node) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for family in ["-4", "-6"] {
        let text = node
            .netns
            .ip(&format!("{family} route show proto {RTPROT_NETKIT}"));
        for line in text.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            if let Some(via) = words.iter().position(|w| *w == "via") {
                out.insert((words[0].to_string(), words[via + 1].to_string()));
            }
        }
    }
    out
}

/// The node's managed + extern-learned neighbour entries, read back through netlink (a
/// socket made in the node's namespace; the test's own threads stay where they are).
fn managed_neighbours(node: &Node) -> BTreeSet<IpAddr> {
    let mut kernel = RtKernel::in_netns(node.netns.path()).unwrap();
    kernel
        .neighbour_entries(Ns::Host, None)
        .unwrap()
        .into_iter()
        .filter(|e| e.managed && e.extern_learned)
        .map(|e| e.ip)
        .collect()
}

#[test]
fn pods_on_three_nodes_reach_each_other_on_the_fast_path_and_follow_the_node_file() {
    let mut cluster = Cluster::new(3);
    let dir = tempfile::tempdir().unwrap();
    let file: PathBuf = dir.path().join("nodes.json");
    write_file(&file, &node_file(&cluster, default_addrs, &[]));
    for node in cluster.nodes.iter_mut() {
        start_agent(node, &file);
    }
    // Each node routes the two others' CIDRs, both families.
    for node in &cluster.nodes {
        assert!(
            wait_until(Duration::from_secs(10), || our_routes(node).len() == 4),
            "{}: routes {:?}; status {}",
            node.name,
            our_routes(node),
            status(node)
        );
        assert_eq!(status(node)["remote_routes"], 4, "{}", status(node));
    }
    let pods: Vec<Vec<Pod>> = cluster
        .nodes
        .iter()
        .map(|n| vec![add_pod(n, "a"), add_pod(n, "b")])
        .collect();

    let before: Vec<(u64, u64)> = cluster
        .nodes
        .iter()
        .map(|n| {
            (
                counter(n, "fib_ok") + counter(n, "redirect_neigh"),
                counter(n, "redirect_peer"),
            )
        })
        .collect();
    // Every pod reaches every other pod, both families, and every node.
    let mut port = 31_000;
    for (i, from_node) in pods.iter().enumerate() {
        for from in from_node {
            for (j, to_node) in pods.iter().enumerate() {
                for to in to_node {
                    if std::ptr::eq(from, to) {
                        continue;
                    }
                    for v6 in [false, true] {
                        assert!(
                            from.ns.ping(to.ip(v6)),
                            "pod on node{i} cannot ping pod on node{j} at {}",
                            to.ip(v6)
                        );
                    }
                    if i != j {
                        for v6 in [false, true] {
                            port += 1;
                            assert!(
                                tcp_echo(&from.ns, &to.ns, to.ip(v6), port),
                                "no TCP from node{i} to node{j} at {}",
                                to.ip(v6)
                            );
                        }
                    }
                }
            }
            for node in &cluster.nodes {
                assert!(
                    from.ns.ping(node.ipv4),
                    "pod on node{i} cannot reach {}",
                    node.name
                );
                assert!(
                    from.ns.ping(node.ipv6),
                    "pod on node{i} cannot reach {}",
                    node.name
                );
            }
        }
    }
    // The counters prove the path: routed by the sender's program, put into the pod by
    // the receiver's uplink program.
    for (node, (sent, received)) in cluster.nodes.iter().zip(before) {
        let sent_now = counter(node, "fib_ok") + counter(node, "redirect_neigh");
        let received_now = counter(node, "redirect_peer");
        assert!(
            sent_now >= sent + 20,
            "{}: cross-node traffic was not routed by the datapath: {sent} -> {sent_now}",
            node.name
        );
        assert!(
            received_now >= received + 20,
            "{}: cross-node traffic did not enter pods with redirect_peer: {received} -> {received_now}",
            node.name
        );
    }
    // A bulk transfer leaves the sender as GSO packets far larger than the wire's MTU;
    // the FIB lookup's MTU check must look at the segments they will be cut into, or the
    // whole stream goes to the stack (pass_fib, FRAG_NEEDED).
    let (sender, receiver) = (&pods[0][0], &pods[1][0]);
    let routed_before =
        counter(&cluster.nodes[0], "fib_ok") + counter(&cluster.nodes[0], "redirect_neigh");
    let pass_fib_before = counter(&cluster.nodes[0], "pass_fib");
    for v6 in [false, true] {
        port += 1;
        let to = SocketAddr::new(receiver.ip(v6), port);
        assert!(
            traffic::tcp_bulk(&sender.ns, &receiver.ns, to, to, 8 << 20),
            "the bulk transfer to {to} did not arrive whole"
        );
    }
    let routed = counter(&cluster.nodes[0], "fib_ok")
        + counter(&cluster.nodes[0], "redirect_neigh")
        - routed_before;
    assert_eq!(
        counter(&cluster.nodes[0], "pass_fib"),
        pass_fib_before,
        "packets of the bulk transfers went to the stack instead ({routed} routed)"
    );
    assert!(
        routed >= 20,
        "the bulk transfers were not routed by the datapath ({routed})"
    );

    // Managed, externally learned entries for the next hops.
    let node0 = &cluster.nodes[0];
    let hops: BTreeSet<IpAddr> = cluster.nodes[1..]
        .iter()
        .flat_map(|n| [IpAddr::V4(n.ipv4), IpAddr::V6(n.ipv6)])
        .collect();
    assert_eq!(
        managed_neighbours(node0),
        hops,
        "node0's managed neighbour entries"
    );

    // A Service on node0 whose backend is a pod on node1 (kube-proxy's DNAT, no
    // masquerade): the backend's replies arrive over the wire for a local pod, and only
    // node0's stack can turn the backend's address back into the Service's.
    let backend = &pods[1][0];
    let backend_addr = SocketAddr::new(backend.ip(false), 8080);
    traffic::dnat(node0.spawn("nft"), "10.96.7.7", 80, backend_addr);
    let translated_before = counter(node0, "pass_translated");
    let service: SocketAddr = "10.96.7.7:80".parse().unwrap();
    assert!(
        traffic::tcp_echo(&pods[0][0].ns, &backend.ns, backend_addr, service),
        "a connection to a Service with a remote backend failed"
    );
    assert!(
        counter(node0, "pass_translated") > translated_before,
        "the remote backend's replies were not handed to node0's stack"
    );

    // An agent crash and restart on node1 loses no cross-node packet.
    let target = pods[1][0].ip(false).to_string();
    let ping = pods[0][0]
        .ns
        .command("ping")
        .args(["-i", "0.005", "-c", "600", "-w", "15", "-q", &target])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    if let Some(mut agent) = cluster.nodes[1].agent.take() {
        agent.kill().unwrap();
        agent.wait().unwrap();
    }
    start_agent(&mut cluster.nodes[1], &file);
    let out = ping.wait_with_output().unwrap();
    let summary = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        summary.contains("600 packets transmitted, 600 received"),
        "cross-node packets lost while node1's agent restarted: {summary}"
    );
    let node0 = &cluster.nodes[0];

    // Foreign state on node0 that must survive everything below.
    node0.netns.ip(&format!(
        "route add 10.255.0.0/24 via {}",
        cluster.nodes[1].ipv4
    ));
    node0.netns.ip(&format!(
        "neigh replace 198.51.100.7 lladdr 02:00:00:00:00:07 dev {UPLINK} nud permanent"
    ));

    // An invalid file: refused, the previous state stays.
    let routes_before = our_routes(node0);
    write_file(
        &file,
        "nodes:\n  - name: node0\n    podCIDRs: [not-a-cidr]\n",
    );
    assert!(
        wait_until(Duration::from_secs(10), || {
            status(node0)["nodes"]
                .as_str()
                .is_some_and(|s| s.contains("podCIDRs[0]"))
        }),
        "the bad file was not reported: {}",
        status(node0)
    );
    assert_eq!(
        our_routes(node0),
        routes_before,
        "a bad file changed the routes"
    );
    assert!(
        pods[0][0].ns.ping(pods[1][0].ip(false)),
        "traffic broke on a bad file"
    );

    // node2 leaves: its routes, map entries and neighbour entries go.
    write_file(&file, &node_file(&cluster, default_addrs, &[2]));
    let node2 = &cluster.nodes[2];
    assert!(
        wait_until(Duration::from_secs(10), || our_routes(node0).len() == 2),
        "node2's routes stayed: {:?}",
        our_routes(node0)
    );
    assert!(
        wait_until(Duration::from_secs(10), || status(node0)["remote_routes"]
            == 2),
        "{}",
        status(node0)
    );
    let hops = managed_neighbours(node0);
    assert!(
        !hops.contains(&IpAddr::V4(node2.ipv4)) && !hops.contains(&IpAddr::V6(node2.ipv6)),
        "node2's neighbour entries stayed: {hops:?}"
    );
    assert!(
        node0.netns.ip("route show 10.255.0.0/24").contains("via"),
        "a foreign route was removed"
    );
    assert!(
        node0
            .netns
            .ip("neigh show 198.51.100.7")
            .contains("PERMANENT"),
        "a foreign neighbour entry was removed"
    );

    // node1's IPv4 address changes: node0's route to its pods moves with it.
    let node1 = &cluster.nodes[1];
    let new_v4 = std::net::Ipv4Addr::from(u32::from(node1.ipv4) + 100);
    node1
        .netns
        .ip(&format!("addr add {new_v4}/24 dev {UPLINK}"));
    let moved = |n: &Node| {
        if n.index == 1 {
            vec![new_v4.to_string(), n.ipv6.to_string()]
        } else {
            default_addrs(n)
        }
    };
    write_file(&file, &node_file(&cluster, moved, &[2]));
    let want = (node1.pod_cidr_v4.to_string(), new_v4.to_string());
    assert!(
        wait_until(Duration::from_secs(10), || our_routes(node0)
            .contains(&want)),
        "the route did not move: {:?}",
        our_routes(node0)
    );
    // The old address goes (its secondary, the new one, is promoted rather than deleted
    // with it), so the traffic below can only take the new one.
    node1.netns.run(|| {
        std::fs::write(
            format!("/proc/sys/net/ipv4/conf/{UPLINK}/promote_secondaries"),
            "1",
        )
        .unwrap()
    });
    node1
        .netns
        .ip(&format!("addr del {}/24 dev {UPLINK}", node1.ipv4));
    assert!(
        pods[0][0].ns.ping(pods[1][0].ip(false)),
        "no traffic to node1's pods via its new address"
    );
    cluster.nodes[2].stop_agent();
}
