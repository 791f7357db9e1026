//! The real kernel: rtnetlink over two sockets, one per namespace, driven by a
//! current-thread tokio runtime (`block_on` per operation, so callers stay sync).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;

use futures::TryStreamExt as _;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoNetkit, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteScope, RouteType, RouteVia,
};
use rtnetlink::{Handle, LinkGetRequest, LinkUnspec, RouteMessageBuilder};
use tokio::runtime::Runtime;

use super::netns::{self, NetnsError};
use super::{Kernel, KernelError, KernelResult, Link, LinkKind, Neighbour, NetkitInfo, Ns, Route};

/// `RT_TABLE_MAIN`.
const MAIN_TABLE: u32 = 254;

pub struct RtKernel {
    rt: Runtime,
    host: Handle,
    pod: Option<PodNs>,
}

struct PodNs {
    handle: Handle,
    /// Kept open for `IFLA_NET_NS_FD`.
    fd: OwnedFd,
}

impl RtKernel {
    /// Connect to the host namespace (the plugin's own).
    pub fn new() -> KernelResult<RtKernel> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| KernelError::from_io("start the netlink runtime", &e))?;
        let (connection, host, _) = {
            let _entered = rt.enter();
            rtnetlink::new_connection()
                .map_err(|e| KernelError::from_io("open a netlink socket", &e))?
        };
        rt.spawn(connection);
        Ok(RtKernel {
            rt,
            host,
            pod: None,
        })
    }

    fn handle(&self, ns: Ns) -> KernelResult<Handle> {
        match ns {
            Ns::Host => Ok(self.host.clone()),
            Ns::Pod => self
                .pod
                .as_ref()
                .map(|pod| pod.handle.clone())
                .ok_or_else(|| KernelError::new("pod namespace", None, "not opened")),
        }
    }

    /// The one link `request` matches; `None` when the kernel says there is none.
    fn get_link(
        &self,
        request: LinkGetRequest,
        op: impl FnOnce() -> String,
    ) -> KernelResult<Option<Link>> {
        let found = self
            .rt
            .block_on(async { request.execute().try_next().await });
        match found {
            Ok(msg) => Ok(msg.map(link_from)),
            Err(e) => {
                let e = nl_error(op(), e);
                if e.is_not_found() { Ok(None) } else { Err(e) }
            }
        }
    }

    /// `RTM_SETLINK` with `msg`.
    fn set_link(
        &self,
        handle: &Handle,
        msg: LinkMessage,
        op: impl FnOnce() -> String,
    ) -> KernelResult<()> {
        self.rt
            .block_on(handle.link().set(msg).execute())
            .map_err(|e| nl_error(op(), e))
    }
}

fn nl_error(op: impl Into<String>, e: rtnetlink::Error) -> KernelError {
    match e {
        rtnetlink::Error::NetlinkError(msg) => KernelError::from_errno(op, msg.raw_code().abs()),
        other => KernelError::new(op, None, other.to_string()),
    }
}

fn ns_name(ns: Ns) -> &'static str {
    match ns {
        Ns::Host => "host",
        Ns::Pod => "pod",
    }
}

impl Kernel for RtKernel {
    fn open_pod_netns(&mut self, path: &Path) -> Result<(), NetnsError> {
        let fd = netns::open(path)?;
        let rt = self.rt.handle().clone();
        let made = netns::run_in(path, &fd, move || {
            let _entered = rt.enter();
            rtnetlink::new_connection()
        })?;
        let (connection, handle, _) = made.map_err(|source| NetnsError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        self.rt.spawn(connection);
        self.pod = Some(PodNs { handle, fd });
        Ok(())
    }

    fn pod_netns_fd(&self) -> Option<RawFd> {
        self.pod.as_ref().map(|pod| pod.fd.as_raw_fd())
    }

    fn add_link(&mut self, message: LinkMessage) -> KernelResult<()> {
        let handle = self.host.clone();
        self.rt
            .block_on(handle.link().add(message).execute())
            .map_err(|e| nl_error("create the link pair", e))
    }

    fn link_by_name(&mut self, ns: Ns, name: &str) -> KernelResult<Option<Link>> {
        let handle = self.handle(ns)?;
        self.get_link(handle.link().get().match_name(name), || {
            format!("look up link {name} ({})", ns_name(ns))
        })
    }

    fn link_by_index(&mut self, ns: Ns, index: u32) -> KernelResult<Option<Link>> {
        let handle = self.handle(ns)?;
        self.get_link(handle.link().get().match_index(index), || {
            format!("look up link #{index} ({})", ns_name(ns))
        })
    }

    fn links(&mut self, ns: Ns) -> KernelResult<Vec<Link>> {
        let handle = self.handle(ns)?;
        let msgs: Vec<LinkMessage> = self
            .rt
            .block_on(handle.link().get().execute().try_collect())
            .map_err(|e| nl_error(format!("list links ({})", ns_name(ns)), e))?;
        Ok(msgs.into_iter().map(link_from).collect())
    }

    fn delete_link(&mut self, ns: Ns, index: u32) -> KernelResult<()> {
        let handle = self.handle(ns)?;
        self.rt
            .block_on(handle.link().del(index).execute())
            .map_err(|e| nl_error(format!("delete link #{index} ({})", ns_name(ns)), e))
    }

    fn set_link_up(&mut self, ns: Ns, index: u32) -> KernelResult<()> {
        let handle = self.handle(ns)?;
        let msg = LinkUnspec::new_with_index(index).up().build();
        self.set_link(&handle, msg, || {
            format!("set link #{index} up ({})", ns_name(ns))
        })
    }

    fn set_link_down(&mut self, ns: Ns, index: u32) -> KernelResult<()> {
        let handle = self.handle(ns)?;
        let msg = LinkUnspec::new_with_index(index).down().build();
        self.set_link(&handle, msg, || {
            format!("set link #{index} down ({})", ns_name(ns))
        })
    }

    fn set_alias(&mut self, ns: Ns, index: u32, alias: &str) -> KernelResult<()> {
        let handle = self.handle(ns)?;
        let msg = LinkUnspec::new_with_index(index).alias(alias).build();
        self.set_link(&handle, msg, || {
            format!("set the alias of link #{index} ({})", ns_name(ns))
        })
    }

    fn add_address(&mut self, ns: Ns, index: u32, addr: IpAddr, prefix: u8) -> KernelResult<()> {
        let handle = self.handle(ns)?;
        let mut request = handle.address().add(index, addr, prefix);
        if addr.is_ipv6() {
            request
                .message_mut()
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        self.rt.block_on(request.execute()).map_err(|e| {
            nl_error(
                format!(
                    "add address {addr}/{prefix} to link #{index} ({})",
                    ns_name(ns)
                ),
                e,
            )
        })
    }

    fn addresses(&mut self, ns: Ns, index: u32) -> KernelResult<Vec<(IpAddr, u8)>> {
        let handle = self.handle(ns)?;
        let msgs: Vec<AddressMessage> = self
            .rt
            .block_on(
                handle
                    .address()
                    .get()
                    .set_link_index_filter(index)
                    .execute()
                    .try_collect(),
            )
            .map_err(|e| {
                nl_error(
                    format!("list addresses of link #{index} ({})", ns_name(ns)),
                    e,
                )
            })?;
        Ok(msgs
            .into_iter()
            .filter(|m| m.header.index == index)
            .filter_map(address_from)
            .collect())
    }

    fn add_route(&mut self, ns: Ns, route: &Route) -> KernelResult<()> {
        let handle = self.handle(ns)?;
        let op = || format!("add route {}/{} ({})", route.dst, route.prefix, ns_name(ns));
        let invalid =
            |e: &dyn std::fmt::Display| KernelError::new(op(), Some(libc::EINVAL), e.to_string());
        let mut builder = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(route.dst, route.prefix)
            .map_err(|e| invalid(&e))?;
        if let Some(gw) = route.gateway {
            builder = builder.gateway(gw).map_err(|e| invalid(&e))?;
        } else if route.dst.is_ipv4() {
            builder = builder.scope(RouteScope::Link);
        }
        if let Some(oif) = route.oif {
            builder = builder.output_interface(oif);
        }
        if route.onlink {
            builder = builder.onlink();
        }
        self.rt
            .block_on(handle.route().add(builder.build()).execute())
            .map_err(|e| nl_error(op(), e))
    }

    fn routes(&mut self, ns: Ns) -> KernelResult<Vec<Route>> {
        let handle = self.handle(ns)?;
        let op = || format!("list routes ({})", ns_name(ns));
        let v4: Vec<RouteMessage> = self
            .rt
            .block_on(
                handle
                    .route()
                    .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
                    .execute()
                    .try_collect(),
            )
            .map_err(|e| nl_error(op(), e))?;
        let v6: Vec<RouteMessage> = self
            .rt
            .block_on(
                handle
                    .route()
                    .get(RouteMessageBuilder::<Ipv6Addr>::new().build())
                    .execute()
                    .try_collect(),
            )
            .map_err(|e| nl_error(op(), e))?;
        Ok(v4.into_iter().chain(v6).filter_map(route_from).collect())
    }

    fn add_neighbour(&mut self, ns: Ns, neighbour: &Neighbour) -> KernelResult<()> {
        let handle = self.handle(ns)?;
        let state = if neighbour.permanent {
            NeighbourState::Permanent
        } else {
            NeighbourState::Reachable
        };
        let request = handle
            .neighbours()
            .add(neighbour.ifindex, neighbour.ip)
            .link_layer_address(&neighbour.mac)
            .state(state);
        self.rt.block_on(request.execute()).map_err(|e| {
            nl_error(
                format!(
                    "add neighbour {} on link #{} ({})",
                    neighbour.ip,
                    neighbour.ifindex,
                    ns_name(ns)
                ),
                e,
            )
        })
    }

    fn neighbours(&mut self, ns: Ns, index: u32) -> KernelResult<Vec<Neighbour>> {
        let handle = self.handle(ns)?;
        let msgs: Vec<NeighbourMessage> = self
            .rt
            .block_on(handle.neighbours().get().execute().try_collect())
            .map_err(|e| nl_error(format!("list neighbours ({})", ns_name(ns)), e))?;
        Ok(msgs
            .into_iter()
            .filter(|m| m.header.ifindex == index)
            .filter_map(neighbour_from)
            .collect())
    }

    fn sysctl(&mut self, key: &str) -> KernelResult<String> {
        let path = Path::new("/proc/sys").join(key);
        std::fs::read_to_string(&path)
            .map(|s| s.trim().to_string())
            .map_err(|e| KernelError::from_io(format!("read {}", path.display()), &e))
    }

    fn set_sysctl(&mut self, key: &str, value: &str) -> KernelResult<()> {
        let path = Path::new("/proc/sys").join(key);
        std::fs::write(&path, value)
            .map_err(|e| KernelError::from_io(format!("write {} = {value}", path.display()), &e))
    }
}

fn link_from(msg: LinkMessage) -> Link {
    let mut link = Link {
        index: msg.header.index,
        up: msg.header.flags.contains(LinkFlags::Up),
        ..Link::default()
    };
    for attr in msg.attributes {
        match attr {
            LinkAttribute::IfName(name) => link.name = name,
            LinkAttribute::Address(mac) => link.mac = Some(mac),
            LinkAttribute::Mtu(mtu) => link.mtu = mtu,
            LinkAttribute::IfAlias(alias) => link.alias = Some(alias),
            LinkAttribute::Link(peer) => link.peer_index = Some(peer),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(InfoKind::Netkit) => link.kind = Some(LinkKind::Netkit),
                        LinkInfo::Kind(InfoKind::Veth) => link.kind = Some(LinkKind::Veth),
                        LinkInfo::Kind(other) => {
                            link.kind = Some(LinkKind::Other(other.to_string()))
                        }
                        LinkInfo::Data(InfoData::Netkit(attrs)) => {
                            link.netkit = Some(netkit_from(&attrs))
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    link
}

fn netkit_from(attrs: &[InfoNetkit]) -> NetkitInfo {
    use netlink_packet_route::link::{NetkitMode, NetkitPolicy};
    let mut info = NetkitInfo {
        mode: NetkitMode::Other(u32::MAX),
        primary: false,
        policy: NetkitPolicy::Other(u32::MAX),
        peer_policy: NetkitPolicy::Other(u32::MAX),
    };
    for attr in attrs {
        match attr {
            InfoNetkit::Mode(mode) => info.mode = *mode,
            InfoNetkit::Primary(primary) => info.primary = *primary,
            InfoNetkit::Policy(policy) => info.policy = *policy,
            InfoNetkit::PeerPolicy(policy) => info.peer_policy = *policy,
            _ => {}
        }
    }
    info
}

fn address_from(msg: AddressMessage) -> Option<(IpAddr, u8)> {
    let prefix = msg.header.prefix_len;
    let mut address = None;
    for attr in msg.attributes {
        match attr {
            AddressAttribute::Local(ip) => return Some((ip, prefix)),
            AddressAttribute::Address(ip) => address = Some(ip),
            _ => {}
        }
    }
    address.map(|ip| (ip, prefix))
}

fn route_from(msg: RouteMessage) -> Option<Route> {
    if msg.header.kind != RouteType::Unicast {
        return None;
    }
    let mut table = u32::from(msg.header.table);
    let mut route = Route {
        dst: match msg.header.address_family {
            AddressFamily::Inet => IpAddr::from([0u8; 4]),
            AddressFamily::Inet6 => IpAddr::from([0u8; 16]),
            _ => return None,
        },
        prefix: msg.header.destination_prefix_length,
        gateway: None,
        oif: None,
        onlink: msg.header.flags.contains(RouteFlags::Onlink),
    };
    for attr in msg.attributes {
        match attr {
            RouteAttribute::Table(t) => table = t,
            RouteAttribute::Destination(RouteAddress::Inet(a)) => route.dst = a.into(),
            RouteAttribute::Destination(RouteAddress::Inet6(a)) => route.dst = a.into(),
            RouteAttribute::Gateway(RouteAddress::Inet(a)) => route.gateway = Some(a.into()),
            RouteAttribute::Gateway(RouteAddress::Inet6(a)) => route.gateway = Some(a.into()),
            RouteAttribute::Via(RouteVia::Inet6(a)) => route.gateway = Some(a.into()),
            RouteAttribute::Oif(oif) => route.oif = Some(oif),
            _ => {}
        }
    }
    (table == MAIN_TABLE).then_some(route)
}

fn neighbour_from(msg: NeighbourMessage) -> Option<Neighbour> {
    let mut ip = None;
    let mut mac = Vec::new();
    for attr in msg.attributes {
        match attr {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                ip = Some(IpAddr::from(a))
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                ip = Some(IpAddr::from(a))
            }
            NeighbourAttribute::LinkLayerAddress(lla) => mac = lla,
            _ => {}
        }
    }
    Some(Neighbour {
        ifindex: msg.header.ifindex,
        ip: ip?,
        mac,
        permanent: msg.header.state == NeighbourState::Permanent,
    })
}
