//! netkit-netlink against the host kernel: what it writes is what the kernel (and
//! iproute2) read back. Routes with a table and our protocol, managed neighbour entries,
//! link deletion from async code. Each test works in namespaces of its own.

use std::net::IpAddr;
use std::time::Duration;

use netkit_netlink::link::{self, Pair};
use netkit_netlink::route::{self, RT_TABLE_MAIN};
use netkit_netlink::{Kernel as _, KernelResult, NeighbourEntry, Ns, Route, RouteOwner, RtKernel};
use netkit_tests::netns::{Netns, veth_pair, wait_until};

/// A protocol number nobody else uses in these namespaces.
const PROTO: u8 = 201;
const OURS: RouteOwner = RouteOwner::main(PROTO);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn via(dst: &str, prefix: u8, gateway: &str, oif: u32) -> Route {
    Route {
        dst: ip(dst),
        prefix,
        gateway: Some(ip(gateway)),
        oif: Some(oif),
        onlink: false,
    }
}

/// `a` and `b` joined by `v0 <-> v0`, with 192.0.2.{1,2}/24 and fd00:6e6b:ff::{1,2}/64
/// added through the crate; returns a's and b's index of v0.
fn joined() -> (Netns, Netns, u32, u32) {
    let a = Netns::new("nla");
    let b = Netns::new("nlb");
    // Both ends live in namespaces that die with them: nothing to keep.
    let _ = veth_pair((&a, "v0"), (&b, "v0"));
    let mut index = [0; 2];
    for (n, ns) in [&a, &b].into_iter().enumerate() {
        index[n] = {
            let mut k = RtKernel::in_netns(ns.path()).expect("netlink");
            let v0 = k.link_by_name(Ns::Host, "v0").unwrap().expect("v0");
            k.add_address(Ns::Host, v0.index, ip(&format!("192.0.2.{}", n + 1)), 24)
                .unwrap();
            k.add_address(
                Ns::Host,
                v0.index,
                ip(&format!("fd00:6e6b:ff::{}", n + 1)),
                64,
            )
            .unwrap();
            let mut have = k.addresses(Ns::Host, v0.index).unwrap();
            have.sort();
            assert!(
                have.contains(&(ip(&format!("192.0.2.{}", n + 1)), 24)),
                "{have:?}"
            );
            assert!(
                have.contains(&(ip(&format!("fd00:6e6b:ff::{}", n + 1)), 64)),
                "{have:?}"
            );
            v0.index
        };
    }
    (a, b, index[0], index[1])
}

#[test]
fn routes_with_our_protocol_are_ours_alone() {
    let (a, _b, v0, _) = joined();
    let ours4 = via("10.244.1.0", 24, "192.0.2.2", v0);
    let ours6 = via("fd00:244:1::", 64, "fd00:6e6b:ff::2", v0);
    let table = RouteOwner {
        table: 1000,
        protocol: PROTO,
    };
    a.ip("route add 10.244.9.0/24 via 192.0.2.2 dev v0");
    let foreign = via("10.244.9.0", 24, "192.0.2.2", v0);

    {
        let mut k = RtKernel::in_netns(a.path()).expect("netlink");
        k.add_owned_route(Ns::Host, OURS, &ours4).unwrap();
        k.add_owned_route(Ns::Host, OURS, &ours6).unwrap();
        k.add_owned_route(Ns::Host, table, &ours4).unwrap();

        let mut listed = k.owned_routes(Ns::Host, OURS).unwrap();
        listed.sort_by_key(|r| r.dst);
        assert_eq!(listed, [ours4.clone(), ours6.clone()]);
        assert_eq!(
            k.owned_routes(Ns::Host, table).unwrap(),
            std::slice::from_ref(&ours4)
        );
        let main = k.routes(Ns::Host).unwrap();
        assert!(main.contains(&ours4) && main.contains(&foreign), "{main:?}");
        // `ip route add` is proto boot, not static: the plugin's owner does not claim it.
        let statics = k.owned_routes(Ns::Host, RouteOwner::MAIN_STATIC).unwrap();
        assert!(!statics.contains(&foreign), "{statics:?}");

        // A second add of the prefix is EEXIST; a replace moves the next hop.
        let e = k.add_owned_route(Ns::Host, OURS, &ours4).unwrap_err();
        assert!(e.is(libc::EEXIST), "{e}");
        let moved = via("10.244.1.0", 24, "192.0.2.3", v0);
        k.replace_owned_route(Ns::Host, OURS, &moved).unwrap();
        assert!(k.owned_routes(Ns::Host, OURS).unwrap().contains(&moved));

        // The kernel deletes only a route of our protocol.
        let foreign_owner = RouteOwner::main(3);
        assert_eq!(
            k.owned_routes(Ns::Host, foreign_owner).unwrap(),
            std::slice::from_ref(&foreign)
        );
        let e = k.delete_owned_route(Ns::Host, OURS, &foreign).unwrap_err();
        assert!(e.is_not_found(), "{e}");
        assert!(k.routes(Ns::Host).unwrap().contains(&foreign));
        let e = k
            .delete_owned_route(Ns::Host, RouteOwner::MAIN_STATIC, &moved)
            .unwrap_err();
        assert!(e.is_not_found(), "{e}");

        k.delete_owned_route(Ns::Host, OURS, &moved).unwrap();
        k.delete_owned_route(Ns::Host, OURS, &ours6).unwrap();
        assert_eq!(k.owned_routes(Ns::Host, OURS).unwrap(), []);
        let e = k.delete_owned_route(Ns::Host, OURS, &ours6).unwrap_err();
        assert!(e.is_not_found(), "{e}");
    }

    // iproute2 agrees on the table and the protocol.
    let shown = a.ip(&format!("route show table 1000 proto {PROTO}"));
    assert!(
        shown.contains("10.244.1.0/24 via 192.0.2.2 dev v0"),
        "{shown}"
    );
    let main = a.ip(&format!("route show table {RT_TABLE_MAIN}"));
    assert!(main.contains("10.244.9.0/24 via 192.0.2.2"), "{main}");
    assert!(!main.contains("10.244.1.0/24"), "{main}");
}

#[test]
fn managed_neighbours_are_resolved_by_the_kernel() {
    let (a, b, v0, _) = joined();
    let b_mac = RtKernel::in_netns(b.path())
        .expect("netlink")
        .link_by_name(Ns::Host, "v0")
        .unwrap()
        .unwrap()
        .mac
        .unwrap();
    let hops = [ip("192.0.2.2"), ip("fd00:6e6b:ff::2")];

    let mut k = RtKernel::in_netns(a.path()).expect("netlink");
    let added: KernelResult<()> = hops.iter().try_for_each(|hop| {
        k.replace_neighbour_entry(Ns::Host, &NeighbourEntry::managed(v0, *hop, Some(PROTO)))
    });
    if let Err(e) = &added
        && e.is(libc::EINVAL)
    {
        println!("skipped: this kernel refuses managed neighbour entries ({e})");
        return;
    }
    added.unwrap();

    // Read back with their flags; the kernel resolves them to b's MAC by itself.
    let resolved = wait_until(Duration::from_secs(10), || {
        let entries = k.neighbour_entries(Ns::Host, Some(v0)).unwrap();
        hops.iter().all(|hop| {
            entries.iter().any(|n| {
                n.ip == *hop
                    && n.managed
                    && n.extern_learned
                    && n.protocol == Some(PROTO)
                    && n.mac.as_deref() == Some(b_mac.as_slice())
            })
        })
    });
    let shown = a.ip("neigh show dev v0");
    assert!(resolved, "managed entries not resolved to b's MAC: {shown}");
    for hop in hops {
        let line = shown
            .lines()
            .find(|l| l.starts_with(&format!("{hop} ")))
            .unwrap_or_else(|| panic!("no entry for {hop}: {shown}"));
        assert!(
            line.contains("extern_learn") && line.contains("managed"),
            "{line}"
        );
    }

    let e = k
        .add_neighbour_entry(Ns::Host, &NeighbourEntry::managed(v0, hops[0], None))
        .unwrap_err();
    assert!(e.is(libc::EEXIST), "{e}");
    for hop in hops {
        k.delete_neighbour(Ns::Host, v0, hop).unwrap();
        let e = k.delete_neighbour(Ns::Host, v0, hop).unwrap_err();
        assert!(e.is_not_found(), "{e}");
    }
    let left = k.neighbour_entries(Ns::Host, Some(v0)).unwrap();
    assert!(left.iter().all(|n| !n.managed), "{left:?}");
}

#[test]
fn async_callers_delete_links_by_index_and_find_the_default_route() {
    let ns = Netns::new("nlx");
    // The runtime is built here, in the test's own namespace; only the socket is in `ns`.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let h = netkit_netlink::connect_in(ns.path()).expect("netlink");
        let pair = Pair {
            name: "x0",
            peer: "x1",
            peer_netns: None,
            attributes: &[netlink_packet_route::link::LinkAttribute::Mtu(1400)],
        };
        link::add(&h, pair.veth()).await.unwrap();
        let x0 = link::by_name(&h, "x0").await.unwrap().expect("x0");
        let x1 = link::by_name(&h, "x1").await.unwrap().expect("x1");
        assert_eq!((x0.mtu, x1.mtu), (1400, 1400));
        assert_eq!(x0.peer_index, Some(x1.index));

        assert_eq!(route::default_route_link(&h).await.unwrap(), None);
        link::set_up(&h, x0.index).await.unwrap();
        let gw = Route {
            dst: ip("0.0.0.0"),
            prefix: 0,
            gateway: Some(ip("192.0.2.1")),
            oif: Some(x0.index),
            onlink: true,
        };
        route::add(&h, RouteOwner::MAIN_STATIC, &gw).await.unwrap();
        let found = route::default_route_link(&h).await.unwrap();
        assert_eq!(found.map(|l| l.name).as_deref(), Some("x0"));

        // Deleting one end takes the pair, and with it the route.
        link::delete(&h, x0.index).await.unwrap();
        assert_eq!(link::by_index(&h, x1.index).await.unwrap(), None);
        assert_eq!(route::default_route_link(&h).await.unwrap(), None);
        let e = link::delete(&h, x0.index).await.unwrap_err();
        assert!(e.is_not_found(), "{e}");
    });
    // Not a link of ours leaked into the test's own namespace.
    assert!(
        !netkit_tests::netns::At::Host
            .links()
            .iter()
            .any(|l| l == "x0" || l == "x1")
    );
}

#[test]
fn a_route_get_answers_as_ip_route_get_does() {
    let (a, _b, v0, _) = joined();
    let mut k = RtKernel::in_netns(a.path()).expect("netlink");
    let get = |k: &mut RtKernel, dst: &str| k.route_get(Ns::Host, ip(dst)).unwrap();

    // On the link: no gateway, out of v0.
    let on_link = get(&mut k, "192.0.2.7").expect("a route on the link");
    assert_eq!((on_link.gateway, on_link.oif), (None, Some(v0)));
    // No way out yet: neither family reaches the outside, and nothing names the uplink.
    for outside in route::OUTSIDE {
        assert_eq!(k.route_get(Ns::Host, outside).unwrap(), None, "{outside}");
    }
    assert_eq!(
        netkit_netlink::default_route_link(&mut k, Ns::Host).unwrap(),
        None
    );

    // An IPv6 default route alone names v0; then an IPv4 one is asked first.
    a.ip("-6 route add default via fd00:6e6b:ff::2 dev v0");
    let uplink = netkit_netlink::default_route_link(&mut k, Ns::Host).unwrap();
    assert_eq!(uplink.map(|l| l.index), Some(v0));
    a.ip("route add default via 192.0.2.2 dev v0");
    let out = get(&mut k, "1.1.1.1").expect("the default route");
    assert_eq!((out.gateway, out.oif), (Some(ip("192.0.2.2")), Some(v0)));
    let out6 = get(&mut k, "2606:4700:4700::1111").expect("the IPv6 default route");
    assert_eq!(out6.gateway, Some(ip("fd00:6e6b:ff::2")));

    // Unreachable, prohibit and blackhole routes are no way out.
    a.ip("route add unreachable 198.51.100.0/26");
    a.ip("route add prohibit 198.51.100.64/26");
    a.ip("route add blackhole 198.51.100.128/26");
    for dst in ["198.51.100.1", "198.51.100.65", "198.51.100.129"] {
        assert_eq!(get(&mut k, dst), None, "{dst}");
    }
}
