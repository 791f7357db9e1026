//! Neighbour (ARP / NDP) entries: static ones with a known link-layer address (the
//! veth fallback's gateway in the pod), and the managed entries the agent keeps for
//! its next hops: `NTF_EXT_LEARNED` (a control plane's, spared by the kernel's garbage
//! collection) with `NTF_EXT_MANAGED` (`NDA_FLAGS_EXT`: the kernel resolves the entry
//! and keeps it reachable, so `bpf_fib_lookup` finds an L2 address), added without one.

use std::net::IpAddr;

use futures::TryStreamExt as _;
use netlink_packet_route::AddressFamily;
/// `NUD_*`, as netlink-packet-route names them (re-exported: callers need no netlink crate
/// but this one).
pub use netlink_packet_route::neighbour::NeighbourState;
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourExtFlags, NeighbourFlags, NeighbourMessage,
};
use netlink_packet_route::route::{RouteProtocol, RouteType};
use rtnetlink::Handle;

use crate::error::{KernelError, KernelResult};

/// A static entry: `ip` is at `mac` on link `ifindex`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    pub ifindex: u32,
    pub ip: IpAddr,
    pub mac: Vec<u8>,
    /// `NUD_PERMANENT` (else added as `NUD_REACHABLE`).
    pub permanent: bool,
}

/// A neighbour entry with its state and ownership flags, as the kernel reports it or
/// as it is to be added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighbourEntry {
    pub ifindex: u32,
    pub ip: IpAddr,
    /// `NDA_LLADDR`; `None` while unresolved (a managed entry is added without one).
    pub mac: Option<Vec<u8>>,
    /// `NUD_*`.
    pub state: NeighbourState,
    /// `NTF_EXT_LEARNED`.
    pub extern_learned: bool,
    /// `NTF_EXT_MANAGED`, carried in `NDA_FLAGS_EXT`.
    pub managed: bool,
    /// `NDA_PROTOCOL`: who installed the entry; the kernel reports it only when set.
    pub protocol: Option<u8>,
}

impl NeighbourEntry {
    /// A managed, externally learned entry for `ip` on `ifindex`, without a link-layer
    /// address and in state `NUD_NONE`: the kernel resolves it and keeps it fresh.
    pub fn managed(ifindex: u32, ip: IpAddr, protocol: Option<u8>) -> NeighbourEntry {
        NeighbourEntry {
            ifindex,
            ip,
            mac: None,
            state: NeighbourState::None,
            extern_learned: true,
            managed: true,
            protocol,
        }
    }
}

impl From<&Neighbour> for NeighbourEntry {
    fn from(n: &Neighbour) -> NeighbourEntry {
        NeighbourEntry {
            ifindex: n.ifindex,
            ip: n.ip,
            mac: Some(n.mac.clone()),
            state: if n.permanent {
                NeighbourState::Permanent
            } else {
                NeighbourState::Reachable
            },
            extern_learned: false,
            managed: false,
            protocol: None,
        }
    }
}

impl From<NeighbourEntry> for Neighbour {
    fn from(e: NeighbourEntry) -> Neighbour {
        Neighbour {
            ifindex: e.ifindex,
            ip: e.ip,
            mac: e.mac.unwrap_or_default(),
            permanent: e.state == NeighbourState::Permanent,
        }
    }
}

/// The `RTM_NEWNEIGH` body for `entry`.
pub fn message(entry: &NeighbourEntry) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = match entry.ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    msg.header.ifindex = entry.ifindex;
    msg.header.state = entry.state;
    if entry.extern_learned {
        msg.header.flags = NeighbourFlags::ExtLearned;
    }
    msg.header.kind = RouteType::Unspec;
    msg.attributes
        .push(NeighbourAttribute::Destination(address(entry.ip)));
    if let Some(mac) = &entry.mac {
        msg.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.clone()));
    }
    if entry.managed {
        msg.attributes
            .push(NeighbourAttribute::ExtFlags(NeighbourExtFlags::Managed));
    }
    if let Some(protocol) = entry.protocol {
        msg.attributes
            .push(NeighbourAttribute::Protocol(RouteProtocol::from(protocol)));
    }
    msg
}

fn address(ip: IpAddr) -> NeighbourAddress {
    match ip {
        IpAddr::V4(a) => NeighbourAddress::Inet(a),
        IpAddr::V6(a) => NeighbourAddress::Inet6(a),
    }
}

/// A neighbour message as an entry; `None` without an IP destination (bridge FDB
/// entries, which an unfiltered dump also returns).
pub fn decode(msg: NeighbourMessage) -> Option<NeighbourEntry> {
    let mut ip = None;
    let mut entry = NeighbourEntry {
        ifindex: msg.header.ifindex,
        ip: IpAddr::from([0u8; 4]),
        mac: None,
        state: msg.header.state,
        extern_learned: msg.header.flags.contains(NeighbourFlags::ExtLearned),
        managed: false,
        protocol: None,
    };
    for attr in msg.attributes {
        match attr {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                ip = Some(IpAddr::from(a))
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                ip = Some(IpAddr::from(a))
            }
            NeighbourAttribute::LinkLayerAddress(lla) => entry.mac = Some(lla),
            NeighbourAttribute::ExtFlags(flags) => {
                entry.managed = flags.contains(NeighbourExtFlags::Managed)
            }
            NeighbourAttribute::Protocol(p) => entry.protocol = Some(u8::from(p)),
            _ => {}
        }
    }
    entry.ip = ip?;
    Some(entry)
}

/// Add a static entry (`NLM_F_EXCL`: an existing one is `EEXIST`).
pub async fn add(handle: &Handle, neighbour: &Neighbour) -> KernelResult<()> {
    send(handle, &NeighbourEntry::from(neighbour), false, "add").await
}

/// Add `entry` (`NLM_F_EXCL`: an existing entry for the address is `EEXIST`).
pub async fn add_entry(handle: &Handle, entry: &NeighbourEntry) -> KernelResult<()> {
    send(handle, entry, false, "add").await
}

/// Add `entry`, or turn an existing entry for the address into it (`NLM_F_REPLACE`),
/// e.g. one the kernel learned by itself into a managed one.
pub async fn replace_entry(handle: &Handle, entry: &NeighbourEntry) -> KernelResult<()> {
    send(handle, entry, true, "replace").await
}

async fn send(
    handle: &Handle,
    entry: &NeighbourEntry,
    replace: bool,
    verb: &str,
) -> KernelResult<()> {
    let mut request = handle.neighbours().add(entry.ifindex, entry.ip);
    *request.message_mut() = message(entry);
    if replace {
        request = request.replace();
    }
    request.execute().await.map_err(|e| {
        KernelError::from_netlink(
            format!("{verb} neighbour {} on link #{}", entry.ip, entry.ifindex),
            e,
        )
    })
}

/// Delete the entry for `ip` on link `ifindex`; one that is not there is an error for
/// which [`KernelError::is_not_found`] holds (`ENOENT`).
pub async fn delete(handle: &Handle, ifindex: u32, ip: IpAddr) -> KernelResult<()> {
    let mut msg = NeighbourMessage::default();
    msg.header.family = match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    msg.header.ifindex = ifindex;
    msg.attributes
        .push(NeighbourAttribute::Destination(address(ip)));
    handle.neighbours().del(msg).execute().await.map_err(|e| {
        KernelError::from_netlink(format!("delete neighbour {ip} on link #{ifindex}"), e)
    })
}

/// The entries of both families, of link `ifindex` or of every link.
pub async fn list(handle: &Handle, ifindex: Option<u32>) -> KernelResult<Vec<NeighbourEntry>> {
    let msgs: Vec<NeighbourMessage> = handle
        .neighbours()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|e| KernelError::from_netlink("list neighbours", e))?;
    Ok(msgs
        .into_iter()
        .filter(|m| ifindex.is_none_or(|i| m.header.ifindex == i))
        .filter_map(decode)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn managed_entries_carry_both_flags_and_no_address() {
        let entry = NeighbourEntry::managed(3, "192.168.50.2".parse().unwrap(), Some(200));
        let msg = message(&entry);
        assert_eq!(msg.header.family, AddressFamily::Inet);
        assert_eq!(msg.header.ifindex, 3);
        assert_eq!(msg.header.state, NeighbourState::None);
        assert_eq!(msg.header.flags, NeighbourFlags::ExtLearned);
        assert_eq!(
            msg.attributes,
            [
                NeighbourAttribute::Destination(NeighbourAddress::Inet(
                    "192.168.50.2".parse().unwrap()
                )),
                NeighbourAttribute::ExtFlags(NeighbourExtFlags::Managed),
                NeighbourAttribute::Protocol(RouteProtocol::Other(200)),
            ]
        );
        assert_eq!(decode(msg), Some(entry));
    }

    #[test]
    fn static_entries_are_what_they_always_were() {
        let n = Neighbour {
            ifindex: 4,
            ip: "fe80::1".parse().unwrap(),
            mac: vec![2, 0, 0, 0, 0, 1],
            permanent: true,
        };
        let msg = message(&NeighbourEntry::from(&n));
        assert_eq!(msg.header.family, AddressFamily::Inet6);
        assert_eq!(msg.header.state, NeighbourState::Permanent);
        assert_eq!(msg.header.flags, NeighbourFlags::empty());
        assert_eq!(
            msg.attributes,
            [
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(
                    "fe80::1".parse().unwrap()
                )),
                NeighbourAttribute::LinkLayerAddress(vec![2, 0, 0, 0, 0, 1]),
            ]
        );
        let back = decode(msg).map(Neighbour::from);
        assert_eq!(back, Some(n));
    }

    #[test]
    fn entries_without_an_ip_are_skipped() {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Bridge;
        msg.attributes
            .push(NeighbourAttribute::LinkLayerAddress(vec![2, 0, 0, 0, 0, 9]));
        assert_eq!(decode(msg), None);
    }

    #[test]
    fn other_extended_flags_are_not_managed() {
        let mut msg = message(&NeighbourEntry::managed(
            1,
            "10.0.0.1".parse().unwrap(),
            None,
        ));
        msg.attributes[1] = NeighbourAttribute::ExtFlags(NeighbourExtFlags::Locked);
        let entry = decode(msg).unwrap();
        assert!(!entry.managed);
        assert!(entry.extern_learned);
        assert_eq!(entry.protocol, None);
    }
}
