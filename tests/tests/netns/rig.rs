//! The netns rig itself: namespaces, veths, closures and commands inside, cleanup.

use std::fs;
use std::path::Path;
use std::thread;
use std::time::Duration;

use netkit_netlink::{Kernel as _, Ns, RtKernel};
use netkit_tests::netns::{At, NETNS_DIR, Netns, VethPair, unique_ifname, veth_pair, wait_until};

/// Kernel namespace teardown is asynchronous and slower under load: generous, since the
/// wait ends as soon as the condition holds.
const TEARDOWN: Duration = Duration::from_secs(10);

/// Two namespaces joined by `v0 <-> v0`, 192.0.2.1/24 + fd00:6e6b:ff::1/64 on `a`, .2 / ::2
/// on `b`. Namespaces are isolated, so parallel tests can all use these addresses.
fn joined_pair() -> (Netns, Netns, VethPair) {
    let a = Netns::new("a");
    let b = Netns::new("b");
    let veth = veth_pair((&a, "v0"), (&b, "v0"));
    for (ns, n) in [(&a, 1), (&b, 2)] {
        ns.ip(&format!("addr add 192.0.2.{n}/24 dev v0"));
        // nodad: usable at once, without a second of duplicate address detection.
        ns.ip(&format!("-6 addr add fd00:6e6b:ff::{n}/64 dev v0 nodad"));
    }
    (a, b, veth)
}

fn host_has_link(name: &str) -> bool {
    At::Host.links().iter().any(|l| l == name)
}

fn netns_listed(name: &str) -> bool {
    Path::new(NETNS_DIR).join(name).exists()
        || At::Host
            .ip("netns list")
            .lines()
            .any(|l| l.split_whitespace().next() == Some(name))
}

#[test]
fn veth_pair_carries_pings_both_ways() {
    let (a, b, _veth) = joined_pair();
    assert!(a.ping("192.0.2.2"), "a cannot ping b over IPv4");
    assert!(b.ping("192.0.2.1"), "b cannot ping a over IPv4");
    assert!(a.ping("fd00:6e6b:ff::2"), "a cannot ping b over IPv6");
    assert!(b.ping("fd00:6e6b:ff::1"), "b cannot ping a over IPv6");
    assert!(a.ping("127.0.0.1"), "lo is not up in a");
}

#[test]
fn run_sees_the_namespace_links_not_the_hosts() {
    let (a, _b, _veth) = joined_pair();
    let mut seen = At::Ns(&a).links();
    seen.sort();
    assert_eq!(seen, ["lo", "v0"], "links seen inside {}", a.name());
    for host_link in At::Host.links() {
        assert!(
            host_link == "lo" || !seen.contains(&host_link),
            "host link {host_link} visible inside {}",
            a.name()
        );
    }

    // Netlink in a namespace: only the socket is made there (a tokio runtime built inside
    // `run` would keep the namespace alive), and it stays bound to it.
    let mut kernel = RtKernel::in_netns(a.path()).expect("opening a netlink socket");
    let mut names: Vec<String> = kernel
        .links(Ns::Host)
        .expect("dumping links")
        .into_iter()
        .map(|l| l.name)
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["lo", "v0"],
        "links rtnetlink sees inside {}",
        a.name()
    );
}

#[test]
fn command_joins_the_netns_but_keeps_the_mount_namespace() {
    let ns = Netns::new("cmd");
    let out = ns.sh("readlink /proc/self/ns/net; readlink /proc/self/ns/mnt; ip -o link");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut lines = stdout.lines();

    // The file at /run/netns/<name> is the namespace's nsfs inode.
    let inode = std::os::unix::fs::MetadataExt::ino(&fs::metadata(ns.path()).unwrap());
    assert_eq!(lines.next(), Some(format!("net:[{inode}]").as_str()));
    // Same mount namespace as this process: /sys/fs/bpf is the real bpffs, unlike under
    // `ip netns exec`.
    let our_mnt = fs::read_link("/proc/self/ns/mnt").unwrap();
    assert_eq!(lines.next(), Some(our_mnt.to_str().unwrap()));
    let links: Vec<&str> = lines.collect();
    assert_eq!(links.len(), 1, "only lo expected, got {links:?}");
    assert!(
        links[0].contains("lo:") && links[0].contains("UP"),
        "{links:?}"
    );

    // iproute2 finds it by name, as if `ip netns add` had made it.
    At::Host.ip(&format!("-n {} link show lo", ns.name()));
    At::Host.ip(&format!("netns exec {} ip link show lo", ns.name()));
}

#[test]
fn enter_switches_this_thread_and_restores_it() {
    let ns = Netns::new("enter");
    let home = fs::read_link("/proc/thread-self/ns/net").unwrap();
    {
        let _inside = ns.enter();
        let now = fs::read_link("/proc/thread-self/ns/net").unwrap();
        assert_ne!(now, home, "enter() did not switch the thread");
        assert!(At::Host.links().iter().all(|l| l == "lo"));
    }
    assert_eq!(fs::read_link("/proc/thread-self/ns/net").unwrap(), home);
}

#[test]
fn drop_destroys_the_namespace_and_its_links() {
    let ns = Netns::new("gone");
    let host_end = unique_ifname("nkt");
    // A host end that can only disappear when the kernel destroys the namespace.
    let veth = veth_pair((At::Host, host_end.as_str()), (&ns, "eth0"));
    assert!(host_has_link(&host_end));
    let name = ns.name().to_owned();
    assert!(netns_listed(&name));

    drop(ns);
    assert!(!netns_listed(&name), "{name} still in {NETNS_DIR}");
    assert!(
        wait_until(TEARDOWN, || !host_has_link(&host_end)),
        "{host_end} outlived its peer's namespace: the namespace was not destroyed"
    );
    drop(veth); // its host end is already gone: no error
}

#[test]
fn a_panicking_test_still_cleans_up() {
    let host_end = unique_ifname("nkt");
    let (tx, rx) = std::sync::mpsc::channel();
    let result = thread::spawn({
        let host_end = host_end.clone();
        move || {
            let ns = Netns::new("panic");
            let _veth = veth_pair((At::Host, host_end.as_str()), (&ns, "eth0"));
            tx.send(ns.name().to_owned()).unwrap();
            panic!("deliberate panic with a live rig");
        }
    })
    .join();
    assert!(result.is_err(), "the thread was meant to panic");
    let name = rx.recv().unwrap();
    assert!(!netns_listed(&name), "{name} survived the panic");
    assert!(
        wait_until(TEARDOWN, || !host_has_link(&host_end)),
        "{host_end} survived the panic"
    );
}

#[test]
fn eight_rigs_in_parallel() {
    let leftovers: Vec<(String, String, String)> = thread::scope(|scope| {
        let workers: Vec<_> = (0..8)
            .map(|i| {
                scope.spawn(move || {
                    let (a, b, _veth) = joined_pair();
                    // A host-side end per worker: names must not collide across threads.
                    let host_end = unique_ifname("nkt");
                    let _probe = veth_pair((&a, "probe"), (At::Host, host_end.as_str()));
                    assert!(a.ping("192.0.2.2"), "worker {i}: a cannot ping b");
                    assert!(b.ping("192.0.2.1"), "worker {i}: b cannot ping a");
                    (a.name().to_owned(), b.name().to_owned(), host_end)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("a worker failed"))
            .collect()
    });
    for (a, b, host_end) in leftovers {
        assert!(!netns_listed(&a) && !netns_listed(&b), "{a} or {b} left");
        assert!(
            wait_until(TEARDOWN, || !host_has_link(&host_end)),
            "{host_end} left"
        );
    }
}
