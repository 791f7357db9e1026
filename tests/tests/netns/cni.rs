//! The real `netkit-cni` binary, invoked as libcni invokes it (`CNI_*` environment, the
//! configuration on stdin, a result or an error document on stdout), against the real
//! agent in a "node" namespace and pods that are namespaces. The host kernel has no
//! netkit, so `mode: auto` runs the veth fallback here (the VM tier covers netkit).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use netkit_tests::bins;
use netkit_tests::netns::{At, wait_until};
use netkit_tests::pods::{Call, NODE_IP, Node, Pod, invoke, pod_ip, with_prev_result};
use serde_json::{Value, json};

const HOST_LOCAL: &str = "/usr/lib/cni/host-local";

fn host_local_available() -> bool {
    if Path::new(HOST_LOCAL).exists() {
        return true;
    }
    eprintln!("skipped: {HOST_LOCAL} is missing (apt-get install containernetworking-plugins)");
    false
}

#[test]
fn version_lists_what_the_plugin_speaks() {
    let mut cmd = Command::new(bins::cni());
    let reply = invoke(
        &mut cmd,
        Call::bare("VERSION"),
        r#"{"cniVersion": "1.0.0"}"#,
    );
    assert!(reply.ok, "{reply:?}");
    assert_eq!(
        reply.json,
        json!({"cniVersion": "1.0.0", "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"]})
    );
}

#[test]
fn add_check_del_with_built_in_ipam() {
    let node = Node::new("cnib");
    let pod = Pod::new("cnibp");
    let conf =
        node.conf(json!({"dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]}}));
    let reply = node.cni(Call::add(&pod), &conf);
    assert!(
        reply.ok,
        "ADD failed: {reply:?}\nplugin log:\n{}",
        node.log()
    );
    assert!(
        reply.stderr.is_empty(),
        "logs go to logFile, not stderr: {}",
        reply.stderr
    );
    assert!(
        node.log().contains("pod wired"),
        "nothing logged to logFile"
    );
    let result = reply.json;

    // The result document.
    assert_eq!(result["cniVersion"], "1.1.0");
    let interfaces = result["interfaces"].as_array().unwrap();
    assert_eq!(interfaces.len(), 2, "{result}");
    let host_name = interfaces[0]["name"].as_str().unwrap().to_string();
    assert!(
        interfaces[0].get("sandbox").is_none(),
        "the host end has no sandbox: {result}"
    );
    assert_eq!(interfaces[1]["name"], "eth0");
    assert_eq!(
        interfaces[1]["sandbox"],
        pod.ns.path().display().to_string()
    );
    assert!(
        interfaces[1]["mac"].is_string(),
        "veth MACs are reported: {result}"
    );
    let ips = result["ips"].as_array().unwrap();
    assert_eq!(
        ips.len(),
        2,
        "dual-stack from the agent's two pod CIDRs: {result}"
    );
    for ip in ips {
        assert_eq!(ip["interface"], 1);
        let address = ip["address"].as_str().unwrap();
        assert!(
            address.ends_with("/32") || address.ends_with("/128"),
            "{address}"
        );
    }
    assert_eq!(
        result["routes"],
        json!([{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}, {"dst": "::/0", "gw": "fe80::1"}])
    );
    assert_eq!(result["dns"]["search"], json!(["svc.cluster.local"]));

    // The kernel and the agent.
    assert_eq!(node.plugin_links(), std::slice::from_ref(&host_name));
    assert_eq!(pod.links(), ["eth0", "lo"]);
    let v4 = pod_ip(&result, false);
    let v6 = pod_ip(&result, true);
    let addrs = pod.ns.ip("-o addr show dev eth0");
    assert!(
        addrs.contains(&format!("{v4}/32")) && addrs.contains(&format!("{v6}/128")),
        "{addrs}"
    );
    assert!(
        pod.ns.ip("-6 -o addr show dev eth0").contains("nodad"),
        "IPv6 without DAD"
    );
    let neigh = pod.ns.ip("neigh show dev eth0");
    assert!(
        neigh.contains("169.254.1.1") && neigh.contains("PERMANENT"),
        "{neigh}"
    );
    // The host end has no IPv6 link-local address (nothing to solicit from): the pod's
    // IPv6 address has a permanent entry there instead, and the node reaches the pod.
    assert_eq!(
        node.ns
            .ip(&format!("-6 -o addr show dev {host_name}"))
            .trim(),
        "",
        "the host end has an IPv6 address"
    );
    let host_neigh = node.ns.ip(&format!("-6 neigh show dev {host_name}"));
    assert!(
        host_neigh.contains(&v6) && host_neigh.contains("PERMANENT"),
        "{host_neigh}"
    );
    node.ns.ip("addr add fd00:ffff::1/128 dev lo");
    assert!(node.ns.ping(&v6), "the node cannot reach the pod over IPv6");
    assert!(
        node.ns
            .ip("route show")
            .contains(&format!("{v4} dev {host_name}"))
    );
    assert_eq!(
        node.ns.sh("cat /proc/sys/net/ipv4/ip_forward").stdout,
        b"1\n"
    );
    let rp = node.ns.sh(&format!(
        "cat /proc/sys/net/ipv4/conf/{host_name}/rp_filter"
    ));
    assert_eq!(rp.stdout, b"2\n");
    assert_eq!(
        node.endpoints(),
        BTreeSet::from([(pod.container.clone(), "eth0".to_string())])
    );
    assert!(pod.ns.ping(NODE_IP), "pod cannot reach the node");

    // CHECK against the result, as the runtime would.
    let check = node.cni(
        Call::add(&pod).with("CHECK"),
        &with_prev_result(&conf, &result),
    );
    assert!(check.ok, "CHECK failed: {check:?}");
    assert_eq!(check.json, Value::Null);

    // DEL: everything goes; again and with an empty CNI_NETNS (as containerd repeats it).
    node.del(
        &pod.container,
        "eth0",
        Some(pod.ns.path()),
        &with_prev_result(&conf, &result),
    );
    assert!(node.plugin_links().is_empty());
    assert_eq!(pod.links(), ["lo"]);
    assert!(node.endpoints().is_empty());
    assert!(!node.ns.ip("route show").contains(&v4));
    node.del(&pod.container, "eth0", Some(pod.ns.path()), &conf);
    node.del(&pod.container, "eth0", None, &conf);

    // CHECK after DEL finds the attachment gone.
    let check = node.cni(
        Call::add(&pod).with("CHECK"),
        &with_prev_result(&conf, &result),
    );
    assert_eq!(check.code(), 103, "{check:?}");
}

#[test]
fn del_hands_the_teardown_to_the_agent_and_an_add_right_after_waits_for_it() {
    let mut node = Node::new("cnir");
    // The first teardown stalls 300 ms after it has started (the fault fires once), so
    // the ADD after it finds the previous link still there, whatever the machine's speed.
    node.restart_agent_with_env(&[("NETKIT_AGENT_FAULT", "sleep:before-teardown:300")]);
    let pod = Pod::new("cnirp");
    let conf = node.conf(json!({}));
    // As `podman network reload` does: DEL, then ADD at once with the same container,
    // netns and interface, while the agent is still deleting the old link.
    for _ in 0..5 {
        node.add(&pod, &conf);
        let del = node.cni(Call::add(&pod).with("DEL"), &conf);
        assert!(del.ok, "DEL failed: {del:?}\nplugin log:\n{}", node.log());
    }
    let result = node.add(&pod, &conf);
    assert!(
        pod.ns.ping(NODE_IP),
        "the re-added pod cannot reach the node"
    );
    assert_eq!(node.plugin_links().len(), 1);
    node.del(&pod.container, "eth0", Some(pod.ns.path()), &conf);
    assert!(node.plugin_links().is_empty());
    assert!(node.endpoints().is_empty());
    assert_eq!(pod.links(), ["lo"]);
    assert!(!node.ns.ip("route show").contains(&pod_ip(&result, false)));
    assert!(
        node.log()
            .contains("the previous link of this attachment is gone"),
        "no re-ADD waited for the stalled teardown:\n{}",
        node.log()
    );
}

#[test]
fn two_pods_reach_each_other_and_the_node() {
    let node = Node::new("cnit");
    let (a, b) = (Pod::new("cnita"), Pod::new("cnitb"));
    let conf = node.conf(json!({}));
    let ra = node.add(&a, &conf);
    let rb = node.add(&b, &conf);
    for v6 in [false, true] {
        assert!(a.ns.ping(pod_ip(&rb, v6)), "a cannot reach b (v6: {v6})");
        assert!(b.ns.ping(pod_ip(&ra, v6)), "b cannot reach a (v6: {v6})");
    }
    assert!(node.ns.ping(pod_ip(&ra, false)), "the node cannot reach a");
    assert!(b.ns.ping(NODE_IP), "b cannot reach the node");
    node.del(&a.container, "eth0", None, &conf);
    node.del(&b.container, "eth0", None, &conf);
    assert!(node.plugin_links().is_empty());
}

#[test]
fn delegated_host_local_is_called_like_libcni_calls_it() {
    if !host_local_available() {
        return;
    }
    let node = Node::new("cnih");
    let pod = Pod::new("cnihp");
    let conf = node.host_local_conf();
    let result = node.add(&pod, &conf);
    assert_eq!(result["cniVersion"], "1.0.0");
    assert_eq!(
        result["ips"],
        json!([{"address": "10.62.0.2/32", "gateway": "169.254.1.1", "interface": 1}])
    );
    assert_eq!(
        result["routes"],
        json!([{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}, {"dst": "172.16.0.0/12", "gw": "169.254.1.1"}])
    );
    assert!(
        result["interfaces"][1].get("mtu").is_none(),
        "no 1.1.0 fields in a 1.0.0 result"
    );
    let lease = node.cni_dir.path().join("host-local/pods/10.62.0.2");
    assert!(
        lease.exists(),
        "host-local holds no lease at {}",
        lease.display()
    );
    let endpoint = node.agent().endpoints();
    assert_eq!(
        endpoint[0]["ips"][0]["address"], "10.62.0.2/24",
        "the agent got host-local's address"
    );
    assert!(
        pod.ns
            .ip("route show")
            .contains("172.16.0.0/12 via 169.254.1.1")
    );
    // An IPv4-only pod: its host end has IPv6 off (no IPv6 routes or walks of the node's
    // IPv6 FIB per pod start), and the host stack's path to the pod still works both ways.
    let host_name = result["interfaces"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let disabled = node.ns.sh(&format!(
        "cat /proc/sys/net/ipv6/conf/{host_name}/disable_ipv6"
    ));
    assert_eq!(disabled.stdout, b"1\n");
    assert!(node.ns.ping("10.62.0.2"), "the node cannot reach the pod");
    assert!(pod.ns.ping(NODE_IP), "the pod cannot reach the node");

    let check = node.cni(
        Call::add(&pod).with("CHECK"),
        &with_prev_result(&conf, &result),
    );
    assert!(
        check.ok,
        "CHECK (with host-local's CHECK) failed: {check:?}"
    );

    node.del(&pod.container, "eth0", None, &conf);
    assert!(!lease.exists(), "DEL did not release the host-local lease");
    assert!(node.endpoints().is_empty());
    node.del(&pod.container, "eth0", None, &conf);
}

#[test]
fn results_come_in_the_requested_version() {
    let node = Node::new("cniv");
    let pod = Pod::new("cnivp");
    let conf = node.conf(json!({"cniVersion": "0.4.0"}));
    let result = node.add(&pod, &conf);
    assert_eq!(result["cniVersion"], "0.4.0");
    let versions: BTreeSet<&str> = result["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ip| ip["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, BTreeSet::from(["4", "6"]));
    let check = node.cni(
        Call::add(&pod).with("CHECK"),
        &with_prev_result(&conf, &result),
    );
    assert!(check.ok, "0.4.0 CHECK failed: {check:?}");
    node.del(&pod.container, "eth0", None, &conf);
}

#[test]
fn mtu_and_big_tcp_reach_both_ends() {
    let node = Node::new("cnim");
    let pod = Pod::new("cnimp");
    let conf =
        node.conf(json!({"mtu": 1400, "bigTcp": {"gsoMaxSize": 131072, "groMaxSize": 131072}}));
    let result = node.add(&pod, &conf);
    assert_eq!(result["interfaces"][1]["mtu"], 1400);
    let host_name = result["interfaces"][0]["name"].as_str().unwrap();
    for (at, dev) in [(At::Ns(&pod.ns), "eth0"), (At::Ns(&node.ns), host_name)] {
        let details = at.ip(&format!("-d link show dev {dev}"));
        assert!(details.contains("mtu 1400"), "{dev}: {details}");
        assert!(details.contains("gso_max_size 131072"), "{dev}: {details}");
        assert!(details.contains("gro_max_size 131072"), "{dev}: {details}");
    }
    node.del(&pod.container, "eth0", None, &conf);
}

#[test]
fn a_second_interface_in_the_same_pod() {
    let node = Node::new("cni2");
    let mut pod = Pod::new("cni2p");
    let conf = node.conf(json!({}));
    node.add(&pod, &conf);
    pod.ifname = "eth1";
    let second = node.add(&pod, &conf);
    assert!(
        second.get("routes").is_none(),
        "the pod's default routes stay eth0's: {second}"
    );
    assert_eq!(pod.links(), ["eth0", "eth1", "lo"]);
    let check = node.cni(
        Call::add(&pod).with("CHECK"),
        &with_prev_result(&conf, &second),
    );
    assert!(check.ok, "{check:?}");
    node.del(&pod.container, "eth1", None, &conf);
    assert_eq!(pod.links(), ["eth0", "lo"]);
    node.del(&pod.container, "eth0", None, &conf);
}

#[test]
fn add_refuses_an_existing_interface_and_leaves_it_alone() {
    let node = Node::new("cnie");
    let pod = Pod::new("cniep");
    // Someone else's eth0 (a veth pair inside the pod: the kernel may lack `dummy`).
    pod.ns.ip("link add eth0 type veth peer name theirs0");
    let before = pod.ns.ip("-d link show dev eth0");
    let conf = node.conf(json!({}));
    let reply = node.cni(Call::add(&pod), &conf);
    assert_eq!(reply.code(), 100, "{reply:?}");
    assert!(reply.msg().contains("eth0"), "{reply:?}");
    assert_eq!(
        pod.ns.ip("-d link show dev eth0"),
        before,
        "the existing eth0 was touched"
    );
    assert!(node.plugin_links().is_empty());
    assert!(node.endpoints().is_empty());
    // The runtime's DEL after the failed ADD must not touch it either.
    node.del(&pod.container, "eth0", Some(pod.ns.path()), &conf);
    assert_eq!(pod.ns.ip("-d link show dev eth0"), before);
    assert_eq!(pod.links(), ["eth0", "lo", "theirs0"]);
}

#[test]
fn an_unreachable_agent_is_try_again_later_and_nothing_is_left_behind() {
    let node = Node::new("cniu");
    let pod = Pod::new("cniup");
    let mut confs =
        vec![node.conf(json!({"agentSocket": node.cni_dir.path().join("no-agent.sock")}))];
    if host_local_available() {
        let mut conf = node.host_local_conf();
        conf["agentSocket"] = json!(node.cni_dir.path().join("no-agent.sock"));
        confs.push(conf);
    }
    for conf in &confs {
        let reply = node.cni(Call::add(&pod), conf);
        assert_eq!(reply.code(), 11, "{reply:?}");
        assert_eq!(pod.links(), ["lo"]);
        assert!(node.plugin_links().is_empty());
        assert_eq!(
            node.queued_deletions(),
            0,
            "nothing reached the agent, nothing to queue"
        );
    }
    let leases = node.cni_dir.path().join("host-local/pods");
    let held: Vec<_> = std::fs::read_dir(&leases)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name())
                .filter(|n| n.to_string_lossy().starts_with("10."))
                .collect()
        })
        .unwrap_or_default();
    assert!(held.is_empty(), "host-local leases leaked: {held:?}");
}

#[test]
fn del_while_the_agent_is_down_is_queued_and_replayed() {
    let mut node = Node::new("cniq");
    let pod = Pod::new("cniqp");
    let conf = node.conf(json!({}));
    node.add(&pod, &conf);
    node.stop_agent();

    node.del(&pod.container, "eth0", None, &conf);
    assert!(
        node.plugin_links().is_empty(),
        "the link goes even without the agent"
    );
    assert_eq!(pod.links(), ["lo"]);
    assert_eq!(node.queued_deletions(), 1);

    let status = node.cni(Call::bare("STATUS"), &conf);
    assert_eq!(status.code(), 50, "{status:?}");

    node.restart_agent();
    let status = node.cni(Call::bare("STATUS"), &conf);
    assert!(status.ok, "{status:?}");
    assert_eq!(status.json, Value::Null, "STATUS prints nothing when ready");
    assert!(
        wait_until(Duration::from_secs(5), || node.endpoints().is_empty()),
        "the agent still has the endpoint: {:?}\nplugin log:\n{}",
        node.endpoints(),
        node.log()
    );
    assert_eq!(node.queued_deletions(), 0, "plugin log:\n{}", node.log());
}

#[test]
fn gc_removes_what_is_not_valid() {
    let node = Node::new("cnig");
    let (keep, stale) = (Pod::new("cnigk"), Pod::new("cnigs"));
    let conf = node.conf(json!({}));
    let kept = node.add(&keep, &conf);
    node.add(&stale, &conf);
    assert_eq!(node.plugin_links().len(), 2);

    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": keep.container, "ifname": "eth0"}]);
    let reply = node.cni(Call::bare("GC"), &gc);
    assert!(reply.ok, "{reply:?}");
    assert_eq!(reply.json, Value::Null);
    assert_eq!(
        node.plugin_links(),
        [kept["interfaces"][0]["name"].as_str().unwrap().to_string()]
    );
    assert_eq!(stale.links(), ["lo"]);
    assert_eq!(
        node.endpoints(),
        BTreeSet::from([(keep.container.clone(), "eth0".to_string())])
    );
    assert!(keep.ns.ping(NODE_IP), "GC broke a valid attachment");

    let mut gc_without_list = conf.clone();
    gc_without_list
        .as_object_mut()
        .unwrap()
        .remove("cni.dev/valid-attachments");
    assert_eq!(node.cni(Call::bare("GC"), &gc_without_list).code(), 7);
    assert_eq!(
        node.plugin_links().len(),
        1,
        "GC without a list deleted something"
    );
    node.del(&keep.container, "eth0", None, &conf);
}

#[test]
fn errors_carry_the_spec_codes() {
    let node = Node::new("cnic");
    let pod = Pod::new("cnicp");
    let conf = node.conf(json!({}));
    let add = Call::add(&pod);

    // 4: a required variable missing, named.
    let reply = node.cni(
        Call {
            container: "",
            ..add
        },
        &conf,
    );
    assert_eq!(reply.code(), 4);
    assert!(reply.msg().contains("CNI_CONTAINERID"), "{reply:?}");
    assert_eq!(
        node.cni(
            Call {
                ifname: "bad/name",
                ..add
            },
            &conf
        )
        .code(),
        4
    );
    assert_eq!(node.cni(add.with("FROB"), &conf).code(), 4);
    // 6: undecodable configuration.
    let mut cmd = node.ns.command(bins::cni());
    let reply = invoke(&mut cmd, add, "{not json");
    assert_eq!(reply.code(), 6, "{reply:?}");
    // 1: a version we do not speak, answered in the latest.
    let reply = node.cni(add, &node.conf(json!({"cniVersion": "0.3.1"})));
    assert_eq!(reply.code(), 1);
    assert_eq!(reply.json["cniVersion"], "1.1.0");
    // 1: STATUS and GC before 1.1.0.
    assert_eq!(
        node.cni(
            Call::bare("STATUS"),
            &node.conf(json!({"cniVersion": "1.0.0"}))
        )
        .code(),
        1
    );
    // 7: each invalid value names its field.
    for (key, value, field) in [
        ("mtu", json!(10), "mtu"),
        ("mode", json!("bridge"), "mode"),
        ("bigTcp", json!({"gsoMaxSize": 1}), "bigTcp.gsoMaxSize"),
        ("ipam", json!({}), "ipam.type"),
        ("logLevel", json!("loud"), "logLevel"),
    ] {
        let reply = node.cni(add, &node.conf(json!({ key: value })));
        assert_eq!(reply.code(), 7, "{key}: {reply:?}");
        assert!(reply.msg().contains(field), "{key}: {reply:?}");
    }
    // 3: the container's namespace is gone.
    let gone = Path::new("/run/netns/nkt-does-not-exist");
    assert_eq!(
        node.cni(
            Call {
                netns: Some(gone),
                ..add
            },
            &conf
        )
        .code(),
        3
    );
    // 7: an IPAM plugin that is not in CNI_PATH.
    let reply = node.cni(add, &node.conf(json!({"ipam": {"type": "no-such-ipam"}})));
    assert_eq!(reply.code(), 7, "{reply:?}");
    // mode netkit: a clear refusal on a kernel without netkit, success where it exists.
    let reply = node.cni(add, &node.conf(json!({"mode": "netkit"})));
    if reply.ok {
        node.del(&pod.container, "eth0", None, &conf);
    } else {
        assert_eq!(reply.code(), 7, "{reply:?}");
        assert!(reply.msg().contains("no netkit support"), "{reply:?}");
    }
    // Nothing above left anything behind.
    assert_eq!(pod.links(), ["lo"]);
    assert!(node.plugin_links().is_empty());
    assert!(node.endpoints().is_empty());
}
