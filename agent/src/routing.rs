//! Routes to the other nodes' pods, brought to what the node list says: for every remote
//! pod CIDR a kernel route `cidr via nodeIP` (under our own route protocol, so we know and
//! remove only our own), an entry in the datapath's remote-route map, and a managed,
//! externally learned neighbour entry for the next hop (`NTF_EXT_MANAGED` +
//! `NTF_EXT_LEARNED`, tagged with our protocol), which the kernel keeps resolved so
//! `bpf_fib_lookup` finds its link-layer address.
//!
//! Reconciliation compares and converges; it never flushes. Routes and neighbour
//! entries of anyone else are left alone, even when they stand in our way (that is
//! reported, not overridden).

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use netkit_netlink::neighbour::NeighbourState;
use netkit_netlink::{Kernel, KernelError, NeighbourEntry, Ns, Route, RouteOwner};

use crate::nodes::RemoteRoute;

/// Our route protocol number (`ip route show proto 197`); unassigned in iproute2's
/// `rt_protos`, and also the `NDA_PROTOCOL` of our neighbour entries.
pub const RTPROT_NETKIT: u8 = 197;

const OWNER: RouteOwner = RouteOwner::main(RTPROT_NETKIT);

/// The datapath's remote-route map, as the reconciler sees it.
pub trait RouteMap {
    fn entries(&self) -> Vec<(IpNetwork, IpAddr)>;
    fn set(&self, cidr: IpNetwork, node: IpAddr) -> Result<(), String>;
    fn remove(&self, cidr: IpNetwork) -> Result<(), String>;
}

impl RouteMap for crate::datapath::Datapath {
    fn entries(&self) -> Vec<(IpNetwork, IpAddr)> {
        self.remote_routes()
    }
    fn set(&self, cidr: IpNetwork, node: IpAddr) -> Result<(), String> {
        self.set_remote_route(cidr, node).map_err(|e| e.to_string())
    }
    fn remove(&self, cidr: IpNetwork) -> Result<(), String> {
        self.remove_remote_route(cidr).map_err(|e| e.to_string())
    }
}

/// What one reconciliation did and could not do.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub routes_added: usize,
    pub routes_removed: usize,
    pub neighbours_added: usize,
    pub neighbours_removed: usize,
    /// Problems that left part of the desired state out (the rest still applied).
    pub problems: Vec<String>,
    /// The kernel refused managed neighbour entries (before 5.16): routing works, the
    /// first packet to a next hop just waits for resolution.
    pub no_managed_neighbours: bool,
}

/// The kernel route for `r`, out of the uplink when the agent has one (the node
/// addresses are on its link), else wherever the kernel resolves the next hop.
fn kernel_route(r: &RemoteRoute, uplink: Option<u32>) -> Route {
    Route {
        dst: r.cidr.network(),
        prefix: r.cidr.prefix(),
        gateway: Some(r.via),
        oif: uplink,
        onlink: false,
    }
}

/// The same destination (the kernel identifies a route by prefix in a table).
fn same_prefix(a: &Route, b: &Route) -> bool {
    a.dst == b.dst && a.prefix == b.prefix
}

/// Bring kernel routes, neighbour entries and the route map to `desired`; `uplink` is
/// the ifindex of the node's uplink, when it has one.
pub fn reconcile(
    kernel: &mut dyn Kernel,
    map: &dyn RouteMap,
    desired: &[RemoteRoute],
    uplink: Option<u32>,
) -> Report {
    let mut report = Report::default();
    let want: Vec<Route> = desired.iter().map(|r| kernel_route(r, uplink)).collect();

    // Kernel routes.
    let ours = match kernel.owned_routes(Ns::Host, OWNER) {
        Ok(routes) => routes,
        Err(e) => {
            report.problems.push(format!("listing our routes: {e}"));
            return report;
        }
    };
    for stale in ours
        .iter()
        .filter(|r| !want.iter().any(|w| same_prefix(w, r)))
    {
        match kernel.delete_owned_route(Ns::Host, OWNER, stale) {
            Ok(()) => report.routes_removed += 1,
            Err(e) if e.is_not_found() => {}
            Err(e) => report.problems.push(e.to_string()),
        }
    }
    for route in &want {
        let current = ours.iter().find(|r| same_prefix(r, route));
        let result = match current {
            Some(r) if r.gateway == route.gateway && (uplink.is_none() || r.oif == uplink) => {
                continue;
            }
            // Ours, via another node address (the node's IP changed): move it.
            Some(_) => kernel.replace_owned_route(Ns::Host, OWNER, route),
            None => kernel.add_owned_route(Ns::Host, OWNER, route),
        };
        match result {
            Ok(()) => report.routes_added += 1,
            Err(e) if e.is(libc::EEXIST) => report.problems.push(format!(
                "{}/{} already has a route that is not ours; left alone",
                route.dst, route.prefix
            )),
            Err(e) => report.problems.push(e.to_string()),
        }
    }

    // Neighbour entries for the next hops, on the devices the kernel routes them by.
    let routed = kernel.owned_routes(Ns::Host, OWNER).unwrap_or_default();
    let hops: BTreeSet<(u32, IpAddr)> = routed
        .iter()
        .filter(|r| want.iter().any(|w| same_prefix(w, r)))
        .filter_map(|r| Some((r.oif?, r.gateway?)))
        .collect();
    reconcile_neighbours(kernel, &hops, &mut report);

    // The datapath's map last: a CIDR is on the fast path only once its route exists.
    let installed: Vec<&RemoteRoute> = desired
        .iter()
        .filter(|d| {
            routed
                .iter()
                .any(|r| same_prefix(r, &kernel_route(d, uplink)))
        })
        .collect();
    for (cidr, _) in map.entries() {
        if !installed.iter().any(|d| d.cidr == cidr)
            && let Err(e) = map.remove(cidr)
        {
            report.problems.push(e);
        }
    }
    let present = map.entries();
    for route in installed {
        if present.contains(&(route.cidr, route.via)) {
            continue;
        }
        if let Err(e) = map.set(route.cidr, route.via) {
            report.problems.push(e);
        }
    }
    report
}

fn reconcile_neighbours(
    kernel: &mut dyn Kernel,
    hops: &BTreeSet<(u32, IpAddr)>,
    report: &mut Report,
) {
    let entries = match kernel.neighbour_entries(Ns::Host, None) {
        Ok(entries) => entries,
        Err(e) => {
            report
                .problems
                .push(format!("listing neighbour entries: {e}"));
            return;
        }
    };
    let ours = |e: &NeighbourEntry| e.protocol == Some(RTPROT_NETKIT);
    for stale in entries
        .iter()
        .filter(|e| ours(e) && !hops.contains(&(e.ifindex, e.ip)))
    {
        match kernel.delete_neighbour(Ns::Host, stale.ifindex, stale.ip) {
            Ok(()) => report.neighbours_removed += 1,
            Err(e) if e.is_not_found() => {}
            Err(e) => report.problems.push(e.to_string()),
        }
    }
    for &(ifindex, ip) in hops {
        let existing = entries.iter().find(|e| e.ifindex == ifindex && e.ip == ip);
        match existing {
            Some(e) if ours(e) && e.managed && e.extern_learned => continue,
            // An administrator's static entry is theirs: keep it, it resolves the hop.
            Some(e) if !ours(e) && e.state == NeighbourState::Permanent => continue,
            _ => {}
        }
        let entry = NeighbourEntry::managed(ifindex, ip, Some(RTPROT_NETKIT));
        match kernel.replace_neighbour_entry(Ns::Host, &entry) {
            Ok(()) => report.neighbours_added += 1,
            Err(e) if unsupported(&e) => {
                report.no_managed_neighbours = true;
                return;
            }
            Err(e) => report.problems.push(e.to_string()),
        }
    }
}

/// How a kernel without managed neighbour entries refuses one.
fn unsupported(e: &KernelError) -> bool {
    e.is(libc::EINVAL) || e.is(libc::EOPNOTSUPP)
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use netkit_netlink::fake::FakeKernel;

    use super::*;

    #[derive(Default)]
    struct FakeMap(RefCell<Vec<(IpNetwork, IpAddr)>>);

    impl RouteMap for FakeMap {
        fn entries(&self) -> Vec<(IpNetwork, IpAddr)> {
            self.0.borrow().clone()
        }
        fn set(&self, cidr: IpNetwork, node: IpAddr) -> Result<(), String> {
            let mut v = self.0.borrow_mut();
            v.retain(|(c, _)| *c != cidr);
            v.push((cidr, node));
            Ok(())
        }
        fn remove(&self, cidr: IpNetwork) -> Result<(), String> {
            self.0.borrow_mut().retain(|(c, _)| *c != cidr);
            Ok(())
        }
    }

    fn uplink(kernel: &mut FakeKernel) -> Option<u32> {
        kernel
            .link_by_name(Ns::Host, "eth0")
            .unwrap()
            .map(|l| l.index)
    }

    fn remote(cidr: &str, via: &str) -> RemoteRoute {
        RemoteRoute {
            cidr: cidr.parse().unwrap(),
            via: via.parse().unwrap(),
            node: "n".into(),
        }
    }

    #[test]
    fn converges_and_is_idempotent() {
        let mut kernel = FakeKernel::new();
        let map = FakeMap::default();
        let desired = vec![
            remote("10.244.2.0/24", "192.0.2.2"),
            remote("fd00:244:2::/64", "2001:db8::2"),
        ];
        let uplink = uplink(&mut kernel);
        let first = reconcile(&mut kernel, &map, &desired, uplink);
        assert!(first.problems.is_empty(), "{first:?}");
        assert_eq!(first.routes_added, 2);
        assert_eq!(first.neighbours_added, 2, "one managed entry per next hop");
        assert_eq!(map.entries().len(), 2);
        let entries = kernel.neighbour_entries(Ns::Host, None).unwrap();
        assert!(
            entries
                .iter()
                .all(|e| e.managed && e.extern_learned && e.protocol == Some(RTPROT_NETKIT)),
            "{entries:?}"
        );
        let again = reconcile(&mut kernel, &map, &desired, uplink);
        assert_eq!(again, Report::default(), "a second pass changes nothing");
    }

    #[test]
    fn removed_and_moved_nodes_are_followed_and_foreign_routes_kept() {
        let mut kernel = FakeKernel::new();
        let map = FakeMap::default();
        let foreign = Route {
            dst: "10.99.0.0".parse().unwrap(),
            prefix: 16,
            gateway: Some("192.0.2.99".parse().unwrap()),
            oif: None,
            onlink: false,
        };
        kernel.add_route(Ns::Host, &foreign).unwrap();
        let uplink = uplink(&mut kernel);
        reconcile(
            &mut kernel,
            &map,
            &[
                remote("10.244.2.0/24", "192.0.2.2"),
                remote("10.244.3.0/24", "192.0.2.3"),
            ],
            uplink,
        );
        // Node 3 leaves, node 2 changes address.
        let report = reconcile(
            &mut kernel,
            &map,
            &[remote("10.244.2.0/24", "192.0.2.22")],
            uplink,
        );
        assert_eq!(report.routes_removed, 1, "{report:?}");
        let hops: Vec<IpAddr> = kernel
            .neighbour_entries(Ns::Host, None)
            .unwrap()
            .iter()
            .filter(|e| e.protocol == Some(RTPROT_NETKIT))
            .map(|e| e.ip)
            .collect();
        assert_eq!(
            hops,
            vec!["192.0.2.22".parse::<IpAddr>().unwrap()],
            "old next hops stay"
        );
        let ours = kernel.owned_routes(Ns::Host, OWNER).unwrap();
        assert_eq!(ours.len(), 1);
        assert_eq!(ours[0].gateway, Some("192.0.2.22".parse().unwrap()));
        assert_eq!(
            map.entries(),
            vec![(
                "10.244.2.0/24".parse().unwrap(),
                "192.0.2.22".parse().unwrap()
            )]
        );
        assert!(
            kernel.routes(Ns::Host).unwrap().contains(&foreign),
            "a route that is not ours was touched"
        );
        // A foreign route to a CIDR we want: reported, kept, not on the fast path.
        let report = reconcile(
            &mut kernel,
            &map,
            &[remote("10.99.0.0/16", "192.0.2.5")],
            uplink,
        );
        assert_eq!(report.problems.len(), 1, "{report:?}");
        assert!(kernel.routes(Ns::Host).unwrap().contains(&foreign));
        assert!(map.entries().is_empty());
    }
}
