//! The kernel seam: every kernel operation the plugin's decisions need, behind one
//! small trait, so the decision logic in `cmd` runs against a fake in unit tests.
//!
//! Two namespaces are in play: the host's (the plugin's own) and the pod's (opened
//! once per invocation with [`Kernel::open_pod_netns`]). The plugin's threads never
//! change namespace; see [`netns`].

use std::net::IpAddr;
use std::os::fd::RawFd;
use std::path::Path;

use netlink_packet_route::link::{LinkMessage, NetkitMode, NetkitPolicy};

#[cfg(test)]
pub mod fake;
pub mod netns;
pub mod rtnl;

pub use netns::NetnsError;

/// Which network namespace an operation addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ns {
    Host,
    Pod,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkKind {
    Netkit,
    Veth,
    Other(String),
}

/// `IFLA_NETKIT_*` as the kernel reports them for one end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetkitInfo {
    pub mode: NetkitMode,
    pub primary: bool,
    pub policy: NetkitPolicy,
    pub peer_policy: NetkitPolicy,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub kind: Option<LinkKind>,
    /// Hardware address; `None` when the device has none (netkit L3).
    pub mac: Option<Vec<u8>>,
    pub mtu: u32,
    pub up: bool,
    pub alias: Option<String>,
    /// `IFLA_LINK`: the other end's ifindex (in its own namespace) for pairs.
    pub peer_index: Option<u32>,
    pub netkit: Option<NetkitInfo>,
}

/// A route in the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: IpAddr,
    pub prefix: u8,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
    /// `RTNH_F_ONLINK`: the gateway is reachable on `oif` without a covering prefix.
    pub onlink: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    pub ifindex: u32,
    pub ip: IpAddr,
    pub mac: Vec<u8>,
    /// `NUD_PERMANENT`.
    pub permanent: bool,
}

/// A failed kernel operation, named, with its errno when the kernel gave one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{op}: {message}")]
pub struct KernelError {
    pub op: String,
    pub errno: Option<i32>,
    pub message: String,
}

impl KernelError {
    pub fn new(
        op: impl Into<String>,
        errno: Option<i32>,
        message: impl Into<String>,
    ) -> KernelError {
        KernelError {
            op: op.into(),
            errno,
            message: message.into(),
        }
    }

    pub fn from_errno(op: impl Into<String>, errno: i32) -> KernelError {
        let message = std::io::Error::from_raw_os_error(errno).to_string();
        KernelError::new(op, Some(errno), message)
    }

    pub fn from_io(op: impl Into<String>, e: &std::io::Error) -> KernelError {
        KernelError::new(op, e.raw_os_error(), e.to_string())
    }

    pub fn is(&self, errno: i32) -> bool {
        self.errno == Some(errno)
    }

    /// The object is already gone (`ENODEV`, `ENOENT`, `ESRCH`).
    pub fn is_not_found(&self) -> bool {
        self.is(libc::ENODEV) || self.is(libc::ENOENT) || self.is(libc::ESRCH)
    }
}

pub type KernelResult<T> = Result<T, KernelError>;

/// The kernel operations the plugin performs. Implemented with rtnetlink
/// ([`rtnl::RtKernel`]) and, for tests, in memory (`fake::FakeKernel`).
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

    fn add_route(&mut self, ns: Ns, route: &Route) -> KernelResult<()>;

    /// Main-table unicast routes of both families.
    fn routes(&mut self, ns: Ns) -> KernelResult<Vec<Route>>;

    fn add_neighbour(&mut self, ns: Ns, neighbour: &Neighbour) -> KernelResult<()>;

    fn neighbours(&mut self, ns: Ns, index: u32) -> KernelResult<Vec<Neighbour>>;

    /// A host sysctl by its path under `/proc/sys` (`net/ipv4/ip_forward`).
    fn sysctl(&mut self, key: &str) -> KernelResult<String>;

    fn set_sysctl(&mut self, key: &str, value: &str) -> KernelResult<()>;
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A hardware address worth reporting: present and not all zeros.
pub fn meaningful_mac(mac: Option<&[u8]>) -> Option<&[u8]> {
    mac.filter(|m| !m.is_empty() && m.iter().any(|b| *b != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_format_as_lower_hex() {
        assert_eq!(
            format_mac(&[0x02, 0xab, 0, 1, 2, 0xff]),
            "02:ab:00:01:02:ff"
        );
        assert_eq!(meaningful_mac(Some(&[0; 6])), None);
        assert_eq!(meaningful_mac(None), None);
    }

    #[test]
    fn errors_know_their_errno() {
        let e = KernelError::from_errno("create link", libc::EEXIST);
        assert!(e.is(libc::EEXIST));
        assert!(!e.is_not_found());
        assert!(KernelError::from_errno("delete link", libc::ENODEV).is_not_found());
        assert!(e.to_string().starts_with("create link: "));
    }
}
