//! The cluster rig itself: nodes reach each other over the bridge, and Drop leaves nothing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use netkit_tests::cmd;
use netkit_tests::multinode::{Cluster, UPLINK};
use netkit_tests::netns::{At, NETNS_DIR, unique_ifname, veth_pair, wait_until};

const TEARDOWN: Duration = Duration::from_secs(10);

fn host_has_link(name: &str) -> bool {
    At::Host.links().iter().any(|l| l == name)
}

#[test]
fn three_nodes_reach_each_other_and_leave_nothing_behind() {
    let cluster = Cluster::new(3);
    let pod = cluster.nodes[1].pod_netns("a");

    // Probes: a veth from the host into every namespace of the cluster. Their host ends can
    // only vanish when the kernel destroys those namespaces, so they prove the teardown.
    let mut probes = Vec::new();
    let mut places: Vec<At<'_>> = vec![At::Ns(&cluster.wire), At::from(&pod)];
    places.extend(cluster.nodes.iter().map(|n| At::Ns(&n.netns)));
    for place in places {
        let host_end = unique_ifname("nkt");
        let pair = veth_pair((At::Host, host_end.as_str()), (place, "probe"));
        probes.push((host_end, pair));
    }

    for a in &cluster.nodes {
        for b in &cluster.nodes {
            if a.index != b.index {
                assert!(
                    a.netns.ping(b.ipv4),
                    "{} cannot ping {} at {}",
                    a.name,
                    b.name,
                    b.ipv4
                );
                assert!(
                    a.netns.ping(b.ipv6),
                    "{} cannot ping {} at {}",
                    a.name,
                    b.name,
                    b.ipv6
                );
            }
        }
    }

    // Distinct pod CIDRs, and what a node's children see: its own links, the real bpffs.
    let mut cidrs: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| n.pod_cidr_v4.to_string())
        .collect();
    cidrs.extend(cluster.nodes.iter().map(|n| n.pod_cidr_v6.to_string()));
    cidrs.sort();
    cidrs.dedup();
    assert_eq!(cidrs.len(), 6, "pod CIDRs overlap: {cidrs:?}");
    let node = &cluster.nodes[0];
    let out = cmd::run(node.spawn("ip").args(["-o", "link"]));
    let links = String::from_utf8_lossy(&out.stdout);
    assert!(links.contains(&format!("{UPLINK}@")), "{links}");
    assert_eq!(
        links.lines().count(),
        3,
        "lo, eth0, probe expected:\n{links}"
    );
    let out = cmd::run(node.spawn("sh").arg("-c").arg(format!(
        "grep -q ' /sys/fs/bpf .* - bpf ' /proc/self/mountinfo && test -d {}",
        node.bpffs.path().display()
    )));
    assert!(out.status.success());

    let names = cluster.netns_names();
    assert_eq!(names.len(), 5, "wire, 3 nodes, 1 pod: {names:?}");
    let dirs: Vec<PathBuf> = cluster
        .nodes
        .iter()
        .flat_map(|n| [n.bpffs.path().to_owned(), n.state_dir.clone()])
        .collect();
    assert!(dirs.iter().all(|d| d.is_dir()));

    drop(pod);
    drop(cluster);

    for name in &names {
        assert!(
            !Path::new(NETNS_DIR).join(name).exists(),
            "{name} left in {NETNS_DIR}"
        );
    }
    for dir in &dirs {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
    for (host_end, _pair) in &probes {
        assert!(
            wait_until(TEARDOWN, || !host_has_link(host_end)),
            "{host_end} outlived its cluster namespace: it was not destroyed"
        );
    }
}
