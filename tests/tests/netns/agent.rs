//! The agent on the host kernel: its uplink program runs (counters move when packets
//! cross a veth) and survives an agent restart without losing a packet; endpoints keep
//! pins of their own.

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use netkit_tests::agent::{Agent, AgentDirs};
use netkit_tests::bins;
use netkit_tests::netns::{Netns, unique_ifname, veth_pair, wait_until};
use netkit_tests::pods::{Call, NODE_IP, Node, Pod, invoke, pod_ip};
use serde_json::json;

/// Two namespaces on a veth: `node` runs the agent with the veth as its uplink, `peer`
/// sends to it.
struct Wire {
    node: Netns,
    peer: Netns,
    uplink: String,
}

fn wire(tag: &str) -> Wire {
    let node = Netns::new(tag);
    let peer = Netns::new(tag);
    let uplink = unique_ifname("up");
    let other = unique_ifname("pe");
    // Both ends live in namespaces, so the pair dies with them.
    drop(veth_pair((&node, uplink.as_str()), (&peer, other.as_str())));
    node.ip(&format!("addr add 192.0.2.1/24 dev {uplink}"));
    peer.ip(&format!("addr add 192.0.2.2/24 dev {other}"));
    Wire { node, peer, uplink }
}

#[test]
fn uplink_program_counts_packets_crossing_the_veth() {
    let w = wire("agup");
    let dirs = AgentDirs::new("agup");
    let agent = Agent::start(&w.node, &dirs, &["--uplink", &w.uplink]);
    let before = agent.counter("pass");
    assert!(w.peer.ping("192.0.2.1"), "ping over the veth failed");
    let after = agent.counter("pass");
    assert!(
        after > before,
        "pass counter did not move: {before} -> {after}"
    );
    // Nothing here is for a pod, so nothing may have been redirected.
    assert_eq!(agent.counter("redirect_peer"), 0);
    let pin = dirs.bpffs.path().join("uplink").join(&w.uplink);
    assert!(pin.exists(), "uplink link not pinned at {}", pin.display());
}

#[test]
fn datapath_keeps_running_while_the_agent_is_down_and_is_adopted_on_restart() {
    let w = wire("agrs");
    let dirs = AgentDirs::new("agrs");
    let agent = Agent::start(&w.node, &dirs, &["--uplink", &w.uplink]);
    assert!(w.peer.ping("192.0.2.1"));
    let counted_before_stop = agent.counter("pass");
    agent.stop();

    // The pinned link keeps the program attached: packets are still counted.
    let pings = 3;
    let out = w
        .peer
        .command("ping")
        .args(["-c", "3", "-i", "0.2", "-W", "1", "192.0.2.1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "traffic stopped with the agent: {out:?}"
    );

    let agent = Agent::start(&w.node, &dirs, &["--uplink", &w.uplink]);
    let counted_after_restart = agent.counter("pass");
    assert!(
        counted_after_restart >= counted_before_stop + pings,
        "packets sent while the agent was down were not counted by the pinned program: \
         {counted_before_stop} then {counted_after_restart}"
    );
    assert!(w.peer.ping("192.0.2.1"), "no traffic after the restart");
}

#[test]
fn a_bad_uplink_is_a_readable_error_and_leaves_no_pin() {
    let w = wire("agbd");
    let dirs = AgentDirs::new("agbd");
    let mut cmd = w.node.command(bins::agent());
    let out = Agent::run_args(&mut cmd, &dirs, &["--uplink", "nosuchdev0"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "agent started on a missing uplink");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("nosuchdev0"),
        "error does not name the device: {stderr}"
    );
    assert!(!dirs.bpffs.path().join("uplink").join("nosuchdev0").exists());
    assert!(!dirs.socket().exists(), "socket left behind");
}

#[test]
fn metrics_and_health_are_served_on_the_metrics_address() {
    let w = wire("agmx");
    let dirs = AgentDirs::new("agmx");
    let _agent = Agent::start(
        &w.node,
        &dirs,
        &["--uplink", &w.uplink, "--metrics-addr", "127.0.0.1:9964"],
    );
    assert!(w.peer.ping("192.0.2.1"));
    let get = |path: &str| http_get(&w.node, "127.0.0.1:9964", path).expect("metrics port");
    let metrics = get("/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    let pass_line = metrics
        .lines()
        .find(|l| l.starts_with("netkit_datapath_decisions_total{decision=\"pass\"}"))
        .unwrap_or_else(|| panic!("no pass counter in {metrics}"));
    let value: u64 = pass_line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(value > 0, "pass counter not exported: {pass_line}");
    assert!(
        metrics.contains("# TYPE netkit_endpoints gauge"),
        "{metrics}"
    );
    assert!(get("/readyz").starts_with("HTTP/1.1 200"));
    assert!(get("/healthz").starts_with("HTTP/1.1 200"));
    assert!(get("/nope").starts_with("HTTP/1.1 404"));
}

/// `GET path` from inside `ns`; `None` while nothing listens on `addr`.
fn http_get(ns: &Netns, addr: &str, path: &str) -> Option<String> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let addr = addr.to_string();
    ns.run(move || {
        let mut conn = std::net::TcpStream::connect(&addr).ok()?;
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        conn.write_all(request.as_bytes()).unwrap();
        let mut reply = String::new();
        conn.read_to_string(&mut reply).unwrap();
        Some(reply)
    })
}

/// The endpoint pin directories under the node agent's bpffs root.
fn endpoint_pin_dirs(node: &Node) -> BTreeSet<String> {
    std::fs::read_dir(node.dirs.bpffs.path().join("endpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

/// A pod whose attachment is `container` + `ifname`.
fn pod_with_id(tag: &str, container: String, ifname: &'static str) -> Pod {
    Pod {
        ns: Netns::new(tag),
        container,
        ifname,
    }
}

#[test]
fn endpoint_ids_that_used_to_share_pins_stay_apart() {
    let node = Node::new("agid");
    let conf = node.conf(json!({}));
    // `<x>_b` + `c` and `<x>` + `b_c`: one pin directory under the old `_` join. The
    // node namespace's name makes `<x>` unique to this run.
    let x = node
        .ns
        .name()
        .replace(|c: char| !c.is_ascii_alphanumeric(), "");
    let one = pod_with_id("agid1", format!("{x}_b"), "c");
    let two = pod_with_id("agid2", x.clone(), "b_c");
    node.add(&one, &conf);
    node.add(&two, &conf);
    assert_eq!(
        endpoint_pin_dirs(&node),
        BTreeSet::from([
            format!("{}:c", one.container),
            format!("{}:b_c", two.container)
        ]),
    );
    assert!(one.ns.ping(NODE_IP) && two.ns.ping(NODE_IP));

    node.del(&two.container, two.ifname, Some(two.ns.path()), &conf);
    assert_eq!(
        endpoint_pin_dirs(&node),
        BTreeSet::from([format!("{}:c", one.container)]),
        "deleting one endpoint touched the other's pins"
    );
    assert!(
        one.ns.ping(NODE_IP),
        "the remaining endpoint lost its datapath"
    );
    assert_eq!(node.agent().endpoints().len(), 1);
    node.del(&one.container, one.ifname, Some(one.ns.path()), &conf);
    assert!(endpoint_pin_dirs(&node).is_empty());
}

#[test]
fn endpoints_named_by_an_older_agent_are_adopted_without_a_new_attach() {
    let mut node = Node::new("agld");
    let conf = node.conf(json!({}));
    let pod = Pod::new("agldp");
    node.add(&pod, &conf);
    let link = node.plugin_links().pop().expect("the pod's host link");
    // The filter as attached, less its program id: the restart swaps in its own program.
    let slots = |node: &Node| -> Vec<_> {
        node.ingress_filters(&link)
            .into_iter()
            .map(|f| (f.priority, f.handle, f.name, f.direct_action))
            .collect()
    };
    let attached = slots(&node);
    assert_eq!(attached.len(), 1, "{attached:?}");
    node.stop_agent();

    // What an agent before the injective names left behind: `<container>_<ifname>`.
    let endpoints = node.dirs.bpffs.path().join("endpoints");
    let current = endpoints.join(format!("{}:eth0", pod.container));
    let legacy = endpoints.join(format!("{}_eth0", pod.container));
    std::fs::rename(&current, &legacy).unwrap();

    node.restart_agent();
    assert!(!legacy.exists(), "the legacy directory is still there");
    assert!(current.is_dir(), "the endpoint's directory was not renamed");
    // The same one filter, its program replaced in place: adopted, not attached anew.
    assert_eq!(slots(&node), attached);
    assert!(pod.ns.ping(NODE_IP), "no traffic after the adoption");
    node.del(&pod.container, "eth0", None, &conf);
    assert!(endpoint_pin_dirs(&node).is_empty());
}

#[test]
fn a_corrupt_registry_is_rebuilt_from_the_pinned_endpoints() {
    let mut node = Node::new("agrg");
    let conf = node.conf(json!({}));
    let (a, b) = (Pod::new("agrga"), Pod::new("agrgb"));
    node.add(&a, &conf);
    let rb = node.add(&b, &conf);
    let before = node.agent().endpoints();
    node.stop_agent();

    // The whole-file registry of an earlier agent (beside the per-endpoint records it
    // also kept), cut in half, as a writer without fsync + rename could leave it after a
    // crash: the upgrade rebuilds it from the records of the pinned endpoints.
    let file = node.dirs.state_dir().join("endpoints.json");
    let bytes = serde_json::to_vec_pretty(&json!({ "endpoints": before })).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    node.restart_agent();

    let log = node.agent().log_text();
    assert!(
        log.contains("the endpoint registry file is corrupt"),
        "the agent did not say so:\n{log}"
    );
    assert!(!file.exists(), "the registry file outlived its upgrade");
    assert_eq!(
        node.agent().endpoints(),
        before,
        "endpoints lost or changed"
    );
    assert!(a.ns.ping(pod_ip(&rb, false)), "a cannot reach b any more");
    // Built-in IPAM knows the restored addresses are taken.
    let c = Pod::new("agrgc");
    let rc = node.add(&c, &conf);
    for e in &before {
        let taken = e["ips"][0]["address"].as_str().unwrap();
        assert_ne!(rc["ips"][0]["address"].as_str().unwrap(), taken);
    }
    for pod in [&a, &b, &c] {
        node.del(&pod.container, pod.ifname, Some(pod.ns.path()), &conf);
    }
    assert!(node.agent().endpoints().is_empty());
    assert!(endpoint_pin_dirs(&node).is_empty(), "pins left behind");
}

/// Send `bytes` on a fresh connection to the agent's socket (then stop writing) and
/// return what the agent answered before closing.
fn raw_exchange(socket: &Path, bytes: &[u8]) -> String {
    let stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let bytes = bytes.to_vec();
    // A writer of its own: the agent stops reading an oversized request, and the reply
    // must still be read while the write is stuck.
    let sender = std::thread::spawn(move || {
        let _ = writer.write_all(&bytes);
        let _ = writer.shutdown(Shutdown::Write);
    });
    let mut reply = String::new();
    (&stream)
        .read_to_string(&mut reply)
        .expect("no reply (or no close) from the agent");
    drop(stream);
    sender.join().unwrap();
    reply
}

fn assert_refused(reply: &str, why: &str) {
    let reply: serde_json::Value = serde_json::from_str(reply.trim())
        .unwrap_or_else(|e| panic!("reply is not one JSON line ({e}): {reply:?}"));
    assert_eq!(reply["result"], "error", "{reply}");
    assert_eq!(reply["kind"], "invalid_request", "{reply}");
    let message = reply["message"].as_str().unwrap();
    assert!(message.contains(why), "{message:?} does not say {why:?}");
}

#[test]
fn hostile_messages_on_the_socket_cost_only_a_reply() {
    let node = Node::new("agbm");
    let conf = node.conf(json!({}));
    let (a, b) = (Pod::new("agbma"), Pod::new("agbmb"));
    node.add(&a, &conf);
    let rb = node.add(&b, &conf);
    let endpoints = node.agent().endpoints();
    let pins = endpoint_pin_dirs(&node);
    let socket = node.dirs.socket();
    let unharmed = |after: &str| {
        let status = node.agent().cli(&["status"]);
        assert!(
            status.status.success(),
            "no Status after {after}: {status:?}"
        );
        assert_eq!(node.agent().endpoints(), endpoints, "after {after}");
        assert_eq!(endpoint_pin_dirs(&node), pins, "after {after}");
    };

    let mut huge = vec![b'{'; 2 << 20];
    huge.push(b'\n');
    let cases: [(&str, &[u8], &str); 5] = [
        (
            "garbage bytes",
            b"\x00\x01\x02 GET / HTTP/1.1\r\n\r\n",
            "unreadable",
        ),
        ("a 2 MiB line", &huge, "larger than"),
        ("invalid UTF-8", b"{\"op\":\"st\xffatus\"}\n", "unreadable"),
        (
            "truncated JSON",
            b"{\"op\":\"del_endpoint\",\"id\":{\"contai",
            "unreadable",
        ),
        (
            "an unknown operation",
            b"{\"op\":\"format_disk\"}\n",
            "unreadable",
        ),
    ];
    for (what, bytes, why) in cases {
        assert_refused(&raw_exchange(&socket, bytes), why);
        unharmed(what);
    }

    // Valid requests for endpoints that do not exist, with ids no ADD would accept.
    for (container, ifname) in [
        ("nosuchcontainer", "eth0"),
        (a.container.as_str(), "eth1"),
        ("..", "/"),
        ("../endpoints", "."),
        ("", ""),
    ] {
        let del =
            json!({"op": "del_endpoint", "id": {"container_id": container, "ifname": ifname}});
        let reply = raw_exchange(&socket, format!("{del}\n").as_bytes());
        assert_eq!(
            reply.trim(),
            r#"{"result":"done"}"#,
            "DEL {container:?}/{ifname:?}"
        );
        unharmed(&format!("DEL of {container:?}/{ifname:?}"));
    }

    // A client that connects and says nothing: the agent keeps serving meanwhile, and
    // closes the connection after its request timeout.
    let idle = UnixStream::connect(&socket).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    unharmed("an idle connection opened");
    let started = Instant::now();
    let mut reply = String::new();
    (&idle).read_to_string(&mut reply).unwrap();
    assert_refused(&reply, "no request within");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the idle connection was held for {:?}",
        started.elapsed()
    );
    unharmed("an idle connection");

    assert!(
        a.ns.ping(pod_ip(&rb, false)),
        "traffic between the pods broke"
    );
    for pod in [&a, &b] {
        node.del(&pod.container, pod.ifname, Some(pod.ns.path()), &conf);
    }
}

/// An agent process started without waiting for it to be ready; killed on Drop.
struct Unwaited(std::process::Child);

impl Drop for Unwaited {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn readiness_waits_for_the_datapath_and_status_follows_it() {
    const METRICS: &str = "127.0.0.1:9965";
    let ns = Netns::new("agrd");
    let dirs = AgentDirs::new("agrd");
    // The registry file is a FIFO: loading it blocks until the test writes it — a slow
    // start of the agent, under the test's control.
    std::fs::create_dir_all(dirs.state_dir()).unwrap();
    let registry = dirs.state_dir().join("endpoints.json");
    nix::unistd::mkfifo(&registry, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let log = std::fs::File::create(dirs.log()).unwrap();
    let mut cmd = ns.command(bins::agent());
    Agent::run_args(&mut cmd, &dirs, &["--no-uplink", "--metrics-addr", METRICS])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    let _agent = Unwaited(cmd.spawn().unwrap());
    let log = || std::fs::read_to_string(dirs.log()).unwrap_or_default();
    let get = |path: &str| http_get(&ns, METRICS, path);
    let cni_status = || {
        let conf = json!({
            "cniVersion": "1.1.0",
            "name": "pods",
            "type": "netkit-cni",
            "agentSocket": dirs.socket(),
            "stateDir": dirs.tmp.path().join("cni-state"),
            "logFile": dirs.tmp.path().join("cni.log"),
        });
        invoke(
            &mut ns.command(bins::cni()),
            Call::bare("STATUS"),
            &conf.to_string(),
        )
    };
    let socket_status = || {
        let out = Command::new(bins::agent())
            .args(["status", "--json", "--socket"])
            .arg(dirs.socket())
            .output()
            .unwrap();
        let status: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("status --json: {e}: {out:?}"));
        (out.status.success(), status)
    };

    // Alive at once, not ready while the registry does not come.
    assert!(
        wait_until(Duration::from_secs(20), || get("/healthz")
            .is_some_and(|r| r.starts_with("HTTP/1.1 200"))),
        "no /healthz:\n{}",
        log()
    );
    let why = "loading the endpoint registry";
    assert!(
        wait_until(Duration::from_secs(20), || get("/readyz")
            .is_some_and(|r| r.contains(why))),
        "/readyz does not say {why:?}: {:?}\n{}",
        get("/readyz"),
        log()
    );
    let readyz = get("/readyz").unwrap();
    assert!(readyz.starts_with("HTTP/1.1 503"), "{readyz}");
    let (ok, status) = socket_status();
    assert!(!ok, "status exits 0 while not ready: {status}");
    assert_eq!(status["ready"], false, "{status}");
    assert_eq!(status["reason"], why, "{status}");
    let reply = cni_status();
    assert_eq!(reply.code(), 50, "{reply:?}");
    assert!(reply.msg().contains(why), "{reply:?}");
    assert!(
        get("/metrics")
            .unwrap()
            .contains("\nnetkit_agent_ready 0\n")
    );

    // The registry arrives: ready everywhere at once.
    let writer = std::thread::spawn(move || std::fs::write(&registry, b"{\"endpoints\": []}"));
    assert!(
        wait_until(Duration::from_secs(20), || get("/readyz")
            .is_some_and(|r| r.starts_with("HTTP/1.1 200"))),
        "never ready: {:?}\n{}",
        get("/readyz"),
        log()
    );
    writer.join().unwrap().unwrap();
    let (ok, status) = socket_status();
    assert!(ok && status["ready"] == true, "{status}");
    assert!(status["reason"].is_null(), "{status}");
    let reply = cni_status();
    assert!(reply.ok, "{reply:?}");
    assert!(
        get("/metrics")
            .unwrap()
            .contains("\nnetkit_agent_ready 1\n")
    );
    assert!(get("/healthz").unwrap().starts_with("HTTP/1.1 200"));
}

fn host_ifindex(node: &Node, link: &str) -> u32 {
    node.ns
        .ip(&format!("-o link show dev {link}"))
        .split(':')
        .next()
        .and_then(|i| i.trim().parse::<u32>().ok())
        .expect("the host link's ifindex")
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const BPF_TCX_INGRESS: u32 = 46;

/// `bpf(cmd, attr)`, its non-negative result (a failure fails the test).
fn bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> i32 {
    // SAFETY: `attr` is a live, zero-padded `union bpf_attr` of the size passed.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    assert!(ret >= 0, "bpf({cmd}): {}", std::io::Error::last_os_error());
    ret as i32
}

/// `bytes` into a `union bpf_attr` at offset `at`.
fn put(attr: &mut [u8; 128], at: usize, bytes: &[u8]) {
    attr[at..at + bytes.len()].copy_from_slice(bytes);
}

/// What an agent before the `cls_bpf` filters left on a veth host end: a tcx ingress link
/// (here with a two-instruction pass program) pinned as the endpoint's `egress`, and no
/// qdisc. Raw `bpf(2)` calls in the node's namespace; the link lives on through its pin.
fn pin_tcx_link_as_an_older_agent_did(node: &Node, link: &str, pin: &Path) {
    let ifindex = host_ifindex(node, link);
    let pin = std::ffi::CString::new(pin.as_os_str().as_encoded_bytes()).unwrap();
    node.ns.run(move || {
        // r0 = 0 (TCX_PASS); exit
        let insns: [u64; 2] = [0xb7, 0x95];
        let license = c"GPL";
        let mut load = [0u8; 128];
        put(&mut load, 0, &BPF_PROG_TYPE_SCHED_CLS.to_ne_bytes());
        put(&mut load, 4, &2u32.to_ne_bytes());
        put(&mut load, 8, &(insns.as_ptr() as u64).to_ne_bytes());
        put(&mut load, 16, &(license.as_ptr() as u64).to_ne_bytes());
        put(&mut load, 68, &BPF_TCX_INGRESS.to_ne_bytes());
        let prog = bpf(BPF_PROG_LOAD, &mut load);
        let mut create = [0u8; 128];
        put(&mut create, 0, &(prog as u32).to_ne_bytes());
        put(&mut create, 4, &ifindex.to_ne_bytes());
        put(&mut create, 8, &BPF_TCX_INGRESS.to_ne_bytes());
        let link = bpf(BPF_LINK_CREATE, &mut create);
        let mut obj_pin = [0u8; 128];
        put(&mut obj_pin, 0, &(pin.as_ptr() as u64).to_ne_bytes());
        put(&mut obj_pin, 8, &(link as u32).to_ne_bytes());
        bpf(BPF_OBJ_PIN, &mut obj_pin);
        // SAFETY: fds this closure opened and owns.
        unsafe {
            libc::close(link);
            libc::close(prog);
        }
    });
}

/// How many programs run at tcx ingress of host link `link` (`BPF_PROG_QUERY`, no
/// program ids asked for: the kernel fills in the count at offset 24).
fn tcx_ingress_programs(node: &Node, link: &str) -> u32 {
    let ifindex = host_ifindex(node, link);
    node.ns.run(move || {
        let mut query = [0u8; 128];
        put(&mut query, 0, &ifindex.to_ne_bytes());
        put(&mut query, 4, &BPF_TCX_INGRESS.to_ne_bytes());
        bpf(BPF_PROG_QUERY, &mut query);
        u32::from_ne_bytes([query[24], query[25], query[26], query[27]])
    })
}

#[test]
fn a_veth_endpoint_an_older_agent_attached_by_tcx_link_moves_to_the_filter() {
    let mut node = Node::new("agtx");
    let conf = node.conf(json!({}));
    let pod = Pod::new("agtxp");
    node.add(&pod, &conf);
    let link = node.plugin_links().pop().expect("the pod's host link");
    node.stop_agent();

    // The older agent's attachment: no qdisc, a pinned tcx link.
    let out = node
        .ns
        .command("tc")
        .args(["qdisc", "del", "dev", &link, "ingress"])
        .output()
        .expect("tc");
    assert!(out.status.success(), "tc qdisc del: {out:?}");
    assert!(node.ingress_filters(&link).is_empty());
    let pin = node
        .dirs
        .bpffs
        .path()
        .join("endpoints")
        .join(format!("{}:eth0", pod.container))
        .join("egress");
    pin_tcx_link_as_an_older_agent_did(&node, &link, &pin);
    assert_eq!(tcx_ingress_programs(&node, &link), 1);

    node.restart_agent();
    let filters = node.ingress_filters(&link);
    assert_eq!(filters.len(), 1, "{filters:?}");
    assert_eq!(filters[0].name.as_deref(), Some("nk_pod_egress"));
    assert!(!pin.exists(), "the older agent's tcx link is still pinned");
    assert_eq!(
        tcx_ingress_programs(&node, &link),
        0,
        "the older agent's tcx link still runs"
    );
    assert!(pod.ns.ping(NODE_IP), "no traffic after the move");
    node.del(&pod.container, "eth0", None, &conf);
    assert!(endpoint_pin_dirs(&node).is_empty());
}
