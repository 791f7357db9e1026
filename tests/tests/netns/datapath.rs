//! Which path packets take, proven by the datapath counters: pod ↔ pod and wire → pod on
//! the fast path, spoofed sources dropped, nothing left behind after DEL. On the host
//! kernel the pods are on the veth fallback; the VM tier runs this same file against
//! netkit (`expected_mode`).

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use netkit_tests::netns::{Netns, unique_ifname, veth_pair};
use netkit_tests::pods::{Node, Pod, pod_ip};
use serde_json::{Value, json};

/// A node whose uplink is a veth to an "outside" namespace routing the pod CIDR to it.
struct Site {
    node: Node,
    outside: Netns,
    conf: Value,
}

fn site(tag: &str) -> Site {
    let uplink = unique_ifname("up");
    // The agent starts without an uplink and is restarted onto it once the wire exists
    // (which also exercises adoption of its pins).
    let node = Node::with_agent_args(tag, &["--no-uplink"]);
    let outside = Netns::new(tag);
    let far = unique_ifname("out");
    drop(veth_pair(
        (&node.ns, uplink.as_str()),
        (&outside, far.as_str()),
    ));
    node.ns.ip(&format!("addr add 198.18.0.1/24 dev {uplink}"));
    outside.ip(&format!("addr add 198.18.0.2/24 dev {far}"));
    outside.ip(&format!(
        "route add {} via 198.18.0.1",
        netkit_tests::pods::POD_CIDR4
    ));
    let mut node = node;
    node.agent_args = vec!["--uplink".into(), uplink];
    node.restart_agent();
    let conf = node.conf(json!({}));
    Site {
        node,
        outside,
        conf,
    }
}

/// The link mode `mode: auto` must pick: netkit inside the VM (its kernel has it), the
/// veth fallback on the host kernel (it has not).
fn expected_mode() -> &'static str {
    if std::env::var("NETKIT_VM_GUEST").as_deref() == Ok("1") {
        "netkit"
    } else {
        "veth"
    }
}

fn assert_mode(node: &Node) {
    for e in node.agent().endpoints() {
        assert_eq!(
            e["mode"],
            expected_mode(),
            "endpoint wired in the wrong mode: {e}"
        );
    }
}

/// `ip:port` with IPv6 bracketed.
fn socket_addr(ip: &str, port: u16) -> SocketAddr {
    let text = if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    };
    text.parse().expect("socket address")
}

/// Echo five bytes over TCP: a server in `to` listening on `listen`, a client in `from`
/// connecting to `connect` (the same address, or one the node translates to it).
/// Returns whether the echo came back.
fn tcp_echo(from: &Pod, to: &Pod, listen: SocketAddr, connect: SocketAddr) -> bool {
    let listener = to
        .ns
        .run(move || TcpListener::bind(listen).expect("bind in pod"));
    listener.set_nonblocking(false).unwrap();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        let mut buf = [0u8; 5];
        conn.read_exact(&mut buf).expect("read");
        conn.write_all(&buf).expect("echo");
    });
    let echoed = from.ns.run(move || {
        let mut conn = TcpStream::connect_timeout(&connect, Duration::from_secs(5)).ok()?;
        conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        conn.write_all(b"hello").ok()?;
        let mut buf = [0u8; 5];
        conn.read_exact(&mut buf).ok()?;
        Some(buf)
    });
    if echoed.is_some() {
        server.join().unwrap();
    }
    echoed == Some(*b"hello")
}

/// A TCP exchange from a pod to a server on the node (through the host stack).
fn tcp_round_trip_to_node(node: &Node, from: &Pod) {
    let listen = socket_addr(netkit_tests::pods::NODE_IP, free_port());
    let listener = node
        .ns
        .run(move || TcpListener::bind(listen).expect("bind on the node"));
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        let mut buf = [0u8; 5];
        conn.read_exact(&mut buf).expect("read");
    });
    from.ns.run(move || {
        let mut conn = TcpStream::connect_timeout(&listen, Duration::from_secs(5))
            .expect("connect to the node");
        conn.write_all(b"hello").unwrap();
    });
    server.join().unwrap();
}

fn tcp_round_trip(from: &Pod, to: &Pod, to_ip: &str) {
    let port = free_port();
    let addr = socket_addr(to_ip, port);
    assert!(tcp_echo(from, to, addr, addr), "no TCP echo from {addr}");
}

/// A port number unlikely to be in use in a fresh pod namespace.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(20_000);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Can this machine do NAT with iptables (the VM image carries neither the tool nor the
/// netfilter modules)? Says why not when it cannot.
fn iptables_nat(ns: &Netns) -> bool {
    match ns
        .command("iptables")
        .args(["-t", "nat", "-L", "-n"])
        .output()
    {
        Ok(out) if out.status.success() => true,
        Ok(out) => {
            println!(
                "skip: iptables NAT unusable here: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            false
        }
        Err(e) => {
            println!("skip: no iptables here ({e}); apt-get install iptables");
            false
        }
    }
}

#[test]
fn pod_to_pod_icmp_and_tcp_take_the_fast_path() {
    let s = site("dpp");
    let (a, b) = (Pod::new("dppa"), Pod::new("dppb"));
    let _ra = s.node.add(&a, &s.conf);
    let rb = s.node.add(&b, &s.conf);
    assert_mode(&s.node);
    let agent = s.node.agent();
    let before = agent.counter("redirect_peer") + agent.counter("redirect");
    for v6 in [false, true] {
        assert!(
            a.ns.ping(pod_ip(&rb, v6)),
            "a cannot reach b (v6: {v6}); counters: {:?}",
            s.node.agent().stats()
        );
        tcp_round_trip(&a, &b, &pod_ip(&rb, v6));
    }
    let after = agent.counter("redirect_peer") + agent.counter("redirect");
    // The node reaches the pods through the host stack and its pod routes.
    assert!(
        s.node.ns.ping(pod_ip(&rb, false)),
        "the node cannot reach b"
    );
    assert!(
        b.ns.ping(netkit_tests::pods::NODE_IP),
        "b cannot reach the node"
    );
    // Two pings' request and reply at least, plus the TCP handshakes and data both ways.
    assert!(
        after >= before + 10,
        "pod-to-pod traffic was not short-cut: {before} -> {after}"
    );
}

#[test]
fn traffic_from_the_wire_is_redirected_into_the_pod() {
    let s = site("dpw");
    let a = Pod::new("dpwa");
    let ra = s.node.add(&a, &s.conf);
    assert_mode(&s.node);
    let agent = s.node.agent();
    let before = agent.counter("redirect_peer");
    assert!(
        s.outside.ping(pod_ip(&ra, false)),
        "outside cannot reach the pod"
    );
    let after = agent.counter("redirect_peer");
    assert!(
        after > before,
        "uplink traffic did not go straight into the pod: {before} -> {after}"
    );
}

#[test]
fn spoofed_sources_are_dropped_and_counted() {
    let s = site("dps");
    let (a, b) = (Pod::new("dpsa"), Pod::new("dpsb"));
    s.node.add(&a, &s.conf);
    let rb = s.node.add(&b, &s.conf);
    let agent = s.node.agent();
    let b_ip = pod_ip(&rb, false);
    // A pod claiming an address nobody owns, then claiming its neighbour's.
    for (claimed, target) in [
        ("10.61.0.250".to_string(), b_ip.clone()),
        (b_ip.clone(), "198.18.0.2".to_string()),
    ] {
        a.ns.ip(&format!("addr add {claimed}/32 dev eth0"));
        let before = agent.counter("drop_spoof");
        let out =
            a.ns.command("ping")
                .args(["-c", "3", "-i", "0.2", "-W", "1", "-I", &claimed, &target])
                .output()
                .unwrap();
        assert!(
            !out.status.success(),
            "spoofed ping from {claimed} got through"
        );
        let after = agent.counter("drop_spoof");
        assert!(
            after >= before + 3,
            "spoofed packets from {claimed} not counted: {before} -> {after}"
        );
        a.ns.ip(&format!("addr del {claimed}/32 dev eth0"));
    }
}

#[test]
fn del_leaves_no_link_no_address_no_endpoint_no_pin() {
    let s = site("dpd");
    let a = Pod::new("dpda");
    s.node.add(&a, &s.conf);
    let pins = s.node.dirs.bpffs.path().join("endpoints");
    assert_eq!(
        std::fs::read_dir(&pins).unwrap().count(),
        1,
        "endpoint not pinned"
    );
    // A flow through the host stack leaves a remembered socket that DEL must clear.
    tcp_round_trip_to_node(&s.node, &a);
    let status = s.node.agent().cli(&["status", "--json"]);
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert!(
        status["stack_flows"].as_u64().unwrap() > 0,
        "no stack flow remembered: {status}"
    );
    s.node.del(&a.container, "eth0", Some(a.ns.path()), &s.conf);
    assert!(s.node.plugin_links().is_empty(), "host link left behind");
    assert!(s.node.endpoints().is_empty(), "agent endpoint left behind");
    assert_eq!(
        std::fs::read_dir(&pins).unwrap().count(),
        0,
        "pins left behind"
    );
    let status = s.node.agent().cli(&["status", "--json"]);
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(
        status["mapped_addresses"], 0,
        "endpoint map entries left behind: {status}"
    );
    assert_eq!(
        status["stack_flows"], 0,
        "stack flows of the deleted pod left behind: {status}"
    );
    assert_eq!(
        a.links(),
        vec!["lo".to_string()],
        "pod interface left behind"
    );
    // The address is free again: a new pod gets an address (the pool has room) and the
    // agent's registry holds only it.
    let b = Pod::new("dpdb");
    s.node.add(&b, &s.conf);
    assert_eq!(s.node.endpoints().len(), 1);
}

#[test]
fn pods_keep_their_fast_path_while_the_agent_restarts() {
    let mut s = site("dpr");
    let (a, b) = (Pod::new("dpra"), Pod::new("dprb"));
    s.node.add(&a, &s.conf);
    let rb = s.node.add(&b, &s.conf);
    let b_ip = pod_ip(&rb, false);
    assert!(a.ns.ping(&b_ip));

    s.node.stop_agent();
    // Pinned links and maps keep forwarding with no agent at all.
    let out =
        a.ns.command("ping")
            .args(["-c", "5", "-i", "0.2", "-W", "1", &b_ip])
            .output()
            .unwrap();
    assert!(
        out.status.success(),
        "pod traffic stopped with the agent: {out:?}"
    );

    s.node.restart_agent();
    let agent = s.node.agent();
    assert_eq!(
        s.node.endpoints().len(),
        2,
        "the restarted agent lost its endpoints"
    );
    let before = agent.counter("redirect_peer") + agent.counter("redirect");
    assert!(a.ns.ping(&b_ip), "no traffic after the restart");
    let after = agent.counter("redirect_peer") + agent.counter("redirect");
    assert!(
        after > before,
        "traffic left the fast path after the restart: {before} -> {after}"
    );
    let pins = s.node.dirs.bpffs.path().join("endpoints");
    assert_eq!(
        std::fs::read_dir(&pins).unwrap().count(),
        2,
        "pins not adopted"
    );
}

#[test]
fn replies_from_a_service_backend_go_back_through_the_stack() {
    let s = site("dpsv");
    if !iptables_nat(&s.node.ns) {
        return;
    }
    let (a, b) = (Pod::new("dpsva"), Pod::new("dpsvb"));
    s.node.add(&a, &s.conf);
    let rb = s.node.add(&b, &s.conf);
    let b_ip = pod_ip(&rb, false);
    // A ClusterIP as kube-proxy programs one: DNAT in the node's PREROUTING.
    let service = socket_addr("10.96.0.10", 80);
    let backend = socket_addr(&b_ip, 8080);
    let out = s
        .node
        .ns
        .command("iptables")
        .args([
            "-t",
            "nat",
            "-A",
            "PREROUTING",
            "-d",
            "10.96.0.10",
            "-p",
            "tcp",
            "--dport",
            "80",
        ])
        .args(["-j", "DNAT", "--to-destination", &backend.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "iptables DNAT: {out:?}");
    let agent = s.node.agent();
    let before = agent.counter("pass_stack_flow");
    // B's replies are for a local pod, but only the stack can turn B:8080 back into the
    // service address A connected to: short-cutting them would break the connection.
    assert!(
        tcp_echo(&a, &b, backend, service),
        "a connection through the service failed; counters: {:?}",
        agent.stats()
    );
    assert!(
        agent.counter("pass_stack_flow") > before,
        "replies were not handed to the stack"
    );
    // Direct pod-to-pod traffic still takes the fast path.
    tcp_round_trip(&a, &b, &b_ip);
}
