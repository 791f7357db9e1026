//! Nothing leaks under faults: after each fault and the runtime's usual follow-up (DEL),
//! the node holds no plugin link, no endpoint, no pin, no endpoint-map entry and no
//! address allocation, and a new pod can be added.

use std::path::Path;
use std::time::Duration;

use netkit_tests::bins;
use netkit_tests::netns::wait_until;
use netkit_tests::pods::{Call, Node, Pod, invoke};
use serde_json::{Value, json};

/// Run ADD with the plugin set to kill itself at `point`.
fn add_killed_at(node: &Node, pod: &Pod, conf: &Value, point: &str) {
    let mut cmd = node.ns.command(bins::cni());
    cmd.env("NETKIT_CNI_FAULT", point);
    let reply = invoke(&mut cmd, Call::add(pod), &conf.to_string());
    assert!(!reply.ok, "ADD survived its fault point {point}: {reply:?}");
    assert_eq!(
        reply.json,
        Value::Null,
        "a killed plugin prints nothing (killed at {point})"
    );
}

/// Addresses host-local still holds in `data_dir` (one file per address).
fn host_local_allocations(data_dir: &Path) -> Vec<String> {
    let Ok(networks) = std::fs::read_dir(data_dir) else {
        return Vec::new();
    };
    networks
        .filter_map(Result::ok)
        .filter(|n| n.path().is_dir())
        .flat_map(|n| std::fs::read_dir(n.path()).into_iter().flatten())
        .filter_map(Result::ok)
        .map(|f| f.file_name().to_string_lossy().into_owned())
        .filter(|name| name.parse::<std::net::IpAddr>().is_ok())
        .collect()
}

/// Everything a pod could leave on the node is gone.
fn assert_nothing_left(node: &Node, what: &str) {
    assert!(
        node.plugin_links().is_empty(),
        "{what}: host links left: {:?}",
        node.plugin_links()
    );
    assert!(
        node.endpoints().is_empty(),
        "{what}: endpoints left: {:?}",
        node.endpoints()
    );
    let pins = node.dirs.bpffs.path().join("endpoints");
    let pinned: Vec<_> = std::fs::read_dir(&pins)
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(pinned.is_empty(), "{what}: pins left: {pinned:?}");
    let status = node.agent().cli(&["status", "--json"]);
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(
        status["mapped_addresses"], 0,
        "{what}: endpoint map entries left: {status}"
    );
    let leases = host_local_allocations(&node.cni_dir.path().join("host-local"));
    assert!(
        leases.is_empty(),
        "{what}: host-local leases left: {leases:?}"
    );
    assert_eq!(node.queued_deletions(), 0, "{what}: deletions still queued");
}

#[test]
fn a_plugin_killed_at_any_step_of_add_leaves_nothing_after_del() {
    let node = Node::new("flk");
    for (ipam, conf) in [
        ("built-in", node.conf(json!({}))),
        ("host-local", node.host_local_conf()),
    ] {
        for point in netkit_cni::fault::ADD_POINTS {
            let what = format!("{ipam} IPAM, killed {point}");
            let pod = Pod::new("flkp");
            add_killed_at(&node, &pod, &conf, point);
            // The runtime saw the plugin die and deletes the attachment.
            node.del(&pod.container, pod.ifname, Some(pod.ns.path()), &conf);
            assert_nothing_left(&node, &what);
            assert_eq!(pod.links(), vec!["lo".to_string()], "{what}: pod link left");
        }
        // And the node still works: a pod comes up and goes.
        let pod = Pod::new("flkok");
        node.add(&pod, &conf);
        node.del(&pod.container, pod.ifname, Some(pod.ns.path()), &conf);
        assert_nothing_left(&node, &format!("{ipam}: a normal pod afterwards"));
    }
}

#[test]
fn an_agent_down_during_add_fails_with_code_11_and_rolls_back() {
    let mut node = Node::new("fld");
    let conf = node.host_local_conf();
    node.stop_agent();
    let pod = Pod::new("fldp");
    let reply = node.cni(Call::add(&pod), &conf);
    assert_eq!(reply.code(), 11, "agent down: {reply:?}");
    assert!(node.plugin_links().is_empty(), "link left behind");
    assert!(
        host_local_allocations(&node.cni_dir.path().join("host-local")).is_empty(),
        "address leaked"
    );
    node.restart_agent();
    node.del(&pod.container, pod.ifname, Some(pod.ns.path()), &conf);
    assert_nothing_left(&node, "agent down during ADD");
}

#[test]
fn deleting_the_netns_before_del_leaves_nothing() {
    let node = Node::new("fln");
    for conf in [node.conf(json!({})), node.host_local_conf()] {
        let pod = Pod::new("flnp");
        node.add(&pod, &conf);
        let (container, netns) = (pod.container.clone(), pod.ns.path().to_path_buf());
        drop(pod);
        // The runtime still passes the (now dangling) path, as CRI does.
        node.del(&container, "eth0", Some(&netns), &conf);
        assert_nothing_left(&node, "netns deleted before DEL");
    }
}

#[test]
fn an_agent_restarted_between_add_and_del_leaves_nothing() {
    let mut node = Node::new("flr");
    for conf in [node.conf(json!({})), node.host_local_conf()] {
        let pod = Pod::new("flrp");
        node.add(&pod, &conf);
        node.restart_agent();
        node.del(&pod.container, pod.ifname, Some(pod.ns.path()), &conf);
        assert_nothing_left(&node, "agent restarted between ADD and DEL");
    }
}

#[test]
fn an_exhausted_pool_fails_cleanly() {
    // Built-in IPAM from a /30 and host-local from a /30: a few addresses each.
    let node = Node::with_pod_cidrs("flx", &["10.63.0.0/30"], &["--no-uplink"]);
    let mut host_local = node.host_local_conf();
    host_local["ipam"]["ranges"] = json!([[{"subnet": "10.64.0.0/30"}]]);
    for (ipam, conf) in [
        ("built-in", node.conf(json!({}))),
        ("host-local", host_local),
    ] {
        let mut pods = Vec::new();
        let failed = loop {
            assert!(pods.len() < 8, "{ipam}: a /30 never ran out");
            let pod = Pod::new("flxp");
            let reply = node.cni(Call::add(&pod), &conf);
            if !reply.ok {
                break (pod, reply);
            }
            pods.push(pod);
        };
        let (pod, reply) = failed;
        let msg = reply.msg();
        assert!(
            ["no free address", "no IP addresses available"]
                .iter()
                .any(|m| msg.contains(m)),
            "{ipam}: the error does not say the pool is exhausted: {reply:?}"
        );
        assert_eq!(
            node.plugin_links().len(),
            pods.len(),
            "{ipam}: the failed ADD left a link"
        );
        assert_eq!(pod.links(), vec!["lo".to_string()], "{ipam}: pod link left");
        node.del(&pod.container, pod.ifname, Some(pod.ns.path()), &conf);
        for pod in &pods {
            node.del(&pod.container, pod.ifname, Some(pod.ns.path()), &conf);
        }
        assert_nothing_left(&node, &format!("{ipam}: exhausted pool"));
    }
}

#[test]
fn an_agent_killed_before_a_handed_over_teardown_finishes_it_on_restart() {
    let mut node = Node::new("flkt");
    let conf = node.conf(json!({}));
    node.restart_agent_with_env(&[("NETKIT_AGENT_FAULT", "kill:before-teardown")]);
    let pod = Pod::new("flktp");
    node.add(&pod, &conf);
    // The DEL is answered (the endpoint durably marked releasing), then the agent dies
    // as its teardown starts: link, pins, map entries and record are all still there.
    let del = node.cni(Call::add(&pod).with("DEL"), &conf);
    assert!(del.ok, "DEL failed: {del:?}\nplugin log:\n{}", node.log());
    assert!(
        wait_until(Duration::from_secs(10), || !node
            .agent()
            .cli(&["status"])
            .status
            .success()),
        "the agent did not reach the fault point"
    );
    assert_eq!(
        node.plugin_links().len(),
        1,
        "the link is the agent's to delete"
    );
    // The restarted agent finishes the teardown before it reports ready.
    node.restart_agent();
    assert_nothing_left(&node, "agent killed before a handed-over teardown");
    assert_eq!(pod.links(), ["lo"]);
}

#[test]
fn an_agent_killed_between_attach_and_reply_leaves_nothing_after_restart_and_del() {
    let mut node = Node::new("flka");
    for conf in [node.conf(json!({})), node.host_local_conf()] {
        node.restart_agent_with_env(&[("NETKIT_AGENT_FAULT", "kill:after-attach")]);
        let pod = Pod::new("flkap");
        let reply = node.cni(Call::add(&pod), &conf);
        assert!(!reply.ok, "ADD succeeded though the agent died: {reply:?}");
        assert_eq!(
            reply.code(),
            11,
            "the agent vanished mid-request: {reply:?}"
        );
        // The plugin rolled its side back and queued the endpoint's deletion; the
        // restarted agent finds pins it never registered.
        node.restart_agent();
        node.del(&pod.container, pod.ifname, Some(pod.ns.path()), &conf);
        assert_nothing_left(&node, "agent killed between attach and reply");
    }
}
