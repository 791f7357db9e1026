//! Which path packets take, proven by the datapath counters: pod ↔ pod and wire → pod on
//! the fast path, spoofed sources dropped, nothing left behind after DEL. On the host
//! kernel the pods are on the veth fallback; the VM tier runs this same file against
//! netkit (`expected_mode`).

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};

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

fn tcp_round_trip(from: &Pod, to: &Pod, to_ip: &str) {
    let listener = to
        .ns
        .run(|| TcpListener::bind((to_ip, 0)).expect("bind in pod"));
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        let mut buf = [0u8; 5];
        conn.read_exact(&mut buf).expect("read");
        conn.write_all(&buf).expect("echo");
    });
    let addr = format!(
        "{}:{port}",
        if to_ip.contains(':') {
            format!("[{to_ip}]")
        } else {
            to_ip.to_string()
        }
    );
    let echoed = from.ns.run(move || {
        let mut conn = TcpStream::connect(&addr).expect("connect from pod");
        conn.write_all(b"hello").unwrap();
        let mut buf = [0u8; 5];
        conn.read_exact(&mut buf).unwrap();
        buf
    });
    server.join().unwrap();
    assert_eq!(&echoed, b"hello");
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
