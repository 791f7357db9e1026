//! The real kernel behind the blocking [`Kernel`] facade: the async core driven by a
//! current-thread tokio runtime this value owns (`block_on` per operation, so callers
//! stay sync), over one netlink connection per namespace.
//!
//! Do not call it from inside an async task: `block_on` would panic there. From async
//! code use the core modules ([`crate::link`], [`crate::route`], …) over
//! [`crate::connect`]'s handle instead. Build it in the process's own namespace and
//! reach others with [`RtKernel::in_netns`] / [`Kernel::open_pod_netns`] (see
//! [`crate::netns`] for why a runtime must not be built inside another namespace).

use std::future::Future;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;

use netlink_packet_route::link::LinkMessage;
use rtnetlink::Handle;
use tokio::runtime::Runtime;

use crate::error::{KernelError, KernelResult};
use crate::kernel::{Kernel, Ns};
use crate::link::{self, Link};
use crate::neighbour::{self, Neighbour, NeighbourEntry};
use crate::netns::{self, NetnsError};
use crate::route::{self, Route, RouteOwner};
use crate::{address, sysctl, tc};

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
    /// Connect to the host namespace (the caller's own).
    pub fn new() -> KernelResult<RtKernel> {
        let rt = runtime()?;
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

    /// Treat the namespace at `path` as the host namespace: the runtime is built on
    /// the calling thread, only the netlink socket is made in `path`.
    pub fn in_netns(path: &Path) -> KernelResult<RtKernel> {
        let rt = runtime()?;
        let op = || format!("open a netlink socket in {}", path.display());
        let host = netns::open_any(path)
            .and_then(|fd| netns::connect_in(path, &fd, rt.handle()))
            .map_err(|e| KernelError::from_netns(op(), &e))?;
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

    /// Attach program `prog_fd` as the `cls_bpf` filter in `slot` of link `ifindex`
    /// (adding an `ingress` qdisc first when the link has none), or swap the program of the
    /// filter already there; see [`crate::tc`] for why this and not a tcx link.
    pub fn attach_bpf_filter(
        &mut self,
        ns: Ns,
        ifindex: u32,
        slot: tc::FilterSlot,
        prog_fd: u32,
        name: &str,
    ) -> KernelResult<()> {
        self.run(ns, |h| async move {
            tc::ensure_ingress_qdisc(&h, ifindex).await?;
            tc::replace_bpf_filter(&h, ifindex, slot, prog_fd, name).await
        })
    }

    /// The `cls_bpf` filters at `hook` of link `ifindex`.
    pub fn bpf_filters(
        &mut self,
        ns: Ns,
        ifindex: u32,
        hook: tc::Hook,
    ) -> KernelResult<Vec<tc::BpfFilter>> {
        self.run(
            ns,
            |h| async move { tc::bpf_filters(&h, ifindex, hook).await },
        )
    }

    /// Run one core operation in `ns`; its error names the namespace.
    fn run<T, F, Fut>(&self, ns: Ns, op: F) -> KernelResult<T>
    where
        F: FnOnce(Handle) -> Fut,
        Fut: Future<Output = KernelResult<T>>,
    {
        let handle = self.handle(ns)?;
        self.rt
            .block_on(op(handle))
            .map_err(|e| e.within(ns.name()))
    }
}

/// The current-thread runtime a facade drives the core with.
fn runtime() -> KernelResult<Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| KernelError::from_io("start the netlink runtime", &e))
}

impl Kernel for RtKernel {
    fn open_pod_netns(&mut self, path: &Path) -> Result<(), NetnsError> {
        let fd = netns::open(path)?;
        let handle = netns::connect_in(path, &fd, self.rt.handle())?;
        self.pod = Some(PodNs { handle, fd });
        Ok(())
    }

    fn pod_netns_fd(&self) -> Option<RawFd> {
        self.pod.as_ref().map(|pod| pod.fd.as_raw_fd())
    }

    fn add_link(&mut self, message: LinkMessage) -> KernelResult<()> {
        let handle = self.host.clone();
        self.rt.block_on(link::add(&handle, message))
    }

    fn link_by_name(&mut self, ns: Ns, name: &str) -> KernelResult<Option<Link>> {
        self.run(ns, |h| async move { link::by_name(&h, name).await })
    }

    fn link_by_index(&mut self, ns: Ns, index: u32) -> KernelResult<Option<Link>> {
        self.run(ns, |h| async move { link::by_index(&h, index).await })
    }

    fn links(&mut self, ns: Ns) -> KernelResult<Vec<Link>> {
        self.run(ns, |h| async move { link::list(&h).await })
    }

    fn delete_link(&mut self, ns: Ns, index: u32) -> KernelResult<()> {
        self.run(ns, |h| async move { link::delete(&h, index).await })
    }

    fn set_link_up(&mut self, ns: Ns, index: u32) -> KernelResult<()> {
        self.run(ns, |h| async move { link::set_up(&h, index).await })
    }

    fn set_link_down(&mut self, ns: Ns, index: u32) -> KernelResult<()> {
        self.run(ns, |h| async move { link::set_down(&h, index).await })
    }

    fn set_alias(&mut self, ns: Ns, index: u32, alias: &str) -> KernelResult<()> {
        self.run(
            ns,
            |h| async move { link::set_alias(&h, index, alias).await },
        )
    }

    fn add_address(&mut self, ns: Ns, index: u32, addr: IpAddr, prefix: u8) -> KernelResult<()> {
        self.run(ns, |h| async move {
            address::add(&h, index, addr, prefix).await
        })
    }

    fn addresses(&mut self, ns: Ns, index: u32) -> KernelResult<Vec<(IpAddr, u8)>> {
        self.run(ns, |h| async move { address::list(&h, index).await })
    }

    fn add_route(&mut self, ns: Ns, route: &Route) -> KernelResult<()> {
        self.add_owned_route(ns, RouteOwner::MAIN_STATIC, route)
    }

    fn routes(&mut self, ns: Ns) -> KernelResult<Vec<Route>> {
        self.run(ns, |h| async move { route::list_main(&h).await })
    }

    fn route_get(&mut self, ns: Ns, dst: IpAddr) -> KernelResult<Option<Route>> {
        self.run(ns, |h| async move { route::get(&h, dst).await })
    }

    fn add_owned_route(&mut self, ns: Ns, owner: RouteOwner, route: &Route) -> KernelResult<()> {
        self.run(ns, |h| async move { route::add(&h, owner, route).await })
    }

    fn replace_owned_route(
        &mut self,
        ns: Ns,
        owner: RouteOwner,
        route: &Route,
    ) -> KernelResult<()> {
        self.run(
            ns,
            |h| async move { route::replace(&h, owner, route).await },
        )
    }

    fn delete_owned_route(&mut self, ns: Ns, owner: RouteOwner, route: &Route) -> KernelResult<()> {
        self.run(ns, |h| async move { route::delete(&h, owner, route).await })
    }

    fn owned_routes(&mut self, ns: Ns, owner: RouteOwner) -> KernelResult<Vec<Route>> {
        self.run(ns, |h| async move { route::list(&h, owner).await })
    }

    fn add_neighbour(&mut self, ns: Ns, neighbour: &Neighbour) -> KernelResult<()> {
        self.run(ns, |h| async move { neighbour::add(&h, neighbour).await })
    }

    fn neighbours(&mut self, ns: Ns, index: u32) -> KernelResult<Vec<Neighbour>> {
        let entries = self.neighbour_entries(ns, Some(index))?;
        Ok(entries.into_iter().map(Neighbour::from).collect())
    }

    fn add_neighbour_entry(&mut self, ns: Ns, entry: &NeighbourEntry) -> KernelResult<()> {
        self.run(ns, |h| async move { neighbour::add_entry(&h, entry).await })
    }

    fn replace_neighbour_entry(&mut self, ns: Ns, entry: &NeighbourEntry) -> KernelResult<()> {
        self.run(
            ns,
            |h| async move { neighbour::replace_entry(&h, entry).await },
        )
    }

    fn delete_neighbour(&mut self, ns: Ns, ifindex: u32, ip: IpAddr) -> KernelResult<()> {
        self.run(
            ns,
            |h| async move { neighbour::delete(&h, ifindex, ip).await },
        )
    }

    fn neighbour_entries(
        &mut self,
        ns: Ns,
        ifindex: Option<u32>,
    ) -> KernelResult<Vec<NeighbourEntry>> {
        self.run(ns, |h| async move { neighbour::list(&h, ifindex).await })
    }

    fn sysctl(&mut self, key: &str) -> KernelResult<String> {
        sysctl::read(key)
    }

    fn set_sysctl(&mut self, key: &str, value: &str) -> KernelResult<()> {
        sysctl::write(key, value)
    }
}
