//! An in-memory kernel for unit tests: a host namespace and pod namespaces holding
//! links, addresses, routes and neighbours, with the kernel's refusals that matter to
//! the callers' decisions (`EEXIST`, `EOPNOTSUPP` for netkit, `ENETDOWN` for a route
//! via a down link, `ESRCH` for deleting a route someone else owns, `EINVAL` for a
//! permanent managed neighbour) and failure injection on the n-th change.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

use netlink_packet_route::link::{
    InfoData, InfoNetkit, InfoVeth, LinkAttribute, LinkInfo, LinkMessage, NetkitMode, NetkitPolicy,
};

use netlink_packet_route::neighbour::NeighbourState;

use crate::error::{KernelError, KernelResult};
use crate::kernel::{Kernel, Ns};
use crate::link::{Link, LinkKind, NetkitInfo};
use crate::neighbour::{Neighbour, NeighbourEntry};
use crate::netns::NetnsError;
use crate::route::{RT_TABLE_MAIN, Route, RouteOwner};

/// The fd the fake hands out for an open pod namespace.
pub const POD_FD: RawFd = 1000;
/// What the fake treats as the plugin's own namespace.
pub const OWN_NETNS: &str = "/proc/self/ns/net";
pub const UPLINK_MTU: u32 = 1450;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FakeNs {
    pub links: BTreeMap<u32, Link>,
    pub addresses: BTreeSet<(u32, IpAddr, u8)>,
    /// Main-table routes made by [`Kernel::add_route`] (owner
    /// [`RouteOwner::MAIN_STATIC`]).
    pub routes: Vec<Route>,
    /// Routes made through the owner-aware calls, any table.
    pub owned_routes: Vec<(RouteOwner, Route)>,
    /// Static entries made by [`Kernel::add_neighbour`].
    pub neighbours: Vec<Neighbour>,
    /// Entries made through the entry calls, with their flags.
    pub neighbour_entries: Vec<NeighbourEntry>,
}

impl FakeNs {
    pub fn by_name(&self, name: &str) -> Option<&Link> {
        self.links.values().find(|l| l.name == name)
    }

    fn remove(&mut self, index: u32) -> Option<Link> {
        let link = self.links.remove(&index)?;
        self.addresses.retain(|(i, _, _)| *i != index);
        self.routes.retain(|r| r.oif != Some(index));
        self.owned_routes.retain(|(_, r)| r.oif != Some(index));
        self.neighbours.retain(|n| n.ifindex != index);
        self.neighbour_entries.retain(|n| n.ifindex != index);
        Some(link)
    }

    /// Every route with its owner, whichever call made it.
    pub fn all_routes(&self) -> impl Iterator<Item = (RouteOwner, &Route)> {
        self.routes
            .iter()
            .map(|r| (RouteOwner::MAIN_STATIC, r))
            .chain(self.owned_routes.iter().map(|(o, r)| (*o, r)))
    }

    /// Every neighbour entry with its flags, whichever call made it.
    pub fn all_neighbours(&self) -> impl Iterator<Item = NeighbourEntry> + '_ {
        self.neighbours
            .iter()
            .map(NeighbourEntry::from)
            .chain(self.neighbour_entries.iter().cloned())
    }

    /// `ENODEV` / `ENETDOWN` as the kernel answers a route via a missing or down link.
    fn check_oif(&self, route: &Route, op: &str) -> KernelResult<()> {
        if let Some(oif) = route.oif {
            match self.links.get(&oif) {
                None => return Err(KernelError::from_errno(op, libc::ENODEV)),
                Some(link) if !link.up => {
                    return Err(KernelError::from_errno(op, libc::ENETDOWN));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// A route to `route`'s prefix in `table`, whoever owns it.
    fn has_prefix(&self, table: u32, route: &Route) -> bool {
        self.all_routes()
            .any(|(o, r)| o.table == table && r.dst == route.dst && r.prefix == route.prefix)
    }

    /// Remove the routes to `route`'s prefix in `table` that `keep` rejects.
    fn remove_routes(
        &mut self,
        table: u32,
        route: &Route,
        keep: impl Fn(RouteOwner, &Route) -> bool,
    ) -> usize {
        let before = self.routes.len() + self.owned_routes.len();
        let hit = |o: RouteOwner, r: &Route| {
            o.table == table && r.dst == route.dst && r.prefix == route.prefix && !keep(o, r)
        };
        self.routes.retain(|r| !hit(RouteOwner::MAIN_STATIC, r));
        self.owned_routes.retain(|(o, r)| !hit(*o, r));
        before - self.routes.len() - self.owned_routes.len()
    }

    fn has_neighbour(&self, ifindex: u32, ip: IpAddr) -> bool {
        self.all_neighbours()
            .any(|n| n.ifindex == ifindex && n.ip == ip)
    }

    fn remove_neighbour(&mut self, ifindex: u32, ip: IpAddr) -> bool {
        let before = self.neighbours.len() + self.neighbour_entries.len();
        self.neighbours
            .retain(|n| !(n.ifindex == ifindex && n.ip == ip));
        self.neighbour_entries
            .retain(|n| !(n.ifindex == ifindex && n.ip == ip));
        before != self.neighbours.len() + self.neighbour_entries.len()
    }
}

#[derive(Debug, Clone)]
pub struct FakeKernel {
    pub netkit_supported: bool,
    pub host: FakeNs,
    pub pods: BTreeMap<PathBuf, FakeNs>,
    pub opened: Option<PathBuf>,
    pub sysctls: BTreeMap<String, String>,
    /// Fail the n-th change (counting from 0) with this errno.
    pub fail_at: Option<(usize, i32)>,
    /// Changes made so far.
    pub changes: usize,
    /// Every change, named.
    pub log: Vec<String>,
    /// The namespace of every route dump asked for ([`Kernel::routes`],
    /// [`Kernel::owned_routes`]): callers on a hot path must not read the whole table.
    pub route_dumps: Vec<Ns>,
    next_index: u32,
}

impl Default for FakeKernel {
    fn default() -> Self {
        FakeKernel::new()
    }
}

impl FakeKernel {
    /// A host with `lo`, an uplink `eth0` (MTU 1450) carrying the default route.
    pub fn new() -> FakeKernel {
        let mut k = FakeKernel {
            netkit_supported: true,
            host: FakeNs::default(),
            pods: BTreeMap::new(),
            opened: None,
            sysctls: BTreeMap::from([
                ("net/ipv4/ip_forward".to_string(), "0".to_string()),
                ("net/ipv6/conf/all/forwarding".to_string(), "0".to_string()),
            ]),
            fail_at: None,
            changes: 0,
            log: Vec::new(),
            route_dumps: Vec::new(),
            next_index: 1,
        };
        let lo = k.new_link("lo", 65_536, true);
        k.host.links.insert(lo.index, lo);
        let uplink = k.new_link("eth0", UPLINK_MTU, true);
        k.host.routes.push(Route {
            dst: "0.0.0.0".parse().unwrap_or(IpAddr::from([0u8; 4])),
            prefix: 0,
            gateway: Some(IpAddr::from([192, 0, 2, 1])),
            oif: Some(uplink.index),
            onlink: false,
        });
        k.host.links.insert(uplink.index, uplink);
        k
    }

    fn new_link(&mut self, name: &str, mtu: u32, up: bool) -> Link {
        let index = self.next_index;
        self.next_index += 1;
        Link {
            index,
            name: name.to_string(),
            mtu,
            up,
            ..Link::default()
        }
    }

    /// A pod namespace with only `lo` (down, as in a fresh namespace).
    pub fn add_pod(&mut self, path: &str) {
        let lo = self.new_link("lo", 65_536, false);
        let mut ns = FakeNs::default();
        ns.links.insert(lo.index, lo);
        self.pods.insert(PathBuf::from(path), ns);
    }

    /// Put an interface into a pod namespace, as if someone else made it.
    pub fn add_pod_link(&mut self, path: &str, name: &str) {
        let link = self.new_link(name, 1500, true);
        if let Some(ns) = self.pods.get_mut(Path::new(path)) {
            ns.links.insert(link.index, link);
        }
    }

    /// Put a link into the host namespace, as if someone else made it.
    pub fn add_host_link(&mut self, name: &str, alias: Option<&str>) -> u32 {
        let mut link = self.new_link(name, 1500, true);
        link.alias = alias.map(str::to_string);
        let index = link.index;
        self.host.links.insert(index, link);
        index
    }

    pub fn pod(&self, path: &str) -> &FakeNs {
        &self.pods[Path::new(path)]
    }

    fn change(&mut self, op: String) -> KernelResult<()> {
        let n = self.changes;
        self.changes += 1;
        self.log.push(op.clone());
        match self.fail_at {
            Some((at, errno)) if at == n => Err(KernelError::from_errno(op, errno)),
            _ => Ok(()),
        }
    }

    fn ns(&self, ns: Ns) -> KernelResult<&FakeNs> {
        match ns {
            Ns::Host => Ok(&self.host),
            Ns::Pod => self
                .opened
                .as_ref()
                .and_then(|p| self.pods.get(p))
                .ok_or_else(|| KernelError::new("pod namespace", None, "not opened")),
        }
    }

    fn ns_mut(&mut self, ns: Ns) -> KernelResult<&mut FakeNs> {
        match ns {
            Ns::Host => Ok(&mut self.host),
            Ns::Pod => {
                let path = self
                    .opened
                    .clone()
                    .ok_or_else(|| KernelError::new("pod namespace", None, "not opened"))?;
                self.pods
                    .get_mut(&path)
                    .ok_or_else(|| KernelError::from_errno("pod namespace", libc::ENOENT))
            }
        }
    }

    /// Remove a link and, for a pair, its other end wherever it is.
    fn remove_link(&mut self, ns: Ns, index: u32) -> KernelResult<()> {
        let link = self
            .ns_mut(ns)?
            .remove(index)
            .ok_or_else(|| KernelError::from_errno("delete link", libc::ENODEV))?;
        if let Some(peer) = link.peer_index {
            self.host.remove(peer);
            for pod in self.pods.values_mut() {
                pod.remove(peer);
            }
        }
        Ok(())
    }
}

/// The parts of a pair request the fake acts on.
struct PairRequest {
    kind: LinkKind,
    name: String,
    mtu: u32,
    netkit: Option<(NetkitMode, NetkitPolicy, NetkitPolicy)>,
    peer_name: String,
    peer_fd: Option<RawFd>,
    peer_mtu: u32,
}

fn decode(msg: &LinkMessage) -> Option<PairRequest> {
    let name_mtu = |attrs: &[LinkAttribute]| {
        let name = attrs.iter().find_map(|a| {
            if let LinkAttribute::IfName(n) = a {
                Some(n.clone())
            } else {
                None
            }
        });
        let mtu = attrs.iter().find_map(|a| {
            if let LinkAttribute::Mtu(m) = a {
                Some(*m)
            } else {
                None
            }
        });
        (name, mtu.unwrap_or(1500))
    };
    let (name, mtu) = name_mtu(&msg.attributes);
    let infos = msg.attributes.iter().find_map(|a| {
        if let LinkAttribute::LinkInfo(i) = a {
            Some(i)
        } else {
            None
        }
    })?;
    let mut kind = None;
    let mut peer = None;
    let mut netkit = (NetkitMode::L2, NetkitPolicy::Pass, NetkitPolicy::Pass);
    for info in infos {
        match info {
            LinkInfo::Kind(k) => kind = Some(k.to_string()),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))) => peer = Some(p.clone()),
            LinkInfo::Data(InfoData::Netkit(attrs)) => {
                for attr in attrs {
                    match attr {
                        InfoNetkit::Peer(p) => peer = Some(p.clone()),
                        InfoNetkit::Mode(m) => netkit.0 = *m,
                        InfoNetkit::Policy(p) => netkit.1 = *p,
                        InfoNetkit::PeerPolicy(p) => netkit.2 = *p,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let peer = peer?;
    let (peer_name, peer_mtu) = name_mtu(&peer.attributes);
    let peer_fd = peer.attributes.iter().find_map(|a| {
        if let LinkAttribute::NetNsFd(fd) = a {
            Some(*fd)
        } else {
            None
        }
    });
    let kind = match kind?.as_str() {
        "netkit" => LinkKind::Netkit,
        "veth" => LinkKind::Veth,
        other => LinkKind::Other(other.to_string()),
    };
    Some(PairRequest {
        netkit: (kind == LinkKind::Netkit).then_some(netkit),
        kind,
        name: name?,
        mtu,
        peer_name: peer_name?,
        peer_fd,
        peer_mtu,
    })
}

impl Kernel for FakeKernel {
    fn open_pod_netns(&mut self, path: &Path) -> Result<(), NetnsError> {
        if path == Path::new(OWN_NETNS) {
            return Err(NetnsError::IsOwn {
                path: path.to_path_buf(),
            });
        }
        if !self.pods.contains_key(path) {
            return Err(NetnsError::NotFound {
                path: path.to_path_buf(),
            });
        }
        self.opened = Some(path.to_path_buf());
        Ok(())
    }

    fn pod_netns_fd(&self) -> Option<RawFd> {
        self.opened.as_ref().map(|_| POD_FD)
    }

    fn add_link(&mut self, message: LinkMessage) -> KernelResult<()> {
        let req =
            decode(&message).ok_or_else(|| KernelError::from_errno("create link", libc::EINVAL))?;
        self.change(format!("add_link {} {}", req.name, req.peer_name))?;
        if req.kind == LinkKind::Netkit && !self.netkit_supported {
            return Err(KernelError::from_errno("create link", libc::EOPNOTSUPP));
        }
        if req.peer_fd != Some(POD_FD) {
            return Err(KernelError::from_errno(
                "create link: peer not in the pod",
                libc::EINVAL,
            ));
        }
        if self.host.by_name(&req.name).is_some()
            || self.ns(Ns::Pod)?.by_name(&req.peer_name).is_some()
        {
            return Err(KernelError::from_errno("create link", libc::EEXIST));
        }
        let mut host = self.new_link(&req.name, req.mtu, false);
        let mut pod = self.new_link(&req.peer_name, req.peer_mtu, false);
        for link in [&mut host, &mut pod] {
            link.kind = Some(req.kind.clone());
            if req.kind == LinkKind::Veth {
                link.mac = Some(vec![
                    2,
                    0,
                    0,
                    0,
                    0,
                    u8::try_from(link.index % 256).unwrap_or(0),
                ]);
            }
        }
        if let Some((mode, policy, peer_policy)) = req.netkit {
            host.netkit = Some(NetkitInfo {
                mode,
                primary: true,
                policy,
                peer_policy,
            });
            pod.netkit = Some(NetkitInfo {
                mode,
                primary: false,
                policy: peer_policy,
                peer_policy: policy,
            });
        }
        host.peer_index = Some(pod.index);
        pod.peer_index = Some(host.index);
        self.host.links.insert(host.index, host);
        self.ns_mut(Ns::Pod)?.links.insert(pod.index, pod);
        Ok(())
    }

    fn link_by_name(&mut self, ns: Ns, name: &str) -> KernelResult<Option<Link>> {
        Ok(self.ns(ns)?.by_name(name).cloned())
    }

    fn link_by_index(&mut self, ns: Ns, index: u32) -> KernelResult<Option<Link>> {
        Ok(self.ns(ns)?.links.get(&index).cloned())
    }

    fn links(&mut self, ns: Ns) -> KernelResult<Vec<Link>> {
        Ok(self.ns(ns)?.links.values().cloned().collect())
    }

    fn delete_link(&mut self, ns: Ns, index: u32) -> KernelResult<()> {
        self.change(format!("delete_link {index}"))?;
        self.remove_link(ns, index)
    }

    fn set_link_up(&mut self, ns: Ns, index: u32) -> KernelResult<()> {
        self.change(format!("set_link_up {ns:?} {index}"))?;
        let link = self
            .ns_mut(ns)?
            .links
            .get_mut(&index)
            .ok_or_else(|| KernelError::from_errno("set up", libc::ENODEV))?;
        link.up = true;
        Ok(())
    }

    fn set_link_down(&mut self, ns: Ns, index: u32) -> KernelResult<()> {
        self.change(format!("set_link_down {ns:?} {index}"))?;
        let link = self
            .ns_mut(ns)?
            .links
            .get_mut(&index)
            .ok_or_else(|| KernelError::from_errno("set down", libc::ENODEV))?;
        link.up = false;
        Ok(())
    }

    fn set_alias(&mut self, ns: Ns, index: u32, alias: &str) -> KernelResult<()> {
        self.change(format!("set_alias {index}"))?;
        let link = self
            .ns_mut(ns)?
            .links
            .get_mut(&index)
            .ok_or_else(|| KernelError::from_errno("alias", libc::ENODEV))?;
        link.alias = Some(alias.to_string());
        Ok(())
    }

    fn add_address(&mut self, ns: Ns, index: u32, addr: IpAddr, prefix: u8) -> KernelResult<()> {
        self.change(format!("add_address {ns:?} {addr}/{prefix}"))?;
        let ns = self.ns_mut(ns)?;
        if !ns.links.contains_key(&index) {
            return Err(KernelError::from_errno("add address", libc::ENODEV));
        }
        if !ns.addresses.insert((index, addr, prefix)) {
            return Err(KernelError::from_errno("add address", libc::EEXIST));
        }
        Ok(())
    }

    fn addresses(&mut self, ns: Ns, index: u32) -> KernelResult<Vec<(IpAddr, u8)>> {
        Ok(self
            .ns(ns)?
            .addresses
            .iter()
            .filter(|(i, _, _)| *i == index)
            .map(|(_, a, p)| (*a, *p))
            .collect())
    }

    fn add_route(&mut self, ns: Ns, route: &Route) -> KernelResult<()> {
        self.change(format!("add_route {ns:?} {}/{}", route.dst, route.prefix))?;
        let ns = self.ns_mut(ns)?;
        ns.check_oif(route, "add route")?;
        if ns.has_prefix(RT_TABLE_MAIN, route) {
            return Err(KernelError::from_errno("add route", libc::EEXIST));
        }
        ns.routes.push(route.clone());
        Ok(())
    }

    fn routes(&mut self, ns: Ns) -> KernelResult<Vec<Route>> {
        self.route_dumps.push(ns);
        Ok(self
            .ns(ns)?
            .all_routes()
            .filter(|(o, _)| o.table == RT_TABLE_MAIN)
            .map(|(_, r)| r.clone())
            .collect())
    }

    fn add_owned_route(&mut self, ns: Ns, owner: RouteOwner, route: &Route) -> KernelResult<()> {
        self.change(format!(
            "add_owned_route {ns:?} {}/{} table {} proto {}",
            route.dst, route.prefix, owner.table, owner.protocol
        ))?;
        let ns = self.ns_mut(ns)?;
        ns.check_oif(route, "add route")?;
        if ns.has_prefix(owner.table, route) {
            return Err(KernelError::from_errno("add route", libc::EEXIST));
        }
        ns.owned_routes.push((owner, route.clone()));
        Ok(())
    }

    fn replace_owned_route(
        &mut self,
        ns: Ns,
        owner: RouteOwner,
        route: &Route,
    ) -> KernelResult<()> {
        self.change(format!(
            "replace_owned_route {ns:?} {}/{} table {} proto {}",
            route.dst, route.prefix, owner.table, owner.protocol
        ))?;
        let ns = self.ns_mut(ns)?;
        ns.check_oif(route, "replace route")?;
        // The kernel replaces the table's route to the prefix, whoever owned it.
        ns.remove_routes(owner.table, route, |_, _| false);
        ns.owned_routes.push((owner, route.clone()));
        Ok(())
    }

    fn delete_owned_route(&mut self, ns: Ns, owner: RouteOwner, route: &Route) -> KernelResult<()> {
        self.change(format!(
            "delete_owned_route {ns:?} {}/{} table {} proto {}",
            route.dst, route.prefix, owner.table, owner.protocol
        ))?;
        let ns = self.ns_mut(ns)?;
        // As the kernel matches a delete: the protocol, and the next hop when given.
        let removed = ns.remove_routes(owner.table, route, |o, r| {
            o.protocol != owner.protocol
                || route.gateway.is_some_and(|gw| r.gateway != Some(gw))
                || route.oif.is_some_and(|oif| r.oif != Some(oif))
        });
        if removed == 0 {
            return Err(KernelError::from_errno("delete route", libc::ESRCH));
        }
        Ok(())
    }

    fn route_get(&mut self, ns: Ns, dst: IpAddr) -> KernelResult<Option<Route>> {
        // The main table's most specific route covering `dst`, answered as the kernel
        // does: for `dst` itself, with the route's next hop and device.
        let best = self
            .ns(ns)?
            .all_routes()
            .filter(|(o, r)| o.table == RT_TABLE_MAIN && covers(r, dst))
            .max_by_key(|(_, r)| r.prefix)
            .map(|(_, r)| r.clone());
        Ok(best.map(|r| Route {
            dst,
            prefix: if dst.is_ipv4() { 32 } else { 128 },
            onlink: false,
            ..r
        }))
    }

    fn owned_routes(&mut self, ns: Ns, owner: RouteOwner) -> KernelResult<Vec<Route>> {
        self.route_dumps.push(ns);
        Ok(self
            .ns(ns)?
            .all_routes()
            .filter(|(o, _)| *o == owner)
            .map(|(_, r)| r.clone())
            .collect())
    }

    fn add_neighbour(&mut self, ns: Ns, neighbour: &Neighbour) -> KernelResult<()> {
        self.change(format!("add_neighbour {ns:?} {}", neighbour.ip))?;
        let ns = self.ns_mut(ns)?;
        if ns.has_neighbour(neighbour.ifindex, neighbour.ip) {
            return Err(KernelError::from_errno("add neighbour", libc::EEXIST));
        }
        ns.neighbours.push(neighbour.clone());
        Ok(())
    }

    fn neighbours(&mut self, ns: Ns, index: u32) -> KernelResult<Vec<Neighbour>> {
        Ok(self
            .ns(ns)?
            .all_neighbours()
            .filter(|n| n.ifindex == index)
            .map(Neighbour::from)
            .collect())
    }

    fn add_neighbour_entry(&mut self, ns: Ns, entry: &NeighbourEntry) -> KernelResult<()> {
        self.change(format!("add_neighbour_entry {ns:?} {}", entry.ip))?;
        let ns = self.ns_mut(ns)?;
        check_entry(ns, entry, "add neighbour")?;
        if ns.has_neighbour(entry.ifindex, entry.ip) {
            return Err(KernelError::from_errno("add neighbour", libc::EEXIST));
        }
        ns.neighbour_entries.push(entry.clone());
        Ok(())
    }

    fn replace_neighbour_entry(&mut self, ns: Ns, entry: &NeighbourEntry) -> KernelResult<()> {
        self.change(format!("replace_neighbour_entry {ns:?} {}", entry.ip))?;
        let ns = self.ns_mut(ns)?;
        check_entry(ns, entry, "replace neighbour")?;
        ns.remove_neighbour(entry.ifindex, entry.ip);
        ns.neighbour_entries.push(entry.clone());
        Ok(())
    }

    fn delete_neighbour(&mut self, ns: Ns, ifindex: u32, ip: IpAddr) -> KernelResult<()> {
        self.change(format!("delete_neighbour {ns:?} {ip}"))?;
        if !self.ns_mut(ns)?.remove_neighbour(ifindex, ip) {
            return Err(KernelError::from_errno("delete neighbour", libc::ENOENT));
        }
        Ok(())
    }

    fn neighbour_entries(
        &mut self,
        ns: Ns,
        ifindex: Option<u32>,
    ) -> KernelResult<Vec<NeighbourEntry>> {
        Ok(self
            .ns(ns)?
            .all_neighbours()
            .filter(|n| ifindex.is_none_or(|i| n.ifindex == i))
            .collect())
    }

    fn sysctl(&mut self, key: &str) -> KernelResult<String> {
        if let Some(value) = self.sysctls.get(key) {
            return Ok(value.clone());
        }
        // Per-device knobs exist while the device does, with the kernel's defaults.
        match device_of(key) {
            Some(dev) if self.host.by_name(dev).is_some() => Ok(if key.ends_with("/accept_dad") {
                "1"
            } else {
                "0"
            }
            .to_string()),
            _ => Err(KernelError::from_errno(format!("read {key}"), libc::ENOENT)),
        }
    }

    fn set_sysctl(&mut self, key: &str, value: &str) -> KernelResult<()> {
        self.change(format!("set_sysctl {key}={value}"))?;
        if let Some(dev) = device_of(key)
            && self.host.by_name(dev).is_none()
        {
            return Err(KernelError::from_errno(
                format!("write {key}"),
                libc::ENOENT,
            ));
        }
        self.sysctls.insert(key.to_string(), value.to_string());
        Ok(())
    }
}

/// The kernel's refusals for a new entry: no such link, a managed entry that is
/// also permanent.
/// Whether `route`'s prefix holds `addr` (of the same family).
fn covers(route: &Route, addr: IpAddr) -> bool {
    let bits = |a: IpAddr| match a {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)) << 96, 32),
        IpAddr::V6(v6) => (u128::from(v6), 128),
    };
    let ((net, width), (host, host_width)) = (bits(route.dst), bits(addr));
    if width != host_width || u32::from(route.prefix) > width {
        return false;
    }
    let mask = u128::MAX
        .checked_shl(128 - u32::from(route.prefix))
        .unwrap_or(0);
    net & mask == host & mask
}

fn check_entry(ns: &FakeNs, entry: &NeighbourEntry, op: &str) -> KernelResult<()> {
    if !ns.links.contains_key(&entry.ifindex) {
        return Err(KernelError::from_errno(op, libc::ENODEV));
    }
    if entry.managed && entry.state == NeighbourState::Permanent {
        return Err(KernelError::from_errno(op, libc::EINVAL));
    }
    Ok(())
}

/// `net/ipv4/conf/<dev>/rp_filter` → `<dev>` (not `all` or `default`).
fn device_of(key: &str) -> Option<&str> {
    let parts: Vec<&str> = key.split('/').collect();
    match parts.as_slice() {
        ["net", _, "conf", dev, _] if *dev != "all" && *dev != "default" => Some(dev),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::default_route_link;

    const AGENT: RouteOwner = RouteOwner::main(200);

    fn uplink(k: &mut FakeKernel) -> u32 {
        k.link_by_name(Ns::Host, "eth0").unwrap().unwrap().index
    }

    fn route(dst: &str, prefix: u8, gateway: &str, oif: u32) -> Route {
        Route {
            dst: dst.parse().unwrap(),
            prefix,
            gateway: Some(gateway.parse().unwrap()),
            oif: Some(oif),
            onlink: false,
        }
    }

    #[test]
    fn the_default_route_names_the_uplink() {
        let mut k = FakeKernel::new();
        let link = default_route_link(&mut k, Ns::Host).unwrap().unwrap();
        assert_eq!((link.name.as_str(), link.mtu), ("eth0", UPLINK_MTU));
        assert!(k.route_dumps.is_empty(), "found by route gets, not a dump");
        k.host.routes.clear();
        assert_eq!(default_route_link(&mut k, Ns::Host).unwrap(), None);
        // Without an IPv4 way out, the IPv6 one.
        let eth1 = k.add_host_link("eth1", None);
        k.host.routes.push(route("::", 0, "fe80::1", eth1));
        let link = default_route_link(&mut k, Ns::Host).unwrap().unwrap();
        assert_eq!(link.name, "eth1");
    }

    #[test]
    fn a_route_get_takes_the_most_specific_route() {
        let mut k = FakeKernel::new();
        let eth0 = uplink(&mut k);
        let pod = k.add_host_link("nk1", None);
        k.host.routes.push(route("10.9.0.0", 16, "192.0.2.9", eth0));
        let mut host = route("10.9.0.5", 32, "192.0.2.9", pod);
        host.gateway = None;
        k.host.routes.push(host);
        let get = |k: &mut FakeKernel, dst: &str| {
            k.route_get(Ns::Host, dst.parse().unwrap())
                .unwrap()
                .map(|r| (r.prefix, r.oif))
        };
        assert_eq!(get(&mut k, "10.9.0.5"), Some((32, Some(pod))));
        assert_eq!(get(&mut k, "10.9.0.6"), Some((32, Some(eth0))));
        assert_eq!(get(&mut k, "8.8.8.8"), Some((32, Some(eth0))));
        assert_eq!(get(&mut k, "fd00::1"), None, "no IPv6 route at all");
        assert!(k.route_dumps.is_empty());
        k.routes(Ns::Host).unwrap();
        assert_eq!(k.route_dumps, [Ns::Host]);
    }

    #[test]
    fn owned_routes_are_listed_by_owner_and_seen_in_the_main_table() {
        let mut k = FakeKernel::new();
        let eth0 = uplink(&mut k);
        let r = route("10.244.1.0", 24, "192.0.2.7", eth0);
        k.add_owned_route(Ns::Host, AGENT, &r).unwrap();
        assert_eq!(
            k.owned_routes(Ns::Host, AGENT).unwrap(),
            std::slice::from_ref(&r)
        );
        assert!(k.routes(Ns::Host).unwrap().contains(&r));
        // The default route is `proto static`, not ours.
        let statics = k.owned_routes(Ns::Host, RouteOwner::MAIN_STATIC).unwrap();
        assert_eq!(statics.len(), 1);
        assert_eq!(statics[0].prefix, 0);
        // Another table is another table.
        let other = RouteOwner {
            table: 100,
            protocol: 200,
        };
        k.add_owned_route(Ns::Host, other, &r).unwrap();
        assert_eq!(
            k.owned_routes(Ns::Host, other).unwrap(),
            std::slice::from_ref(&r)
        );
        assert_eq!(k.routes(Ns::Host).unwrap().len(), 2);
    }

    #[test]
    fn a_prefix_taken_in_the_table_is_eexist_whoever_owns_it() {
        let mut k = FakeKernel::new();
        let eth0 = uplink(&mut k);
        let r = route("10.244.1.0", 24, "192.0.2.7", eth0);
        k.add_route(Ns::Host, &r).unwrap();
        let e = k.add_owned_route(Ns::Host, AGENT, &r).unwrap_err();
        assert!(e.is(libc::EEXIST), "{e}");
        let e = k.add_route(Ns::Host, &r).unwrap_err();
        assert!(e.is(libc::EEXIST), "{e}");
    }

    #[test]
    fn deleting_needs_the_owner_and_the_next_hop() {
        let mut k = FakeKernel::new();
        let eth0 = uplink(&mut k);
        let ours = route("10.244.1.0", 24, "192.0.2.7", eth0);
        let theirs = route("10.244.2.0", 24, "192.0.2.8", eth0);
        k.add_owned_route(Ns::Host, AGENT, &ours).unwrap();
        k.add_route(Ns::Host, &theirs).unwrap();

        let e = k.delete_owned_route(Ns::Host, AGENT, &theirs).unwrap_err();
        assert!(e.is(libc::ESRCH) && e.is_not_found(), "{e}");
        assert!(k.routes(Ns::Host).unwrap().contains(&theirs));

        let moved = route("10.244.1.0", 24, "192.0.2.9", eth0);
        let e = k.delete_owned_route(Ns::Host, AGENT, &moved).unwrap_err();
        assert!(e.is(libc::ESRCH), "{e}");

        k.delete_owned_route(Ns::Host, AGENT, &ours).unwrap();
        assert!(k.owned_routes(Ns::Host, AGENT).unwrap().is_empty());
        let e = k.delete_owned_route(Ns::Host, AGENT, &ours).unwrap_err();
        assert!(e.is_not_found(), "{e}");
    }

    #[test]
    fn replacing_moves_the_next_hop_and_takes_the_prefix_over() {
        let mut k = FakeKernel::new();
        let eth0 = uplink(&mut k);
        let before = route("10.244.1.0", 24, "192.0.2.7", eth0);
        let after = route("10.244.1.0", 24, "192.0.2.9", eth0);
        k.replace_owned_route(Ns::Host, AGENT, &before).unwrap();
        k.replace_owned_route(Ns::Host, AGENT, &after).unwrap();
        assert_eq!(
            k.owned_routes(Ns::Host, AGENT).unwrap(),
            std::slice::from_ref(&after)
        );
        // As in the kernel, a replace takes over a static route to the same prefix.
        let stat = route("10.244.3.0", 24, "192.0.2.7", eth0);
        k.add_route(Ns::Host, &stat).unwrap();
        k.replace_owned_route(Ns::Host, AGENT, &stat).unwrap();
        assert_eq!(k.owned_routes(Ns::Host, AGENT).unwrap().len(), 2);
        assert!(!k.host.routes.contains(&stat));
    }

    #[test]
    fn routes_need_a_live_device() {
        let mut k = FakeKernel::new();
        let down = k.add_host_link("dummy0", None);
        k.set_link_down(Ns::Host, down).unwrap();
        let e = k
            .add_owned_route(Ns::Host, AGENT, &route("10.1.0.0", 16, "192.0.2.7", down))
            .unwrap_err();
        assert!(e.is(libc::ENETDOWN), "{e}");
        let e = k
            .replace_owned_route(Ns::Host, AGENT, &route("10.1.0.0", 16, "192.0.2.7", 999))
            .unwrap_err();
        assert!(e.is(libc::ENODEV), "{e}");
    }

    #[test]
    fn managed_neighbours_keep_their_flags() {
        let mut k = FakeKernel::new();
        let eth0 = uplink(&mut k);
        let entry = NeighbourEntry::managed(eth0, "192.0.2.7".parse().unwrap(), Some(200));
        k.add_neighbour_entry(Ns::Host, &entry).unwrap();
        assert_eq!(
            k.neighbour_entries(Ns::Host, Some(eth0)).unwrap(),
            std::slice::from_ref(&entry)
        );
        assert_eq!(k.neighbour_entries(Ns::Host, Some(eth0 + 100)).unwrap(), []);
        let e = k.add_neighbour_entry(Ns::Host, &entry).unwrap_err();
        assert!(e.is(libc::EEXIST), "{e}");
        // Replace turns a static entry into a managed one.
        let gw = Neighbour {
            ifindex: eth0,
            ip: "192.0.2.1".parse().unwrap(),
            mac: vec![2, 0, 0, 0, 0, 1],
            permanent: false,
        };
        k.add_neighbour(Ns::Host, &gw).unwrap();
        assert_eq!(k.neighbour_entries(Ns::Host, None).unwrap().len(), 2);
        let managed = NeighbourEntry::managed(eth0, gw.ip, None);
        k.replace_neighbour_entry(Ns::Host, &managed).unwrap();
        let all = k.neighbour_entries(Ns::Host, None).unwrap();
        assert_eq!(all.len(), 2);
        assert!(all.iter().all(|n| n.managed && n.extern_learned));
        // The static view still sees both addresses.
        assert_eq!(k.neighbours(Ns::Host, eth0).unwrap().len(), 2);
    }

    #[test]
    fn neighbour_deletes_and_refusals() {
        let mut k = FakeKernel::new();
        let eth0 = uplink(&mut k);
        let ip: IpAddr = "fd00:50::2".parse().unwrap();
        let e = k.delete_neighbour(Ns::Host, eth0, ip).unwrap_err();
        assert!(e.is(libc::ENOENT) && e.is_not_found(), "{e}");
        let mut permanent = NeighbourEntry::managed(eth0, ip, None);
        permanent.state = NeighbourState::Permanent;
        let e = k.add_neighbour_entry(Ns::Host, &permanent).unwrap_err();
        assert!(e.is(libc::EINVAL), "{e}");
        let e = k
            .add_neighbour_entry(Ns::Host, &NeighbourEntry::managed(999, ip, None))
            .unwrap_err();
        assert!(e.is(libc::ENODEV), "{e}");
        k.add_neighbour_entry(Ns::Host, &NeighbourEntry::managed(eth0, ip, None))
            .unwrap();
        k.delete_neighbour(Ns::Host, eth0, ip).unwrap();
        assert_eq!(k.neighbour_entries(Ns::Host, None).unwrap(), []);
    }

    #[test]
    fn deleting_a_link_takes_its_routes_and_neighbours() {
        let mut k = FakeKernel::new();
        let dev = k.add_host_link("eth1", None);
        k.add_owned_route(Ns::Host, AGENT, &route("10.244.1.0", 24, "192.0.2.7", dev))
            .unwrap();
        k.add_neighbour_entry(
            Ns::Host,
            &NeighbourEntry::managed(dev, "192.0.2.7".parse().unwrap(), None),
        )
        .unwrap();
        k.delete_link(Ns::Host, dev).unwrap();
        assert_eq!(k.owned_routes(Ns::Host, AGENT).unwrap(), []);
        assert_eq!(k.neighbour_entries(Ns::Host, None).unwrap(), []);
        let e = k.delete_link(Ns::Host, dev).unwrap_err();
        assert!(e.is_not_found(), "{e}");
    }

    #[test]
    fn every_new_change_can_be_made_to_fail() {
        let eth0 = uplink(&mut FakeKernel::new());
        let via = move |gw: &str| route("10.244.1.0", 24, gw, eth0);
        let hop = || "192.0.2.7".parse::<IpAddr>().unwrap();
        type Step = Box<dyn Fn(&mut FakeKernel) -> KernelResult<()>>;
        let steps: Vec<Step> = vec![
            Box::new(move |k| k.add_owned_route(Ns::Host, AGENT, &via("192.0.2.7"))),
            Box::new(move |k| k.replace_owned_route(Ns::Host, AGENT, &via("192.0.2.8"))),
            Box::new(move |k| {
                k.add_neighbour_entry(Ns::Host, &NeighbourEntry::managed(eth0, hop(), None))
            }),
            Box::new(move |k| {
                k.replace_neighbour_entry(Ns::Host, &NeighbourEntry::managed(eth0, hop(), Some(9)))
            }),
            Box::new(move |k| k.delete_neighbour(Ns::Host, eth0, hop())),
            Box::new(move |k| k.delete_owned_route(Ns::Host, AGENT, &via("192.0.2.8"))),
        ];
        for fail in 0..steps.len() {
            let mut k = FakeKernel::new();
            k.fail_at = Some((fail, libc::ENOBUFS));
            for (n, step) in steps.iter().enumerate().take(fail + 1) {
                let result = step(&mut k);
                assert_eq!(
                    result.is_err(),
                    n == fail,
                    "step {n} with the failure at {fail}: {result:?}"
                );
            }
        }
    }
}
