//! Which path packets take, proven by the datapath counters: pod ↔ pod and wire → pod on
//! the fast path, spoofed sources dropped, nothing left behind after DEL. On the host
//! kernel the pods are on the veth fallback; the VM tier runs this same file against
//! netkit (`expected_mode`).

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use netkit_tests::netns::{Netns, unique_ifname, veth_pair};
use netkit_tests::pods::{Node, Pod, pod_ip};
use netkit_tests::traffic;
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

fn tcp_echo(from: &Pod, to: &Pod, listen: SocketAddr, connect: SocketAddr) -> bool {
    traffic::tcp_echo(&from.ns, &to.ns, listen, connect)
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

fn dnat(node: &Node, vip: &str, port: u16, backend: SocketAddr) {
    traffic::dnat(node.ns.command("nft"), vip, port, backend);
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

/// IPv4-only pods (built-in IPAM with an IPv4 pool only): their host ends have IPv6 off
/// (no IPv6 routes or FIB walks per pod start), and nothing else changes: pod ↔ pod on the
/// fast path, node ↔ pod through the stack.
#[test]
fn ipv4_only_pods_have_ipv6_off_on_their_host_ends_and_keep_every_path() {
    let node = Node::ipv4_only("dp4");
    let conf = node.conf(json!({}));
    let (a, b) = (Pod::new("dp4a"), Pod::new("dp4b"));
    let ra = node.add(&a, &conf);
    let rb = node.add(&b, &conf);
    assert_mode(&node);
    for result in [&ra, &rb] {
        let ips = result["ips"].as_array().unwrap();
        assert_eq!(ips.len(), 1, "one IPv4 address: {result}");
        let host_end = result["interfaces"][0]["name"].as_str().unwrap();
        let disabled = node.ns.sh(&format!(
            "cat /proc/sys/net/ipv6/conf/{host_end}/disable_ipv6"
        ));
        assert_eq!(disabled.stdout, b"1\n", "{host_end}");
    }
    let agent = node.agent();
    let before = agent.counter("redirect_peer") + agent.counter("redirect");
    assert!(a.ns.ping(pod_ip(&rb, false)), "a cannot reach b");
    tcp_round_trip(&a, &b, &pod_ip(&rb, false));
    let after = agent.counter("redirect_peer") + agent.counter("redirect");
    assert!(
        after >= before + 5,
        "pod-to-pod traffic was not short-cut: {before} -> {after}"
    );
    assert!(node.ns.ping(pod_ip(&ra, false)), "the node cannot reach a");
    assert!(
        a.ns.ping(netkit_tests::pods::NODE_IP),
        "a cannot reach the node"
    );
}

/// A peer on the wire that is not a pod (a node, a NodePort client the stack
/// masqueraded, anything outside) gets the pod's replies through the stack, so its
/// packets must take the stack too: skipping it one way, conntrack would see only the
/// replies, call them INVALID, and kube-proxy's `ct state invalid drop` would drop them.
/// The rule is installed here, as kube-proxy installs it.
#[test]
fn traffic_from_outside_takes_the_stack_both_ways() {
    let s = site("dpw");
    let a = Pod::new("dpwa");
    let ra = s.node.add(&a, &s.conf);
    assert_mode(&s.node);
    traffic::drop_invalid_forwarded(s.node.ns.command("nft"));
    let agent = s.node.agent();
    let before = agent.counter("redirect_peer");
    let ip = pod_ip(&ra, false);
    assert!(s.outside.ping(&ip), "outside cannot reach the pod");
    let port = free_port();
    let addr = socket_addr(&ip, port);
    assert!(
        traffic::tcp_echo(&s.outside, &a.ns, addr, addr),
        "no TCP echo from the pod to outside with invalid-state drops on; counters: {:?}",
        s.node.agent().stats()
    );
    let after = agent.counter("redirect_peer");
    assert_eq!(
        after, before,
        "traffic from outside skipped the stack into the pod"
    );
}

#[test]
fn spoofed_sources_are_dropped_and_counted() {
    let s = site("dps");
    let (a, b) = (Pod::new("dpsa"), Pod::new("dpsb"));
    s.node.add(&a, &s.conf);
    let rb = s.node.add(&b, &s.conf);
    let agent = s.node.agent();
    let (b_ip, b_ip6) = (pod_ip(&rb, false), pod_ip(&rb, true));
    // A pod claiming an address nobody owns, then claiming its neighbour's: both
    // families.
    for (claimed, target) in [
        ("10.61.0.250".to_string(), b_ip.clone()),
        (b_ip.clone(), "198.18.0.2".to_string()),
        ("fd00:61::fa".to_string(), b_ip6.clone()),
        (b_ip6.clone(), "fd00:99::1".to_string()),
    ] {
        let prefix = if claimed.contains(':') { 128 } else { 32 };
        a.ns.ip(&format!("addr add {claimed}/{prefix} dev eth0 nodad"));
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
        a.ns.ip(&format!("addr del {claimed}/{prefix} dev eth0"));
    }
}

/// What a pod must not reach on its node: the agent's socket is root-only (0600), and the
/// metrics port, bound to the node's loopback as documented, is not reachable from a pod.
#[test]
fn a_pod_reaches_neither_the_agent_socket_nor_the_metrics_port() {
    use std::os::unix::fs::PermissionsExt as _;
    let mut node = Node::new("dpsec");
    node.agent_args
        .extend(["--metrics-addr".to_string(), "127.0.0.1:9964".to_string()]);
    node.restart_agent();
    let conf = node.conf(json!({}));
    let a = Pod::new("dpseca");
    node.add(&a, &conf);
    let mode = std::fs::metadata(node.dirs.socket())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "agent socket mode {mode:o}");
    // The node itself answers on its loopback…
    let node_side = node.ns.run(|| {
        TcpStream::connect_timeout(&"127.0.0.1:9964".parse().unwrap(), Duration::from_secs(2))
            .is_ok()
    });
    assert!(node_side, "the metrics port is not up on the node");
    // …a pod reaches nothing there: not through its own loopback, not via the node's
    // addresses.
    for target in ["127.0.0.1:9964", "192.0.2.1:9964"] {
        let reached = a.ns.run(move || {
            TcpStream::connect_timeout(&target.parse().unwrap(), Duration::from_secs(2)).is_ok()
        });
        assert!(!reached, "a pod reached the metrics port at {target}");
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

/// The counters that mean "handed to the stack because of translation (or doubt)".
fn stack_passes(node: &Node) -> u64 {
    let agent = node.agent();
    agent.counter("pass_translated") + agent.counter("pass_unverified")
}

fn fast_path(node: &Node) -> u64 {
    let agent = node.agent();
    agent.counter("redirect_peer") + agent.counter("redirect")
}

#[test]
fn replies_from_a_service_backend_go_back_through_the_stack() {
    let s = site("dpsv");
    let (a, b) = (Pod::new("dpsva"), Pod::new("dpsvb"));
    s.node.add(&a, &s.conf);
    let rb = s.node.add(&b, &s.conf);
    let b_ip = pod_ip(&rb, false);
    // A ClusterIP, and a NodePort on the node's wire address, as kube-proxy programs
    // them: DNAT in the node's PREROUTING, no masquerade.
    dnat(&s.node, "10.96.0.10", 80, socket_addr(&b_ip, 8080));
    dnat(&s.node, "198.18.0.1", 30080, socket_addr(&b_ip, 8081));
    let agent = s.node.agent();
    for (service, backend) in [
        (socket_addr("10.96.0.10", 80), socket_addr(&b_ip, 8080)),
        (socket_addr("198.18.0.1", 30080), socket_addr(&b_ip, 8081)),
    ] {
        let before = agent.counter("pass_translated");
        // B's replies are for a local pod, but only the stack can turn B's address back
        // into the one A connected to: short-cutting them would break the connection.
        assert!(
            tcp_echo(&a, &b, backend, service),
            "a connection through {service} failed; counters: {:?}",
            agent.stats()
        );
        assert!(
            agent.counter("pass_translated") > before,
            "replies through {service} were not handed to the stack: {:?}",
            agent.stats()
        );
    }
    // Direct pod-to-pod traffic, even to the very port behind the Service, keeps the
    // fast path both ways: conntrack never saw it.
    let before = (fast_path(&s.node), stack_passes(&s.node));
    assert!(tcp_echo(
        &a,
        &b,
        socket_addr(&b_ip, 8080),
        socket_addr(&b_ip, 8080)
    ));
    let after = (fast_path(&s.node), stack_passes(&s.node));
    assert!(
        after.0 >= before.0 + 6,
        "direct TCP left the fast path: {before:?} -> {after:?}"
    );
    assert_eq!(
        after.1,
        before.1,
        "direct TCP was handed to the stack: {:?}",
        agent.stats()
    );
}

/// Defect 1 of the reliability issue: one connection from the node to a pod's server
/// port (a kubelet probe) must not push later pod-to-pod traffic to that port onto the
/// stack.
#[test]
fn a_probed_server_port_keeps_the_fast_path() {
    let s = site("dppr");
    let (a, b) = (Pod::new("dppra"), Pod::new("dpprb"));
    s.node.add(&a, &s.conf);
    let rb = s.node.add(&b, &s.conf);
    // Both kernels this runs on can be asked: the host's conntrack is built in, the VM's
    // a module (its kfuncs bound through module BTF).
    let status = s.node.agent().cli(&["status", "--json"]);
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["translation_check"], "conntrack", "{status}");
    let server = socket_addr(&pod_ip(&rb, false), 8080);
    let listener =
        b.ns.run(move || TcpListener::bind(server).expect("bind in pod"));
    const ROUNDS: usize = 200;
    let echo = std::thread::spawn(move || {
        // The probe: accepted, one byte read, closed.
        let (mut probe, _) = listener.accept().expect("accept the probe");
        let mut byte = [0u8; 1];
        probe.read_exact(&mut byte).expect("probe byte");
        drop(probe);
        let (mut conn, _) = listener.accept().expect("accept pod A");
        let mut buf = [0u8; 8];
        for _ in 0..ROUNDS {
            conn.read_exact(&mut buf).expect("request");
            conn.write_all(&buf).expect("response");
        }
    });
    s.node.ns.run(move || {
        let mut probe = TcpStream::connect_timeout(&server, Duration::from_secs(5)).expect("probe");
        probe.write_all(b"p").expect("probe write");
    });
    let agent = s.node.agent();
    let before = (fast_path(&s.node), stack_passes(&s.node));
    a.ns.run(move || {
        let mut conn =
            TcpStream::connect_timeout(&server, Duration::from_secs(5)).expect("connect");
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 8];
        for i in 0..ROUNDS {
            conn.write_all(&(i as u64).to_be_bytes()).expect("request");
            conn.read_exact(&mut buf).expect("response");
            assert_eq!(buf, (i as u64).to_be_bytes());
        }
    });
    echo.join().unwrap();
    let after = (fast_path(&s.node), stack_passes(&s.node));
    println!(
        "probed port: fast path {} packets, stack {} packets",
        after.0 - before.0,
        after.1 - before.1
    );
    assert!(
        after.0 >= before.0 + 2 * ROUNDS as u64,
        "request/response rounds left the fast path: {before:?} -> {after:?}; {:?}",
        agent.stats()
    );
    assert_eq!(
        after.1,
        before.1,
        "pod-to-pod packets were handed to the stack: {:?}",
        agent.stats()
    );
}

/// Defect 2 of the reliability issue: an idle connection through a Service must survive
/// any number of unrelated flows; the decision cannot be evicted.
#[test]
fn an_idle_service_connection_survives_flow_churn() {
    let s = site("dpch");
    let (a, b) = (Pod::new("dpcha"), Pod::new("dpchb"));
    s.node.add(&a, &s.conf);
    let rb = s.node.add(&b, &s.conf);
    let backend = socket_addr(&pod_ip(&rb, false), 8080);
    dnat(&s.node, "10.96.0.20", 80, backend);
    let service = socket_addr("10.96.0.20", 80);
    let listener =
        b.ns.run(move || TcpListener::bind(backend).expect("bind in pod"));
    let (pushed_tx, pushed_rx) = std::sync::mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        let mut buf = [0u8; 5];
        conn.read_exact(&mut buf).expect("hello");
        conn.write_all(&buf).expect("echo");
        // Idle until the churn is over, then push.
        pushed_rx.recv().expect("go");
        conn.write_all(b"pushed").expect("push");
    });
    let mut conn = a.ns.run(move || {
        let mut conn =
            TcpStream::connect_timeout(&service, Duration::from_secs(5)).expect("connect");
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        conn.write_all(b"hello").unwrap();
        let mut buf = [0u8; 5];
        conn.read_exact(&mut buf).expect("echo through the service");
        conn
    });
    // The churn: FLOWS distinct UDP flows of three packets each from pod A to an address
    // outside the node, each a conntrack entry of its own on the node.
    const FLOWS: u16 = 20_000;
    a.ns.run(move || {
        let sock = std::net::UdpSocket::bind("0.0.0.0:0").expect("udp socket");
        for port in 0..FLOWS {
            let to = socket_addr("198.18.0.2", 10_000 + port);
            for _ in 0..3 {
                // The far end has no listener; what matters is the flow passing the node.
                let _ = sock.send_to(b"x", to);
            }
        }
    });
    let before = s.node.agent().counter("pass_translated");
    pushed_tx.send(()).unwrap();
    let mut buf = [0u8; 6];
    conn.read_exact(&mut buf)
        .expect("the pushed data never arrived");
    assert_eq!(&buf, b"pushed");
    server.join().unwrap();
    assert!(
        s.node.agent().counter("pass_translated") > before,
        "the push was not handed to the stack: {:?}",
        s.node.agent().stats()
    );
}

/// Where conntrack cannot be asked (`--translation-check stack-only`, as on a kernel
/// without the kfuncs), everything still works: pod-bound TCP/UDP takes the stack and is
/// counted as unverified; ICMP keeps the fast path.
#[test]
fn without_conntrack_pod_traffic_is_correct_through_the_stack() {
    let mut s = site("dpnc");
    s.node
        .agent_args
        .extend(["--translation-check".into(), "stack-only".into()]);
    s.node.restart_agent();
    let status = s.node.agent().cli(&["status", "--json"]);
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert!(
        status["translation_check"]
            .as_str()
            .unwrap()
            .starts_with("stack-only"),
        "{status}"
    );
    let (a, b) = (Pod::new("dpnca"), Pod::new("dpncb"));
    s.node.add(&a, &s.conf);
    let rb = s.node.add(&b, &s.conf);
    let b_ip = pod_ip(&rb, false);
    let before = (fast_path(&s.node), stack_passes(&s.node));
    tcp_round_trip(&a, &b, &b_ip);
    let after = (fast_path(&s.node), stack_passes(&s.node));
    assert!(
        after.1 >= before.1 + 6,
        "TCP did not take the stack: {before:?} -> {after:?}"
    );
    assert!(a.ns.ping(&b_ip), "no ping");
    assert!(fast_path(&s.node) > after.0, "ICMP left the fast path");
    dnat(&s.node, "10.96.0.30", 80, socket_addr(&b_ip, 8080));
    assert!(tcp_echo(
        &a,
        &b,
        socket_addr(&b_ip, 8080),
        socket_addr("10.96.0.30", 80)
    ));
}
