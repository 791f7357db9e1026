//! netkit-cni under a real client: `ctr run --cni` (containerd 1.6) with a conflist whose
//! only plugin is netkit-cni, once with built-in IPAM (the agent allocates, dual-stack) and
//! once with delegated `host-local`. Two busybox containers reach each other on the fast
//! path, and deleting them leaves nothing behind.
//!
//! `ctr` runs the plugins in the host's root network namespace, so the agent runs there
//! too: `--no-uplink` (never the machine's real uplink), its own socket, bpffs dir, state
//! dir, and pod CIDRs no parallel test uses (a [`Subnet`] and a ULA /64 derived from it).
//! `ctr` calls CNI DEL only when an attached `ctr run` sees its task exit, and then with an
//! empty `CNI_NETNS`: DEL must work from the container id alone.

use std::fs::{self, File};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use netkit_tests::agent::{Agent, AgentDirs};
use netkit_tests::bins;
use netkit_tests::cmd;
use netkit_tests::containerd::{Container, Containerd, SLEEP, Subnet, unique_name};
use serde_json::{Value, json};

use super::{allocations, host_link_exists, wait_until};

/// Debian's host-local.
const HOST_LOCAL: &str = "/usr/lib/cni/host-local";
const GATEWAY4: &str = "169.254.1.1";
const GATEWAY6: &str = "fe80::1";

/// How IPAM is done in a scenario.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Ipam {
    /// No `ipam` section: the agent allocates from its pod CIDRs (IPv4 + IPv6).
    BuiltIn,
    /// `host-local` with its `dataDir` in a temp dir (IPv4).
    HostLocal,
}

/// One node's worth of netkit: the agent in the root netns, the plugin's state and log,
/// the pod CIDRs. Fields drop in order: the agent stops before its dirs go.
struct Site {
    agent: Agent,
    dirs: AgentDirs,
    cni_dir: tempfile::TempDir,
    subnet: Subnet,
    /// The network of a /64 unique while `subnet` is held, e.g. `fd6e:6b63:c8:11::`.
    net6: Ipv6Addr,
    network: String,
}

impl Site {
    fn new(tag: &str) -> Site {
        let subnet = Subnet::allocate();
        let [_, a, b, _] = subnet.host(0).octets();
        let net6 = Ipv6Addr::new(0xfd6e, 0x6b63, a.into(), b.into(), 0, 0, 0, 0);
        let cidr6 = format!("{net6}/64");
        let dirs = AgentDirs::new(tag);
        let cidr4 = subnet.cidr();
        let agent = Agent::start_here(
            &dirs,
            &["--no-uplink", "--pod-cidr", &cidr4, "--pod-cidr", &cidr6],
        );
        Site {
            agent,
            dirs,
            cni_dir: tempfile::tempdir().expect("temp dir"),
            subnet,
            net6,
            network: unique_name(tag),
        }
    }

    fn state_dir(&self) -> PathBuf {
        self.cni_dir.path().join("state")
    }

    fn host_local_dir(&self) -> PathBuf {
        self.cni_dir.path().join("host-local")
    }

    fn plugin_log(&self) -> String {
        fs::read_to_string(self.cni_dir.path().join("cni.log")).unwrap_or_default()
    }

    /// The plugin log and the agent log, for failure messages.
    fn logs(&self) -> String {
        format!(
            "--- netkit-cni log\n{}\n--- agent log\n{}",
            self.plugin_log(),
            self.agent.log_text()
        )
    }

    fn conflist(&self, ipam: Ipam) -> String {
        let mut plugin = json!({
            "type": "netkit-cni",
            "mode": "auto",
            "agentSocket": self.dirs.socket(),
            "stateDir": self.state_dir(),
            "logFile": self.cni_dir.path().join("cni.log"),
            "logLevel": "debug",
        });
        // containerd 1.6's libcni knows results up to 1.0.0, and Debian's host-local
        // speaks up to 1.0.0.
        if ipam == Ipam::HostLocal {
            plugin["ipam"] = json!({
                "type": "host-local",
                "ranges": [[{ "subnet": self.subnet.cidr() }]],
                "routes": [{ "dst": "0.0.0.0/0" }],
                "dataDir": self.host_local_dir(),
            });
        }
        json!({
            "cniVersion": "1.0.0",
            "name": self.network,
            "plugins": [plugin],
        })
        .to_string()
    }

    /// Files in the deletion queue.
    fn queued_deletions(&self) -> Vec<PathBuf> {
        fs::read_dir(self.state_dir().join("del-queue"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "json"))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Entries under the agent's pinned `endpoints/`.
    fn endpoint_pins(&self) -> Vec<PathBuf> {
        fs::read_dir(self.dirs.bpffs.path().join("endpoints"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }

    /// Host links (root netns) carrying this network's alias,
    /// `netkit-cni:<network>:<container>:<ifname>`.
    fn our_host_links(&self) -> Vec<String> {
        let needle = format!("netkit-cni:{}:", self.network);
        fs::read_dir("/sys/class/net")
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| is_plugin_link_name(n))
                    .filter(|n| {
                        fs::read_to_string(Path::new("/sys/class/net").join(n).join("ifalias"))
                            .is_ok_and(|a| a.trim().starts_with(&needle))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// `nk` + 11 hex digits: the plugin's host-side names.
fn is_plugin_link_name(name: &str) -> bool {
    name.len() == 13 && name.starts_with("nk") && name[2..].chars().all(|c| c.is_ascii_hexdigit())
}

/// The host-side name the plugin derives: `nk` + the first 11 hex digits of
/// SHA-256(`container/ifname`), computed here with coreutils as an independent check.
fn expected_host_ifname(container_id: &str, ifname: &str) -> String {
    let out = cmd::run_text(
        "sh",
        [
            "-c",
            "printf '%s' \"$1\" | sha256sum",
            "sh",
            &format!("{container_id}/{ifname}"),
        ],
    );
    format!("nk{}", &out[..11])
}

/// The device of the host route to exactly `ip` (/32 or /128), if there is one.
fn host_route_dev(ip: IpAddr) -> Option<String> {
    let (family, len) = if ip.is_ipv4() {
        ("-4", 32)
    } else {
        ("-6", 128)
    };
    let out = cmd::run_text(
        "ip",
        [
            "-o",
            family,
            "route",
            "show",
            "exact",
            &format!("{ip}/{len}"),
        ],
    );
    let mut words = out.split_whitespace();
    words
        .find(|w| *w == "dev")
        .and_then(|_| words.next())
        .map(String::from)
}

/// Run `cmd` in the container (output captured reliably), panicking unless it exits 0;
/// returns its stdout.
fn exec_ok(c: &Container<'_>, cmd: &[&str]) -> String {
    let out = c.exec_captured(cmd);
    assert!(
        out.status.success(),
        "in container {}: {cmd:?} exited with {}\n--- stdout\n{}\n--- stderr\n{}",
        c.id(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Global addresses of a family with their prefix lengths on `ifname` in the container.
fn addresses_of<A: std::str::FromStr>(c: &Container<'_>, ifname: &str, v6: bool) -> Vec<(A, u8)> {
    let (family, word) = if v6 { ("-6", "inet6") } else { ("-4", "inet") };
    let text = exec_ok(
        c,
        &[
            "ip", "-o", family, "addr", "show", "dev", ifname, "scope", "global",
        ],
    );
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == word)?;
            let (addr, len) = words.next()?.split_once('/')?;
            Some((addr.parse().ok()?, len.parse().ok()?))
        })
        .collect()
}

fn ipv4_of(c: &Container<'_>, ifname: &str) -> Vec<(Ipv4Addr, u8)> {
    addresses_of(c, ifname, false)
}

fn ipv6_of(c: &Container<'_>, ifname: &str) -> Vec<(Ipv6Addr, u8)> {
    addresses_of(c, ifname, true)
}

/// The container's default route of a family, as `ip route` prints it.
fn default_route(c: &Container<'_>, v6: bool) -> String {
    let family = if v6 { "-6" } else { "-4" };
    exec_ok(c, &["ip", family, "route", "show", "default"])
        .trim()
        .to_string()
}

/// The container's addresses, routes and neighbours, for failure messages.
fn pod_state(c: &Container<'_>) -> String {
    let out = c.exec_captured(&[
        "sh",
        "-c",
        "ip addr; ip route; ip -6 route; ip neigh; ip -6 neigh",
    ]);
    format!(
        "--- in container {}\n{}{}",
        c.id(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Two pings from `from` to `to` (busybox ping; `-6`-free, it picks the family).
fn ping(site: &Site, from: &Container<'_>, to: IpAddr) {
    let out = from.exec_captured(&["ping", "-c", "2", "-i", "0.2", "-W", "3", &to.to_string()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("2 packets received"),
        "{} cannot ping {to}:\n{text}{}\n{}\n{}",
        from.id(),
        String::from_utf8_lossy(&out.stderr),
        pod_state(from),
        site.logs()
    );
}

/// The counter that proves the pod-to-pod fast path in a link mode: veth pods' egress runs
/// at tcx ingress of the host veth and uses `bpf_redirect_peer`; netkit's runs in the
/// peer's xmit and uses `bpf_redirect`.
fn fast_path_counter(mode: &str) -> &'static str {
    match mode {
        "veth" => "redirect_peer",
        "netkit" => "redirect",
        other => panic!("unknown endpoint mode {other:?}"),
    }
}

/// Keeps `net.ipv6.conf.all.forwarding` as it was before the first of any concurrent
/// users (threads or test processes) enabled it: netkit-cni turns it on for IPv6 pods in
/// the root netns, and on a developer's machine that would outlive the test. A shared
/// `flock` on a file counts the users; the last one out restores the recorded value.
struct Ipv6ForwardingGuard {
    users: File,
    dir: PathBuf,
}

const IPV6_FORWARDING: &str = "/proc/sys/net/ipv6/conf/all/forwarding";

impl Ipv6ForwardingGuard {
    fn take() -> Ipv6ForwardingGuard {
        let dir = std::env::temp_dir().join("netkit-containerd-sysctl");
        fs::create_dir_all(&dir).unwrap();
        let _mutex = Self::mutex(&dir);
        let users = File::create(dir.join("users")).unwrap();
        if users.try_lock().is_ok() {
            // Nobody else holds it: what the sysctl says now is the machine's own value.
            let value = fs::read_to_string(IPV6_FORWARDING).unwrap();
            fs::write(dir.join("saved"), value.trim()).unwrap();
            users.unlock().unwrap();
        }
        users.lock_shared().unwrap();
        Ipv6ForwardingGuard { users, dir }
    }

    /// Serialises the bookkeeping (taking, releasing) between users.
    fn mutex(dir: &Path) -> File {
        let mutex = File::create(dir.join("mutex")).unwrap();
        mutex.lock().unwrap();
        mutex
    }
}

impl Drop for Ipv6ForwardingGuard {
    fn drop(&mut self) {
        let _mutex = Self::mutex(&self.dir);
        let _ = self.users.unlock();
        let last = File::create(self.dir.join("users")).is_ok_and(|f| f.try_lock().is_ok());
        let saved_path = self.dir.join("saved");
        if last && let Ok(saved) = fs::read_to_string(&saved_path) {
            let _ = fs::remove_file(&saved_path);
            let now = fs::read_to_string(IPV6_FORWARDING).unwrap_or_default();
            if now.trim() != saved.trim()
                && let Err(e) = fs::write(IPV6_FORWARDING, saved.trim())
            {
                eprintln!("cannot restore {IPV6_FORWARDING} to {saved}: {e}");
            }
        }
    }
}

/// Everything one container is expected to have, learnt while it runs.
struct Seen {
    cni_id: String,
    host_ifname: String,
    ips: Vec<IpAddr>,
}

/// The agent's endpoint for attachment `cni_id`/eth0.
fn endpoint_of<'e>(endpoints: &'e [Value], cni_id: &str) -> &'e Value {
    endpoints
        .iter()
        .find(|e| e["id"]["container_id"] == cni_id && e["id"]["ifname"] == "eth0")
        .unwrap_or_else(|| panic!("the agent has no endpoint for {cni_id}: {endpoints:?}"))
}

/// Check one running container: addresses (/32, /128) in the site's CIDRs, default routes
/// via the link-local gateways, host routes via the derived host link, the agent endpoint.
fn check_running(
    site: &Site,
    rig: &Containerd,
    c: &Container<'_>,
    ipam: Ipam,
    endpoints: &[Value],
) -> Seen {
    let v4 = ipv4_of(c, "eth0");
    let [(ip4, len4)] = v4[..] else {
        panic!(
            "want one IPv4 address on eth0 of {}: {v4:?}\n{}\n{}",
            c.id(),
            pod_state(c),
            site.logs()
        );
    };
    assert_eq!(len4, 32, "IPv4 prefix length on eth0 of {}", c.id());
    assert!(
        site.subnet.contains(ip4),
        "{ip4} not in {}",
        site.subnet.cidr()
    );
    let route4 = default_route(c, false);
    assert!(
        route4.starts_with(&format!("default via {GATEWAY4} dev eth0")),
        "IPv4 default route of {}: {route4:?}\n{}\n{}",
        c.id(),
        pod_state(c),
        site.logs()
    );
    let mut ips = vec![IpAddr::V4(ip4)];
    let v6 = ipv6_of(c, "eth0");
    match ipam {
        Ipam::BuiltIn => {
            let [(ip6, len6)] = v6[..] else {
                panic!("want one global IPv6 address on eth0 of {}: {v6:?}", c.id());
            };
            assert_eq!(len6, 128, "IPv6 prefix length on eth0 of {}", c.id());
            assert_eq!(
                u128::from(ip6) >> 64,
                u128::from(site.net6) >> 64,
                "{ip6} not in {}/64",
                site.net6
            );
            let route6 = default_route(c, true);
            assert!(
                route6.starts_with(&format!("default via {GATEWAY6} dev eth0")),
                "IPv6 default route of {}: {route6:?}\n{}\n{}",
                c.id(),
                pod_state(c),
                site.logs()
            );
            ips.push(IpAddr::V6(ip6));
        }
        Ipam::HostLocal => assert!(v6.is_empty(), "no IPv6 from host-local: {v6:?}"),
    }

    // ctr names the attachment `<namespace>-<id>`, and the host link is derived from it.
    let cni_id = format!("{}-{}", rig.namespace(), c.id());
    let host_ifname = expected_host_ifname(&cni_id, "eth0");
    assert!(
        host_link_exists(&host_ifname),
        "no host link {host_ifname} for {cni_id}"
    );
    let alias = fs::read_to_string(
        Path::new("/sys/class/net")
            .join(&host_ifname)
            .join("ifalias"),
    )
    .unwrap_or_default();
    assert_eq!(
        alias.trim(),
        format!("netkit-cni:{}:{cni_id}:eth0", site.network),
        "alias of {host_ifname}"
    );
    let mode = endpoint_of(endpoints, &cni_id)["mode"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let details = cmd::run_text("ip", ["-d", "-o", "link", "show", "dev", &host_ifname]);
    assert!(
        details.contains(&format!(" {mode} ")),
        "{host_ifname} is not a {mode} link: {details}"
    );
    for ip in &ips {
        assert_eq!(
            host_route_dev(*ip).as_deref(),
            Some(host_ifname.as_str()),
            "host route to {ip}"
        );
    }

    let endpoint = endpoint_of(endpoints, &cni_id);
    assert_eq!(endpoint["id"]["ifname"], "eth0");
    assert_eq!(endpoint["host_ifname"], host_ifname.as_str());
    assert_eq!(
        endpoint["builtin_ipam"],
        ipam == Ipam::BuiltIn,
        "{endpoint}"
    );
    assert!(
        !endpoint["programs"].as_array().unwrap().is_empty(),
        "no programs attached: {endpoint}"
    );
    let mut endpoint_ips: Vec<IpAddr> = endpoint["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ip| {
            let addr = ip["address"].as_str().unwrap();
            addr.split('/').next().unwrap().parse().unwrap()
        })
        .collect();
    endpoint_ips.sort();
    let mut want = ips.clone();
    want.sort();
    assert_eq!(endpoint_ips, want, "addresses of endpoint {endpoint}");
    Seen {
        cni_id,
        host_ifname,
        ips,
    }
}

/// The scenario: two containers, checks while they run, pings both ways (each family the
/// pods have) on the fast path, then delete both and check nothing is left.
fn two_containers_then_nothing_left(tag: &str, ipam: Ipam) {
    let t0 = Instant::now();
    let _forwarding = (ipam == Ipam::BuiltIn).then(Ipv6ForwardingGuard::take);
    let rig = Containerd::start();
    let rig_dir = rig.dir().to_path_buf();
    let site = Site::new(tag);
    let agent_socket = site.dirs.socket();
    let t_setup = t0.elapsed();

    let conflist = site.conflist(ipam);
    let cni = bins::cni();
    let host_local = PathBuf::from(HOST_LOCAL);
    let plugins: Vec<&Path> = match ipam {
        Ipam::BuiltIn => vec![cni.as_path()],
        Ipam::HostLocal => vec![cni.as_path(), host_local.as_path()],
    };

    let t1 = Instant::now();
    let a = rig.run_container(&format!("{tag}-a"), &conflist, &plugins, SLEEP);
    let t_first = t1.elapsed();
    let b = rig.run_container(&format!("{tag}-b"), &conflist, &plugins, SLEEP);

    let endpoints = site.agent.endpoints();
    assert_eq!(endpoints.len(), 2, "agent endpoints: {endpoints:?}");
    let seen_a = check_running(&site, &rig, &a, ipam, &endpoints);
    let seen_b = check_running(&site, &rig, &b, ipam, &endpoints);
    assert_ne!(seen_a.ips, seen_b.ips);
    let mode = endpoints[0]["mode"].as_str().unwrap().to_string();
    assert!(
        endpoints.iter().all(|e| e["mode"] == mode.as_str()),
        "{endpoints:?}"
    );
    if let Ipam::HostLocal = ipam {
        let data_dir = site.host_local_dir().join(&site.network);
        assert_eq!(allocations(&data_dir).len(), 2, "host-local allocations");
    }

    // Pings both ways, each family; every packet a pod sends to the other is redirected
    // by the datapath (2 requests + 2 replies per direction and family).
    let counter = fast_path_counter(&mode);
    let t2 = Instant::now();
    for (ip_a, ip_b) in seen_a.ips.iter().zip(&seen_b.ips) {
        let before = site.agent.counter(counter);
        ping(&site, &a, *ip_b);
        ping(&site, &b, *ip_a);
        let moved = site.agent.counter(counter) - before;
        assert!(
            moved >= 8,
            "{counter} moved by {moved} for 2 pings each way between {ip_a} and {ip_b}: {:?}",
            site.agent.stats()
        );
    }
    let t_ping = t2.elapsed();

    let t3 = Instant::now();
    a.delete();
    b.delete();
    let t_delete = t3.elapsed();

    // Nothing left: links, host routes, endpoints, pins, addresses, queued deletions.
    for seen in [&seen_a, &seen_b] {
        wait_until("host links to go", Duration::from_secs(10), || {
            !host_link_exists(&seen.host_ifname)
        });
        for ip in &seen.ips {
            assert_eq!(host_route_dev(*ip), None, "host route to {ip} left");
        }
    }
    assert_eq!(
        site.our_host_links(),
        Vec::<String>::new(),
        "host links left"
    );
    assert_eq!(
        site.agent.endpoints(),
        Vec::<Value>::new(),
        "agent endpoints"
    );
    assert_eq!(site.endpoint_pins(), Vec::<PathBuf>::new(), "endpoint pins");
    let status = site.agent.cli(&["status", "--json"]);
    let status: Value = serde_json::from_slice(&status.stdout).expect("status --json");
    assert_eq!(status["mapped_addresses"], 0, "agent status: {status}");
    assert_eq!(site.queued_deletions(), Vec::<PathBuf>::new(), "del-queue");
    if let Ipam::HostLocal = ipam {
        let data_dir = site.host_local_dir().join(&site.network);
        assert_eq!(
            allocations(&data_dir),
            Vec::<PathBuf>::new(),
            "host-local allocations"
        );
    }
    let results = rig.cni_state_dir().join("results");
    assert_eq!(
        fs::read_dir(&results).map(|d| d.count()).unwrap_or(0),
        0,
        "libcni's cached results"
    );
    assert!(rig.container_ids().is_empty());
    // It was netkit-cni's DEL (from `ctr`, with an empty CNI_NETNS) that did all this.
    let plugin_log = site.plugin_log();
    for seen in [&seen_a, &seen_b] {
        let del = format!("command=DEL container={} ifname=eth0", seen.cni_id);
        assert!(
            plugin_log.contains(&del),
            "no DEL for {} in the plugin log:\n{plugin_log}",
            seen.cni_id
        );
    }

    let bpffs = site.dirs.bpffs.path().to_path_buf();
    drop(site);
    drop(rig);
    assert!(!rig_dir.exists(), "{} left behind", rig_dir.display());
    assert!(!bpffs.exists(), "{} left behind", bpffs.display());
    let ps = cmd::run_text("ps", ["-eo", "pid,args"]);
    for needle in [rig_dir.as_path(), agent_socket.as_path()] {
        let needle = needle.to_string_lossy();
        assert!(
            !ps.lines().any(|l| l.contains(needle.as_ref())),
            "processes left:\n{ps}"
        );
    }

    eprintln!(
        "netkit {ipam:?} ({mode}): rig + agent {t_setup:?}, first container {t_first:?}, \
         pings {t_ping:?}, delete both {t_delete:?}, total {:?}",
        t0.elapsed()
    );
}

#[test]
fn netkit_built_in_ipam_two_containers_then_nothing_left() {
    two_containers_then_nothing_left("nkb", Ipam::BuiltIn);
}

#[test]
fn netkit_host_local_two_containers_then_nothing_left() {
    two_containers_then_nothing_left("nkh", Ipam::HostLocal);
}
