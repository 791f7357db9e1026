//! The BPF datapath on this node: the embedded object, where its pieces are pinned, and
//! the operations the agent performs on it (attach the uplink, program and remove pod
//! endpoints, read the counters). Everything attached is pinned, so the datapath keeps
//! forwarding while the agent is down or being replaced.

mod bpffs;
mod btf;
mod kfunc;
mod loader;
mod pins;
pub mod sys;

use std::net::IpAddr;
use std::os::fd::{AsFd as _, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use aya::maps::lpm_trie::{Key as LpmKey, LpmTrie};
use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray};
use ipnetwork::IpNetwork;
use netkit_api::LinkMode;
use netkit_common::{
    ENDPOINT_F_NETKIT, ENDPOINT_F_VETH, EndpointKey, EndpointValue, RemoteRoute, RouteAddr, Stat,
};

pub use loader::{TranslationCheck, TranslationMode};
pub use pins::PinLayout;
use sys::AttachType;

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("bpffs: {0}")]
    Bpffs(String),
    #[error("loading the BPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error("the BPF object has no {0}")]
    Missing(&'static str),
    #[error(transparent)]
    Sys(#[from] sys::SysError),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("interface {0} not found")]
    NoInterface(String),
    #[error("invalid MAC address {0:?}")]
    Mac(String),
    #[error("binding kernel functions: {0}")]
    Kfunc(String),
    #[error(transparent)]
    Kernel(#[from] netkit_netlink::KernelError),
}

pub type Result<T> = std::result::Result<T, DatapathError>;

/// What the agent's endpoint service needs of the datapath: the seam its unit tests
/// replace with an in-memory fake (`service::tests`). The remote-route map part is
/// [`RouteMap`](crate::routing::RouteMap).
pub trait DatapathOps: crate::routing::RouteMap + Send + Sync {
    /// Map the endpoint's addresses and attach its program (the ones [`attachments`]
    /// names).
    fn program_endpoint(&self, spec: &EndpointSpec<'_>) -> Result<()>;
    /// Unmap the addresses and unpin the endpoint's links; idempotent.
    fn remove_endpoint(&self, pin_name: &str, addresses: &[IpAddr]) -> Result<()>;
    /// Addresses in the endpoint map (a walk of the map: for reconciliation).
    fn mapped_addresses(&self) -> Vec<EndpointKey>;
    /// How many addresses the endpoint map holds, without walking it (for status).
    fn mapped_count(&self) -> usize;
    /// How many pod CIDRs the remote-route map holds, without walking it (for status).
    fn remote_route_count(&self) -> usize;
    /// Delete one endpoint-map entry; idempotent.
    fn unmap(&self, key: &EndpointKey) -> Result<()>;
    /// Names of the endpoint pin directories.
    fn pinned_endpoints(&self) -> Vec<String>;
    fn counters(&self) -> Result<Vec<(Stat, u64)>>;
    fn translation_check(&self) -> String;
    /// The ifindex of host interface `name`, if it exists.
    fn link_index(&self, name: &str) -> Option<u32>;
    /// Delete host interface `name` if it still is device `ifindex` (the pod end goes
    /// with it); gone already, or the name now another device's, is success.
    fn delete_link(&self, name: &str, ifindex: u32) -> Result<()>;
}

impl DatapathOps for Datapath {
    fn program_endpoint(&self, spec: &EndpointSpec<'_>) -> Result<()> {
        Datapath::program_endpoint(self, spec)
    }
    fn remove_endpoint(&self, pin_name: &str, addresses: &[IpAddr]) -> Result<()> {
        Datapath::remove_endpoint(self, pin_name, addresses)
    }
    fn mapped_addresses(&self) -> Vec<EndpointKey> {
        Datapath::mapped_addresses(self)
    }
    fn mapped_count(&self) -> usize {
        Datapath::mapped_count(self)
    }
    fn remote_route_count(&self) -> usize {
        Datapath::remote_route_count(self)
    }
    fn unmap(&self, key: &EndpointKey) -> Result<()> {
        Datapath::unmap(self, key)
    }
    fn pinned_endpoints(&self) -> Vec<String> {
        self.pins.pinned_endpoints()
    }
    fn counters(&self) -> Result<Vec<(Stat, u64)>> {
        Datapath::counters(self)
    }
    fn translation_check(&self) -> String {
        self.programs.translation_check.to_string()
    }
    fn link_index(&self, name: &str) -> Option<u32> {
        ifindex_of(name).ok()
    }
    fn delete_link(&self, name: &str, ifindex: u32) -> Result<()> {
        use netkit_netlink::{Kernel as _, Ns};
        if ifindex_of(name).ok() != Some(ifindex) {
            return Ok(());
        }
        // Deleting the device detaches its programs with it (one RCU grace period under
        // the rtnl lock, the same as detaching them first would cost); the endpoint's
        // pinned links are then defunct, and unpinning them costs nothing.
        match netkit_netlink::RtKernel::new()?.delete_link(Ns::Host, ifindex) {
            Err(e) if !e.is_not_found() => Err(e.into()),
            _ => Ok(()),
        }
    }
}

/// Where a pod's egress program attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EgressHook {
    /// A BPF link on a `bpf_mprog` hook, pinned in the endpoint's directory: netkit's
    /// peer hook, whose default-drop policy holds until the program is there.
    Link(AttachType),
    /// The `cls_bpf` filter on the `ingress` qdisc of the host-side veth. Not a tcx link:
    /// that attach waits for a normal RCU grace period under the rtnl lock (7–16 ms,
    /// most of a pod start); the filter waits at most for an expedited one
    /// (see `netkit_netlink::tc`).
    TcIngress,
}

impl EgressHook {
    fn of(mode: LinkMode) -> EgressHook {
        match mode {
            LinkMode::Netkit => EgressHook::Link(AttachType::NetkitPeer),
            LinkMode::Veth => EgressHook::TcIngress,
        }
    }

    fn name(self) -> &'static str {
        match self {
            EgressHook::Link(at) => at.name(),
            EgressHook::TcIngress => "tc_ingress",
        }
    }
}

/// The filter slot a veth endpoint's egress program takes on its host end: fixed, so a
/// re-attach (restart, upgrade) replaces the program instead of adding a second filter.
pub const POD_EGRESS_FILTER: netkit_netlink::tc::FilterSlot = netkit_netlink::tc::FilterSlot {
    hook: netkit_netlink::tc::Hook::Ingress,
    priority: 1,
    handle: 1,
};

/// The name the egress filter carries (what `tc filter show` prints).
pub const POD_EGRESS_FILTER_NAME: &str = "nk_pod_egress";

/// The attachments an endpoint in `mode` gets, as its record lists them; known before
/// the attach, so the record can be written while the attach runs.
pub fn attachments(mode: LinkMode) -> Vec<String> {
    vec![format!("pod_egress@{}", EgressHook::of(mode).name())]
}

/// What the datapath needs to know about one endpoint.
pub struct EndpointSpec<'a> {
    /// Directory name for the endpoint's pins (unique per endpoint).
    pub pin_name: &'a str,
    pub mode: LinkMode,
    pub host_ifindex: u32,
    pub pod_mac: Option<&'a str>,
    pub host_mac: Option<&'a str>,
    pub addresses: &'a [IpAddr],
}

/// The node's datapath: pinned maps held open, and one loaded instance of the programs
/// that every attachment shares.
///
/// Shared by the requests the agent serves at once: the map handles sit behind a lock
/// held only for the map syscalls themselves, and link creation — the slow part, an RCU
/// grace period under the rtnl lock — happens outside it.
pub struct Datapath {
    pins: PinLayout,
    /// The programs, loaded and verified once: they find the pod from the packet, so
    /// they serve every attachment. Only their fds are kept, not the object they came
    /// from.
    programs: loader::Programs,
    maps: Mutex<Maps>,
    /// The netlink connection veth attaches go through: made on first use and kept, as
    /// one of its own per attach (a runtime and a socket) cost more than the attach.
    /// Held only for the attach's two requests.
    attach_netlink: Mutex<Option<netkit_netlink::RtKernel>>,
}

struct Maps {
    endpoints: BpfHashMap<MapData, EndpointKey, EndpointValue>,
    /// Entries in `endpoints` and `remote_routes`: counted once at open, then kept as the
    /// agent (the maps' only writer) adds and deletes them, so status walks no map.
    endpoint_entries: usize,
    remote_routes: LpmTrie<MapData, RouteAddr, RemoteRoute>,
    remote_route_entries: usize,
    stats: PerCpuArray<MapData, u64>,
}

impl Datapath {
    /// Open (or create) the pinned maps under `root`, mounting bpffs first when the
    /// root's filesystem is not one.
    pub fn open(root: &Path, mode: TranslationMode) -> Result<Self> {
        bpffs::ensure_mounted(root)?;
        let pins = PinLayout::new(root);
        pins.create_dirs()?;
        let (mut ebpf, programs) = loader::load(&pins, mode)?;
        if let TranslationCheck::StackOnly(why) = &programs.translation_check {
            tracing::warn!(
                reason = %why,
                "conntrack cannot be asked on this kernel: pod-bound TCP/UDP takes the host stack"
            );
        }
        let endpoints = take_map(&mut ebpf, netkit_common::map_names::ENDPOINTS)?;
        let endpoints = BpfHashMap::try_from(endpoints).map_err(|source| DatapathError::Map {
            name: "NK_ENDPOINTS",
            source,
        })?;
        let stats = take_map(&mut ebpf, netkit_common::map_names::STATS)?;
        let stats = PerCpuArray::try_from(stats).map_err(|source| DatapathError::Map {
            name: "NK_STATS",
            source,
        })?;
        let remote_routes = take_map(&mut ebpf, netkit_common::map_names::REMOTE_ROUTES)?;
        let remote_routes =
            LpmTrie::try_from(remote_routes).map_err(|source| DatapathError::Map {
                name: "NK_REMOTE_ROUTES",
                source,
            })?;
        // What else the object holds (the programs' instructions, aya's own fds of the
        // programs whose fds `programs` duplicated) is not needed again.
        drop(ebpf);
        let endpoint_entries = endpoints.keys().filter(|k| k.is_ok()).count();
        let remote_route_entries = remote_routes.keys().filter(|k| k.is_ok()).count();
        release_freed_memory();
        Ok(Datapath {
            pins,
            programs,
            maps: Mutex::new(Maps {
                endpoints,
                endpoint_entries,
                remote_routes,
                remote_route_entries,
                stats,
            }),
            attach_netlink: Mutex::new(None),
        })
    }

    /// The map handles. A panic while holding them cannot leave a map half-written
    /// (each operation is one syscall), so a poisoned lock is simply taken over.
    fn maps(&self) -> std::sync::MutexGuard<'_, Maps> {
        self.maps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn pins(&self) -> &PinLayout {
        &self.pins
    }

    /// How translated flows are kept off the fast path on this node.
    pub fn translation_check(&self) -> &TranslationCheck {
        &self.programs.translation_check
    }

    /// Attach the uplink program at tcx ingress of `ifname`, or move an existing pinned
    /// attachment to the newly embedded program (an upgrade) without detaching it.
    pub fn attach_uplink(&self, ifname: &str) -> Result<()> {
        let ifindex = ifindex_of(ifname)?;
        let pin = self.pins.uplink_link(ifname);
        let prog = self.programs.uplink_ingress.as_fd();
        attach_or_update(&pin, prog, ifindex, AttachType::TcxIngress)
    }

    /// Attach the pod's egress program for an endpoint (replacing the program of an
    /// existing attachment atomically) and write its addresses into the endpoint map.
    ///
    /// One attach per pod: a netkit link costs an RCU grace period under the rtnl lock,
    /// the floor of a pod start there; a veth host end's filter costs far less (see
    /// [`EgressHook::TcIngress`]). Traffic into the pod needs no program of its own —
    /// the fast path redirects into it and the stack routes to it — so the ingress hook
    /// stays empty.
    pub fn program_endpoint(&self, spec: &EndpointSpec<'_>) -> Result<()> {
        let flags = match spec.mode {
            LinkMode::Netkit => ENDPOINT_F_NETKIT,
            LinkMode::Veth => ENDPOINT_F_VETH,
        };
        let value = EndpointValue {
            ifindex: spec.host_ifindex,
            flags,
            pod_mac: parse_mac(spec.pod_mac)?,
            host_mac: parse_mac(spec.host_mac)?,
        };
        // Map entries first: the egress program drops every source it cannot find, so
        // the pod's own addresses must be known before it runs.
        {
            let mut maps = self.maps();
            for addr in spec.addresses {
                maps.map_address(&endpoint_key(addr), value)?;
            }
        }
        let dir = self.pins.endpoint_dir(spec.pin_name);
        std::fs::create_dir_all(&dir).map_err(|source| DatapathError::Io {
            what: "creating",
            path: dir.clone(),
            source,
        })?;
        // Agents before the single-attach datapath also pinned a counting ingress
        // program; an upgrade lets it go.
        remove_pin(&dir.join(pins::LEGACY_INGRESS))?;
        let egress = self.programs.pod_egress.as_fd();
        let egress_pin = dir.join(pins::EGRESS);
        match EgressHook::of(spec.mode) {
            EgressHook::Link(at) => attach_or_update(&egress_pin, egress, spec.host_ifindex, at),
            EgressHook::TcIngress => {
                self.attach_filter(spec.host_ifindex, egress)?;
                // Agents before the filter attach pinned a tcx link here. Its program
                // ran first and decided every packet until now; with the filter in
                // place it can go (its release costs one grace period, once).
                remove_pin(&egress_pin)
            }
        }
    }

    /// Attach `prog` as the pod egress filter of host link `ifindex`, or swap the
    /// program of the filter already there.
    fn attach_filter(&self, ifindex: u32, prog: BorrowedFd<'_>) -> Result<()> {
        use std::os::fd::AsRawFd as _;
        let fd = u32::try_from(prog.as_raw_fd()).map_err(|_| {
            netkit_netlink::KernelError::invalid("attach the pod egress filter", "negative fd")
        })?;
        let mut connection = self
            .attach_netlink
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let kernel = match connection.as_mut() {
            Some(kernel) => kernel,
            None => connection.insert(netkit_netlink::RtKernel::new()?),
        };
        let attached = kernel.attach_bpf_filter(
            netkit_netlink::Ns::Host,
            ifindex,
            POD_EGRESS_FILTER,
            fd,
            POD_EGRESS_FILTER_NAME,
        );
        // A failure the kernel did not answer with an errno is the connection's own
        // (closed, a reply that did not parse): the next attach makes a new one.
        if attached.as_ref().is_err_and(|e| e.errno.is_none()) {
            *connection = None;
        }
        Ok(attached?)
    }

    /// Forget an endpoint's addresses and remove its pin directory (a netkit endpoint's
    /// link is released with its pin; a veth endpoint's filter goes with its device,
    /// which the plugin or the agent's teardown deletes). Missing pieces are not errors:
    /// removal is idempotent.
    pub fn remove_endpoint(&self, pin_name: &str, addresses: &[IpAddr]) -> Result<()> {
        for addr in addresses {
            self.unmap(&endpoint_key(addr))?;
        }
        let dir = self.pins.endpoint_dir(pin_name);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(DatapathError::Io {
                what: "removing",
                path: dir,
                source,
            }),
        }
    }

    /// Addresses in the endpoint map (for reconciliation: a walk of the whole map).
    pub fn mapped_addresses(&self) -> Vec<EndpointKey> {
        self.maps()
            .endpoints
            .keys()
            .filter_map(|k| k.ok())
            .collect()
    }

    /// How many addresses the endpoint map holds, without walking it.
    pub fn mapped_count(&self) -> usize {
        self.maps().endpoint_entries
    }

    /// Delete one endpoint-map entry. A missing entry is fine: removal is idempotent.
    pub fn unmap(&self, key: &EndpointKey) -> Result<()> {
        let mut maps = self.maps();
        match maps.endpoints.remove(key) {
            Ok(()) => {
                maps.endpoint_entries = maps.endpoint_entries.saturating_sub(1);
                Ok(())
            }
            Err(e) if is_not_found(&e) => Ok(()),
            Err(source) => Err(DatapathError::Map {
                name: "NK_ENDPOINTS",
                source,
            }),
        }
    }

    /// Route `cidr` (another node's pods) on the fast path; `node` is where it lives.
    pub fn set_remote_route(&self, cidr: IpNetwork, node: IpAddr) -> Result<()> {
        let value = RemoteRoute {
            node: endpoint_key(&node).addr,
        };
        let failed = |source| DatapathError::Map {
            name: "NK_REMOTE_ROUTES",
            source,
        };
        let key = route_key(cidr);
        let mut maps = self.maps();
        match maps.remote_routes.insert(&key, value, BPF_NOEXIST) {
            Ok(()) => {
                maps.remote_route_entries += 1;
                Ok(())
            }
            Err(e) if errno_of(&e) == Some(libc::EEXIST) => maps
                .remote_routes
                .insert(&key, value, BPF_ANY)
                .map_err(failed),
            Err(e) => Err(failed(e)),
        }
    }

    /// Stop routing `cidr` on the fast path. A missing entry is fine.
    pub fn remove_remote_route(&self, cidr: IpNetwork) -> Result<()> {
        let mut maps = self.maps();
        match maps.remote_routes.remove(&route_key(cidr)) {
            Ok(()) => {
                maps.remote_route_entries = maps.remote_route_entries.saturating_sub(1);
                Ok(())
            }
            Err(e) if is_not_found(&e) => Ok(()),
            Err(source) => Err(DatapathError::Map {
                name: "NK_REMOTE_ROUTES",
                source,
            }),
        }
    }

    /// How many remote pod CIDRs the map holds, without walking it.
    pub fn remote_route_count(&self) -> usize {
        self.maps().remote_route_entries
    }

    /// The remote pod CIDRs in the map, with their nodes (a walk of the whole map: for
    /// reconciliation).
    pub fn remote_routes(&self) -> Vec<(IpNetwork, IpAddr)> {
        self.maps()
            .remote_routes
            .iter()
            .filter_map(|entry| entry.ok())
            .filter_map(|(key, value)| {
                let cidr = cidr_of(&key)?;
                Some((cidr, addr_of(&EndpointKey { addr: value.node })))
            })
            .collect()
    }

    /// Every counter summed over CPUs, in `Stat::ALL` order.
    pub fn counters(&self) -> Result<Vec<(Stat, u64)>> {
        let maps = self.maps();
        Stat::ALL
            .iter()
            .map(|stat| {
                let per_cpu =
                    maps.stats
                        .get(&stat.index(), 0)
                        .map_err(|source| DatapathError::Map {
                            name: "NK_STATS",
                            source,
                        })?;
                Ok((*stat, per_cpu.iter().sum()))
            })
            .collect()
    }
}

impl Maps {
    /// Add or replace the entry for `key`, counting it when it is new: the insert is
    /// tried as `BPF_NOEXIST` first, and an `EEXIST` makes it an update.
    fn map_address(&mut self, key: &EndpointKey, value: EndpointValue) -> Result<()> {
        let failed = |source| DatapathError::Map {
            name: "NK_ENDPOINTS",
            source,
        };
        match self.endpoints.insert(key, value, BPF_NOEXIST) {
            Ok(()) => {
                self.endpoint_entries += 1;
                Ok(())
            }
            Err(e) if errno_of(&e) == Some(libc::EEXIST) => {
                self.endpoints.insert(key, value, BPF_ANY).map_err(failed)
            }
            Err(e) => Err(failed(e)),
        }
    }
}

/// `BPF_MAP_UPDATE_ELEM` flags: create or update, create only.
const BPF_ANY: u64 = 0;
const BPF_NOEXIST: u64 = 1;

fn errno_of(e: &aya::maps::MapError) -> Option<i32> {
    match e {
        aya::maps::MapError::SyscallError(s) => s.io_error.raw_os_error(),
        _ => None,
    }
}

/// Hand the heap the agent freed back to the kernel. Loading parses the kernel's BTF
/// (several MiB, in many small allocations) and copies the object; freed, that memory
/// stays in the process as free heap unless trimmed, and would be most of the agent's
/// resident size.
fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free heap pages to the kernel; it touches no
    // live allocation and is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// aya reports a missing key on delete as the syscall's ENOENT, not `KeyNotFound`.
fn is_not_found(e: &aya::maps::MapError) -> bool {
    match e {
        aya::maps::MapError::KeyNotFound => true,
        _ => errno_of(e) == Some(libc::ENOENT),
    }
}

fn take_map(ebpf: &mut aya::Ebpf, name: &'static str) -> Result<aya::maps::Map> {
    ebpf.take_map(name).ok_or(DatapathError::Missing(name))
}

/// Attach `prog` at `at` on `ifindex`, pinning the link at `pin`. When `pin` already
/// holds a link (agent restart or upgrade), swap its program with `BPF_LINK_UPDATE`
/// instead: the hook is never empty.
fn attach_or_update(pin: &Path, prog: BorrowedFd<'_>, ifindex: u32, at: AttachType) -> Result<()> {
    if pin.exists() {
        let link = sys::obj_get(pin)?;
        match sys::link_update(link.as_fd(), prog) {
            Ok(()) => return Ok(()),
            // The link outlived its device (defunct): replace the pin with a new link.
            Err(e) => {
                tracing::info!(pin = %pin.display(), error = %e, "pinned link not updatable; re-attaching");
                remove_pin(pin)?;
            }
        }
    }
    let link = sys::link_create(prog, ifindex, at)?;
    sys::obj_pin(link.as_fd(), pin)?;
    Ok(())
}

fn remove_pin(pin: &Path) -> Result<()> {
    match std::fs::remove_file(pin) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(DatapathError::Io {
            what: "unpinning",
            path: pin.to_path_buf(),
            source,
        }),
    }
}

pub fn endpoint_key(addr: &IpAddr) -> EndpointKey {
    match addr {
        IpAddr::V4(v4) => EndpointKey::from_v4(v4.octets()),
        IpAddr::V6(v6) => EndpointKey::from_v6(v6.octets()),
    }
}

/// The LPM key of a CIDR: IPv4 mapped into the 16-byte space, its prefix shifted by 96.
fn route_key(cidr: IpNetwork) -> LpmKey<RouteAddr> {
    match cidr {
        IpNetwork::V4(n) => LpmKey::new(
            96 + u32::from(n.prefix()),
            EndpointKey::from_v4(n.network().octets()).addr,
        ),
        IpNetwork::V6(n) => LpmKey::new(u32::from(n.prefix()), n.network().octets()),
    }
}

/// The CIDR an LPM key stands for (the inverse of `route_key`).
fn cidr_of(key: &LpmKey<RouteAddr>) -> Option<IpNetwork> {
    let prefix = u8::try_from(key.prefix_len()).ok()?;
    let addr = EndpointKey { addr: key.data() };
    match addr.v4() {
        Some(v4) if prefix >= 96 => IpNetwork::new(v4.into(), prefix - 96).ok(),
        _ => IpNetwork::new(std::net::Ipv6Addr::from(key.data()).into(), prefix).ok(),
    }
}

/// The address an endpoint-map style key holds (IPv4-mapped → IPv4).
fn addr_of(key: &EndpointKey) -> IpAddr {
    match key.v4() {
        Some(v4) => v4.into(),
        None => std::net::Ipv6Addr::from(key.addr).into(),
    }
}

pub fn ifindex_of(ifname: &str) -> Result<u32> {
    nix::net::if_::if_nametoindex(ifname)
        .map_err(|_| DatapathError::NoInterface(ifname.to_string()))
}

fn parse_mac(mac: Option<&str>) -> Result<[u8; 6]> {
    let Some(text) = mac else {
        return Ok([0; 6]);
    };
    let mut out = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut out {
        let part = parts
            .next()
            .ok_or_else(|| DatapathError::Mac(text.to_string()))?;
        *byte = u8::from_str_radix(part, 16).map_err(|_| DatapathError::Mac(text.to_string()))?;
    }
    if parts.next().is_some() {
        return Err(DatapathError::Mac(text.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_strictly() {
        assert_eq!(
            parse_mac(Some("02:00:0a:ff:00:01")).unwrap(),
            [2, 0, 10, 255, 0, 1]
        );
        assert_eq!(parse_mac(None).unwrap(), [0; 6]);
        assert!(parse_mac(Some("02:00:0a:ff:00")).is_err());
        assert!(parse_mac(Some("02:00:0a:ff:00:01:02")).is_err());
        assert!(parse_mac(Some("zz:00:0a:ff:00:01")).is_err());
    }

    #[test]
    fn route_keys_round_trip_both_families() {
        for text in ["10.244.1.0/24", "0.0.0.0/0", "fd00:244:1::/64", "::/0"] {
            let cidr: IpNetwork = text.parse().unwrap();
            assert_eq!(cidr_of(&route_key(cidr)), Some(cidr), "{text}");
        }
        let v4 = route_key("10.244.1.0/24".parse().unwrap());
        assert_eq!(v4.prefix_len(), 120);
        assert_eq!(
            addr_of(&EndpointKey::from_v4([10, 0, 0, 1])),
            IpAddr::from([10, 0, 0, 1])
        );
    }

    #[test]
    fn keys_follow_the_shared_layout() {
        let v4: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(endpoint_key(&v4), EndpointKey::from_v4([10, 1, 2, 3]));
        let v6: IpAddr = "fd00::1".parse().unwrap();
        assert_eq!(endpoint_key(&v6).addr[0], 0xfd);
    }
}
