//! Concurrency on one node: 200 ADDs at once, then 200 DELs at once, all succeeding
//! with distinct addresses, every pod reachable, nothing left after; and ADD, DEL and
//! CHECK of one attachment racing each other end in a consistent node.

use std::collections::BTreeSet;

use netkit_tests::pods::{Call, Node, Pod, pod_ip, with_prev_result};
use serde_json::{Value, json};

const PODS: usize = 200;

#[test]
fn two_hundred_pods_come_and_go_in_parallel() {
    let node = Node::new("ccp");
    let conf = node.conf(json!({}));
    let pods: Vec<Pod> = (0..PODS).map(|_| Pod::new("ccpp")).collect();

    let results: Vec<Value> = std::thread::scope(|scope| {
        let handles: Vec<_> = pods
            .iter()
            .map(|pod| scope.spawn(|| node.add(pod, &conf)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let v4: BTreeSet<String> = results.iter().map(|r| pod_ip(r, false)).collect();
    let v6: BTreeSet<String> = results.iter().map(|r| pod_ip(r, true)).collect();
    assert_eq!(v4.len(), PODS, "IPv4 addresses handed out twice");
    assert_eq!(v6.len(), PODS, "IPv6 addresses handed out twice");
    assert_eq!(node.endpoints().len(), PODS);
    assert_eq!(node.plugin_links().len(), PODS);

    // Every pod is reachable from its neighbour (the fast path) and from the node.
    for (i, pod) in pods.iter().enumerate() {
        let next = &results[(i + 1) % PODS];
        assert!(
            pod.ns.ping(pod_ip(next, false)),
            "pod {i} cannot reach pod {}",
            i + 1
        );
    }
    let unreachable: Vec<&String> = v4.iter().filter(|ip| !node.ns.ping(ip)).collect();
    assert!(
        unreachable.is_empty(),
        "the node cannot reach {unreachable:?}"
    );

    std::thread::scope(|scope| {
        for pod in &pods {
            let (node, conf) = (&node, &conf);
            scope.spawn(move || {
                node.del(&pod.container, pod.ifname, Some(pod.ns.path()), conf);
            });
        }
    });
    assert!(node.endpoints().is_empty(), "endpoints left");
    assert!(node.plugin_links().is_empty(), "links left");
    let status = node.agent().cli(&["status", "--json"]);
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["mapped_addresses"], 0, "map entries left: {status}");
    let pinned = std::fs::read_dir(node.dirs.bpffs.path().join("endpoints"))
        .unwrap()
        .count();
    assert_eq!(pinned, 0, "pins left");
}

#[test]
fn racing_add_del_and_check_of_one_attachment_stay_consistent() {
    let node = Node::new("ccr");
    let conf = node.conf(json!({}));
    let pod = Pod::new("ccrp");
    let first = node.add(&pod, &conf);
    let check_conf = with_prev_result(&conf, &first);
    for round in 0..10 {
        let replies: Vec<(&str, bool)> = std::thread::scope(|scope| {
            let calls = [
                ("ADD", &conf),
                ("CHECK", &check_conf),
                ("DEL", &conf),
                ("ADD", &conf),
                ("CHECK", &check_conf),
            ];
            let handles: Vec<_> = calls
                .into_iter()
                .map(|(command, conf)| {
                    let (node, pod) = (&node, &pod);
                    scope.spawn(move || {
                        let reply = node.cni(Call::add(pod).with(command), conf);
                        if command == "DEL" {
                            assert!(reply.ok, "round {round}: DEL failed: {reply:?}");
                        }
                        (command, reply.ok)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        // Whatever order they ran in, the node now holds the attachment exactly when
        // the last ADD/DEL to finish was an ADD, and then holds it whole.
        let endpoints = node.endpoints().len();
        let links = node.plugin_links().len();
        assert!(
            (endpoints, links) == (0, 0) || (endpoints, links) == (1, 1),
            "round {round}: half an attachment ({endpoints} endpoints, {links} links) after {replies:?}"
        );
        if endpoints == 1 {
            assert_eq!(
                pod.links().len(),
                2,
                "round {round}: the pod has no interface though the node has its endpoint"
            );
        }
    }
    node.del(&pod.container, pod.ifname, Some(pod.ns.path()), &conf);
    assert!(node.endpoints().is_empty() && node.plugin_links().is_empty());
    // And the attachment still works afterwards.
    let other = Pod::new("ccro");
    let r = node.add(&other, &conf);
    let again = node.add(&pod, &conf);
    assert!(pod.ns.ping(pod_ip(&r, false)), "no traffic after the races");
    drop(again);
}

/// The agent serves requests side by side: while one ADD is stuck in its attach (a
/// fault point stalls that one request, as a slow kernel would), STATUS and another
/// pod's ADD and DEL complete.
#[test]
fn a_slow_attach_holds_up_no_other_request() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let mut node = Node::new("ccs");
    node.restart_agent_with_env(&[("NETKIT_AGENT_FAULT", "sleep:before-attach:5000")]);
    let conf = node.conf(json!({}));
    let (slow, quick) = (Pod::new("ccss"), Pod::new("ccsq"));
    let slow_done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let slow_add = scope.spawn(|| {
            let reply = node.cni(Call::add(&slow), &conf);
            slow_done.store(true, Ordering::SeqCst);
            reply
        });
        // Wait until the slow ADD is stalled inside the agent.
        assert!(netkit_tests::netns::wait_until(
            std::time::Duration::from_secs(10),
            || node
                .agent()
                .log_text()
                .contains("fault injection: stalling")
        ));
        let status = node.agent().cli(&["status"]);
        assert!(status.status.success(), "STATUS failed meanwhile");
        let quick_reply = node.cni(Call::add(&quick), &conf);
        assert!(quick_reply.ok, "second ADD failed: {quick_reply:?}");
        node.del(&quick.container, quick.ifname, Some(quick.ns.path()), &conf);
        assert!(
            !slow_done.load(Ordering::SeqCst),
            "STATUS, ADD and DEL of another pod waited for the stalled ADD"
        );
        let slow_reply = slow_add.join().unwrap();
        assert!(slow_reply.ok, "slow ADD failed: {slow_reply:?}");
    });
    node.del(&slow.container, slow.ifname, Some(slow.ns.path()), &conf);
    assert!(node.endpoints().is_empty());
}
