//! netkit's peer default-drop, observed: a pod whose programs the agent has not attached
//! yet cannot send anything; once the agent has programmed the endpoint, it can.

use std::path::Path;
use std::time::Duration;

use netkit_api::{AddEndpoint, EndpointId, IpConfig, LinkMode, Request, Response};
use netkit_netlink::link::Pair;
use netkit_netlink::{Kernel as _, RtKernel};
use netkit_tests::netns::{Netns, unique_ifname};
use netkit_tests::pods::{NODE_IP, Node};
use netlink_packet_route::link::{NetkitMode, NetkitPolicy};

use crate::in_vm;

const POD_IP: &str = "10.61.0.77";

/// Create an L3 netkit pair as the plugin does: primary `primary` in `node` (policy
/// pass), peer `eth0` straight into `pod` (policy drop).
fn create_pair(node: &Path, primary: &str, pod: &Path) {
    let mut kernel = RtKernel::in_netns(node).expect("netlink socket");
    kernel.open_pod_netns(pod).expect("open pod netns");
    let pair = Pair {
        name: primary,
        peer: "eth0",
        peer_netns: kernel.pod_netns_fd(),
        attributes: &[],
    };
    kernel
        .add_link(pair.netkit(NetkitMode::L3, NetkitPolicy::Pass, NetkitPolicy::Drop))
        .expect("create netkit pair");
}

/// Packets the primary has received (JSON `ip -s` of the node namespace).
fn rx_packets(node: &Netns, dev: &str) -> u64 {
    let out = node
        .command("ip")
        .args(["-j", "-s", "link", "show", dev])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j output");
    v[0]["stats64"]["rx"]["packets"]
        .as_u64()
        .expect("rx packets")
}

#[test]
fn a_pod_cannot_send_until_the_agent_has_attached_its_programs() {
    if !in_vm() {
        return;
    }
    let node = Node::new("pdrop");
    let pod = Netns::new("pdropp");
    let primary = unique_ifname("nk");
    create_pair(node.ns.path(), &primary, pod.path());
    node.ns.ip(&format!("link set {primary} up"));
    node.ns.ip(&format!("route add {POD_IP}/32 dev {primary}"));
    pod.ip(&format!("addr add {POD_IP}/32 dev eth0"));
    pod.ip("link set eth0 up");
    pod.ip("route add 169.254.1.1/32 dev eth0");
    pod.ip("route add default via 169.254.1.1 dev eth0");

    // No program attached: the peer's default policy drops everything the pod sends.
    let before = rx_packets(&node.ns, &primary);
    assert!(
        !pod.ping(NODE_IP),
        "the pod reached the node before any program was attached"
    );
    assert_eq!(
        rx_packets(&node.ns, &primary),
        before,
        "packets crossed the pair before attach"
    );

    // The agent programs the endpoint (the plugin's hand-off, done by hand here).
    let ifindex = node
        .ns
        .run(|| nix::net::if_::if_nametoindex(primary.as_str()).unwrap());
    let request = Request::AddEndpoint(AddEndpoint {
        id: EndpointId {
            container_id: "peerdrop".into(),
            ifname: "eth0".into(),
        },
        netns: pod.path().display().to_string(),
        mode: LinkMode::Netkit,
        host_ifname: primary.clone(),
        host_ifindex: ifindex,
        pod_mac: None,
        host_mac: None,
        ips: vec![IpConfig {
            address: format!("{POD_IP}/32"),
            gateway: None,
        }],
    });
    let reply = netkit_api::call(
        node.dirs.socket().as_path(),
        &request,
        Duration::from_secs(30),
    )
    .expect("agent programs the endpoint");
    assert!(matches!(reply, Response::Endpoint(_)), "{reply:?}");

    let passed_before = node.agent().counter("pass");
    assert!(
        pod.ping(NODE_IP),
        "the pod cannot reach the node after its programs were attached; counters: {:?}; endpoints: {:?}",
        node.agent().stats(),
        node.agent().endpoints()
    );
    assert!(
        rx_packets(&node.ns, &primary) > before,
        "nothing crossed the pair after attach"
    );
    assert!(
        node.agent().counter("pass") > passed_before,
        "pod egress program did not run"
    );
}
