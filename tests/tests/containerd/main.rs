//! containerd tier: a private containerd, `ctr run --cni --rootfs` (busybox) as the CNI
//! client, plugins from a private CNI bin dir, the conflist from a private conf dir (see
//! `netkit_tests::containerd`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failure is a test failure, reported by the panic"
)]

mod netkit;

use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use netkit_tests::cmd;
use netkit_tests::containerd::{
    Containerd, SLEEP, Subnet, ptp_conflist, reference_plugins, unique_name,
};

/// The host-side device of the host route to `ip` (ptp installs `ip/32 dev vethXXXX`).
fn host_route_dev(ip: Ipv4Addr) -> Option<String> {
    let out = cmd::run_text(
        "ip",
        ["-4", "-o", "route", "show", "exact", &format!("{ip}/32")],
    );
    let mut words = out.split_whitespace();
    words
        .find(|w| *w == "dev")
        .and_then(|_| words.next())
        .map(String::from)
}

fn host_link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Files in a host-local data dir that record an allocation (named after the IP).
fn allocations(data_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(data_dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.parse::<Ipv4Addr>().is_ok())
        })
        .collect()
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        sleep(Duration::from_millis(20));
    }
}

/// Two busybox containers on the reference `ptp` + `host-local`: each gets an address in
/// the subnet, one pings the other through the host, and deleting them leaves nothing.
#[test]
fn ptp_smoke() {
    let t0 = Instant::now();
    let rig = Containerd::start();
    let rig_dir = rig.dir().to_path_buf();
    let t_start = t0.elapsed();

    let subnet = Subnet::allocate();
    let network = unique_name("ptp");
    let ipam_dir = rig.dir().join("ipam");
    let conflist = ptp_conflist(&network, &subnet, &ipam_dir);
    let plugins = reference_plugins(&["ptp", "host-local"]);
    let plugins: Vec<&Path> = plugins.iter().map(PathBuf::as_path).collect();

    let t1 = Instant::now();
    let a = rig.run_container("smoke-a", &conflist, &plugins, SLEEP);
    let t_run = t1.elapsed();
    let b = rig.run_container("smoke-b", &conflist, &plugins, SLEEP);

    let (ip_a, ip_b) = (a.ip(), b.ip());
    assert_eq!(a.ipv4_of("eth0").1, 24, "prefix length of {ip_a}");
    for ip in [ip_a, ip_b] {
        assert!(subnet.contains(ip), "{ip} not in {}", subnet.cidr());
    }
    assert_ne!(ip_a, ip_b);
    // The conflist and plugins were only in the private dirs: the host's are untouched.
    for host_dir in ["/etc/cni/net.d", "/opt/cni/bin", "/var/lib/cni"] {
        for entry in fs::read_dir(host_dir).unwrap().flatten() {
            let text = fs::read(entry.path()).unwrap_or_default();
            assert!(
                !String::from_utf8_lossy(&text).contains(&network),
                "{} mentions {network}",
                entry.path().display()
            );
        }
    }
    // libcni's cache is the rig's private one, and host-local wrote to our data dir.
    let results = rig.cni_state_dir().join("results");
    assert_eq!(
        fs::read_dir(&results).unwrap().count(),
        2,
        "cached CNI results"
    );
    let data_dir = ipam_dir.join(&network);
    assert_eq!(allocations(&data_dir).len(), 2, "host-local allocations");

    let veth_a = host_route_dev(ip_a).expect("host route to container a");
    let veth_b = host_route_dev(ip_b).expect("host route to container b");
    assert!(host_link_exists(&veth_a) && host_link_exists(&veth_b));

    let t2 = Instant::now();
    let ping = b.exec_ok(&["ping", "-c", "2", "-i", "0.2", "-W", "5", &ip_a.to_string()]);
    let t_ping = t2.elapsed();
    assert!(ping.contains("2 packets received"), "{ping}");

    let t3 = Instant::now();
    a.delete();
    b.delete();
    let t_delete = t3.elapsed();

    // CNI DEL ran (through libcni, which drops its cached result) and host-local released
    // the addresses; the host side of each veth went with the container's netns.
    assert_eq!(
        fs::read_dir(&results).unwrap().count(),
        0,
        "cached CNI results"
    );
    assert_eq!(
        allocations(&data_dir),
        Vec::<PathBuf>::new(),
        "host-local allocations"
    );
    wait_until("host veths to go", Duration::from_secs(10), || {
        !host_link_exists(&veth_a) && !host_link_exists(&veth_b)
    });
    assert_eq!(host_route_dev(ip_a), None);
    assert_eq!(host_route_dev(ip_b), None);
    assert!(rig.container_ids().is_empty());

    let ns = rig.namespace().to_string();
    drop(rig);
    assert!(!rig_dir.exists(), "{} left behind", rig_dir.display());
    let needle = rig_dir.to_string_lossy().into_owned();
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&needle),
        "mounts left under {needle}:\n{mounts}"
    );
    let ps = cmd::run_text("ps", ["-eo", "pid,args"]);
    assert!(
        !ps.lines().any(|l| l.contains(&needle)),
        "processes left:\n{ps}"
    );
    for hierarchy in fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let cg = hierarchy.path().join(&ns);
        assert!(!cg.exists(), "cgroup {} left", cg.display());
    }
    assert!(
        !Path::new("/sys/fs/cgroup").join(&ns).exists(),
        "cgroup {ns} left"
    );

    eprintln!(
        "ptp_smoke: containerd start {t_start:?}, first container {t_run:?}, ping {t_ping:?}, \
         delete both {t_delete:?}, total {:?}",
        t0.elapsed()
    );
}

/// The rig notices a failing CNI DEL (which `ctr` only logs): a wrapper plugin runs `ptp`
/// for ADD and fails DEL.
#[test]
fn failed_cni_del_is_reported() {
    let rig = Containerd::start();
    let subnet = Subnet::allocate();
    let wrapper = rig.dir().join("ptp-del-fails");
    fs::write(
        &wrapper,
        "#!/bin/sh\n\
         if [ \"$CNI_COMMAND\" = DEL ]; then\n\
         echo '{\"cniVersion\":\"1.0.0\",\"code\":999,\"msg\":\"deliberate DEL failure\"}'\n\
         exit 1\n\
         fi\n\
         exec /usr/lib/cni/ptp\n",
    )
    .unwrap();
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
    let conflist = ptp_conflist(&unique_name("ptp"), &subnet, &rig.dir().join("ipam"))
        .replace("\"type\":\"ptp\"", "\"type\":\"ptp-del-fails\"");
    assert!(conflist.contains("ptp-del-fails"), "{conflist}");
    let host_local = reference_plugins(&["host-local"]);
    let plugins = [wrapper.as_path(), host_local[0].as_path()];

    let c = rig.run_container("del-fails", &conflist, &plugins, SLEEP);
    assert!(subnet.contains(c.ip()));
    let err = c
        .try_delete()
        .expect_err("delete must fail when CNI DEL fails");
    assert!(err.contains("deliberate DEL failure"), "{err}");
}
