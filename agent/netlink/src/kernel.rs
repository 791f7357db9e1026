//! The blocking facade: every kernel operation a caller's decisions need, behind one
//! small trait, so decision logic runs against `fake::FakeKernel` (feature `fake`) in
//! unit tests and against [`crate::rtnl::RtKernel`] for real.
//!
//! Two namespaces are in play: the host's (the caller's own) and a pod's (opened once
//! per invocation with [`Kernel::open_pod_netns`]). The caller's threads never change
//! namespace; see [`crate::netns`].

use std::net::IpAddr;
use std::os::fd::RawFd;
use std::path::Path;

use netlink_packet_route::link::LinkMessage;

use crate::error::KernelResult;
use crate::link::Link;
use crate::neighbour::{Neighbour, NeighbourEntry};
use crate::netns::NetnsError;
use crate::route::{self, Route, RouteOwner};

/// Which network namespace an operation addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ns {
    Host,
    Pod,
}

impl Ns {
    pub fn name(self) -> &'static str {
        match self {
            Ns::Host => "host",
            Ns::Pod => "pod",
        }
    }
}

/// The kernel operations, blocking. Implemented with rtnetlink
/// ([`crate::rtnl::RtKernel`]) and, for tests, in memory (`fake::FakeKernel`, behind
/// the `fake` feature).
pub trait Kernel {
    /// Open the pod's network namespace for the `Ns::Pod` operations.
    fn open_pod_netns(&mut self, path: &Path) -> Result<(), NetnsError>;

    /// The open pod namespace's fd, for `IFLA_NET_NS_FD` on a peer's message.
    fn pod_netns_fd(&self) -> Option<RawFd>;

    /// `RTM_NEWLINK` with `NLM_F_CREATE | NLM_F_EXCL` in the host namespace.
    fn add_link(&mut self, message: LinkMessage) -> KernelResult<()>;

    fn link_by_name(&mut self, ns: Ns, name: &str) -> KernelResult<Option<Link>>;

    fn link_by_index(&mut self, ns: Ns, index: u32) -> KernelResult<Option<Link>>;

    fn links(&mut self, ns: Ns) -> KernelResult<Vec<Link>>;

    fn delete_link(&mut self, ns: Ns, index: u32) -> KernelResult<()>;

    fn set_link_up(&mut self, ns: Ns, index: u32) -> KernelResult<()>;

    fn set_link_down(&mut self, ns: Ns, index: u32) -> KernelResult<()>;

    fn set_alias(&mut self, ns: Ns, index: u32, alias: &str) -> KernelResult<()>;

    /// Add an address; IPv6 addresses are added with `IFA_F_NODAD` (usable at once).
    fn add_address(&mut self, ns: Ns, index: u32, addr: IpAddr, prefix: u8) -> KernelResult<()>;

    fn addresses(&mut self, ns: Ns, index: u32) -> KernelResult<Vec<(IpAddr, u8)>>;

    /// Add a main-table route, `proto static` ([`RouteOwner::MAIN_STATIC`]).
    fn add_route(&mut self, ns: Ns, route: &Route) -> KernelResult<()>;

    /// Main-table unicast routes of both families, whoever owns them (a dump: its cost
    /// grows with the table, which holds a route per pod on a node).
    fn routes(&mut self, ns: Ns) -> KernelResult<Vec<Route>>;

    /// The route the kernel would send traffic to `dst` by, `None` when `dst` cannot be
    /// reached (see [`route::get`]).
    fn route_get(&mut self, ns: Ns, dst: IpAddr) -> KernelResult<Option<Route>>;

    /// Add `route` to `owner`'s table with `owner`'s protocol; `EEXIST` when the table
    /// has a route to that prefix already.
    fn add_owned_route(&mut self, ns: Ns, owner: RouteOwner, route: &Route) -> KernelResult<()>;

    /// Add `route`, or replace the table's route to that prefix.
    fn replace_owned_route(&mut self, ns: Ns, owner: RouteOwner, route: &Route)
    -> KernelResult<()>;

    /// Delete `route` if `owner` owns it; `ESRCH` when it is absent or someone else's.
    fn delete_owned_route(&mut self, ns: Ns, owner: RouteOwner, route: &Route) -> KernelResult<()>;

    /// `owner`'s unicast routes of both families.
    fn owned_routes(&mut self, ns: Ns, owner: RouteOwner) -> KernelResult<Vec<Route>>;

    /// Add a static entry; `EEXIST` when the address has an entry on the link.
    fn add_neighbour(&mut self, ns: Ns, neighbour: &Neighbour) -> KernelResult<()>;

    /// The entries of link `index`, as static entries.
    fn neighbours(&mut self, ns: Ns, index: u32) -> KernelResult<Vec<Neighbour>>;

    /// Add an entry with its flags; `EEXIST` when the address has an entry on the link.
    fn add_neighbour_entry(&mut self, ns: Ns, entry: &NeighbourEntry) -> KernelResult<()>;

    /// Add an entry, or turn the address's existing entry into it.
    fn replace_neighbour_entry(&mut self, ns: Ns, entry: &NeighbourEntry) -> KernelResult<()>;

    /// Delete the entry for `ip` on link `ifindex`; `ENOENT` when there is none.
    fn delete_neighbour(&mut self, ns: Ns, ifindex: u32, ip: IpAddr) -> KernelResult<()>;

    /// The entries of link `ifindex` (of every link for `None`), with their flags.
    fn neighbour_entries(
        &mut self,
        ns: Ns,
        ifindex: Option<u32>,
    ) -> KernelResult<Vec<NeighbourEntry>>;

    /// A host sysctl by its path under `/proc/sys` (`net/ipv4/ip_forward`).
    fn sysctl(&mut self, key: &str) -> KernelResult<String>;

    fn set_sysctl(&mut self, key: &str, value: &str) -> KernelResult<()>;
}

/// The device traffic leaving `ns` takes (IPv4 first), if any: the blocking twin of
/// [`route::default_route_link`], with the same questions ([`route::OUTSIDE`]).
pub fn default_route_link(kernel: &mut dyn Kernel, ns: Ns) -> KernelResult<Option<Link>> {
    for outside in route::OUTSIDE {
        if let Some(oif) = kernel.route_get(ns, outside)?.and_then(|r| r.oif) {
            return kernel.link_by_index(ns, oif);
        }
    }
    Ok(None)
}
