//! An in-memory kernel for unit tests: a host namespace and pod namespaces holding
//! links, addresses, routes and neighbours, with the kernel's refusals that matter to
//! the plugin's decisions (`EEXIST`, `EOPNOTSUPP` for netkit, `ENETDOWN` for a route
//! via a down link) and failure injection on the n-th change.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

use netlink_packet_route::link::{
    InfoData, InfoNetkit, InfoVeth, LinkAttribute, LinkInfo, LinkMessage, NetkitMode, NetkitPolicy,
};

use super::netns::NetnsError;
use super::{Kernel, KernelError, KernelResult, Link, LinkKind, Neighbour, NetkitInfo, Ns, Route};

/// The fd the fake hands out for an open pod namespace.
pub const POD_FD: RawFd = 1000;
/// What the fake treats as the plugin's own namespace.
pub const OWN_NETNS: &str = "/proc/self/ns/net";
pub const UPLINK_MTU: u32 = 1450;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FakeNs {
    pub links: BTreeMap<u32, Link>,
    pub addresses: BTreeSet<(u32, IpAddr, u8)>,
    pub routes: Vec<Route>,
    pub neighbours: Vec<Neighbour>,
}

impl FakeNs {
    pub fn by_name(&self, name: &str) -> Option<&Link> {
        self.links.values().find(|l| l.name == name)
    }

    fn remove(&mut self, index: u32) -> Option<Link> {
        let link = self.links.remove(&index)?;
        self.addresses.retain(|(i, _, _)| *i != index);
        self.routes.retain(|r| r.oif != Some(index));
        self.neighbours.retain(|n| n.ifindex != index);
        Some(link)
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
        if let Some(oif) = route.oif {
            match ns.links.get(&oif) {
                None => return Err(KernelError::from_errno("add route", libc::ENODEV)),
                Some(link) if !link.up => {
                    return Err(KernelError::from_errno("add route", libc::ENETDOWN));
                }
                Some(_) => {}
            }
        }
        if ns
            .routes
            .iter()
            .any(|r| r.dst == route.dst && r.prefix == route.prefix)
        {
            return Err(KernelError::from_errno("add route", libc::EEXIST));
        }
        ns.routes.push(route.clone());
        Ok(())
    }

    fn routes(&mut self, ns: Ns) -> KernelResult<Vec<Route>> {
        Ok(self.ns(ns)?.routes.clone())
    }

    fn add_neighbour(&mut self, ns: Ns, neighbour: &Neighbour) -> KernelResult<()> {
        self.change(format!("add_neighbour {ns:?} {}", neighbour.ip))?;
        let ns = self.ns_mut(ns)?;
        if ns
            .neighbours
            .iter()
            .any(|n| n.ifindex == neighbour.ifindex && n.ip == neighbour.ip)
        {
            return Err(KernelError::from_errno("add neighbour", libc::EEXIST));
        }
        ns.neighbours.push(neighbour.clone());
        Ok(())
    }

    fn neighbours(&mut self, ns: Ns, index: u32) -> KernelResult<Vec<Neighbour>> {
        Ok(self
            .ns(ns)?
            .neighbours
            .iter()
            .filter(|n| n.ifindex == index)
            .cloned()
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

/// `net/ipv4/conf/<dev>/rp_filter` → `<dev>` (not `all` or `default`).
fn device_of(key: &str) -> Option<&str> {
    let parts: Vec<&str> = key.split('/').collect();
    match parts.as_slice() {
        ["net", _, "conf", dev, _] if *dev != "all" && *dev != "default" => Some(dev),
        _ => None,
    }
}
