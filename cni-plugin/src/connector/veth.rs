//! veth pairs, the fallback where the kernel has no netkit. veth is L2, so the pod
//! gets permanent neighbour entries for its gateways pointing at the host end's MAC.
//! The host end stays down until the agent has attached its programs: until then the
//! pod's end has no carrier and nothing it sends goes anywhere.

use std::net::IpAddr;
use std::os::fd::RawFd;

use netlink_packet_route::link::LinkMessage;

use super::{PairSpec, gateway_for};
use crate::netlink::Neighbour;

/// One `RTM_NEWLINK`: the host end in the host namespace, the peer in the pod's.
pub fn link_message(spec: &PairSpec<'_>, pod_netns: RawFd) -> LinkMessage {
    let attributes = spec.end_attributes();
    spec.pair(&attributes, pod_netns).veth()
}

/// The pod's permanent neighbour entries: each family's gateway → the host end's MAC.
pub fn gateway_neighbours(pod_index: u32, host_mac: &[u8], addresses: &[IpAddr]) -> Vec<Neighbour> {
    let mut gateways: Vec<IpAddr> = addresses.iter().map(|a| gateway_for(*a)).collect();
    gateways.sort();
    gateways.dedup();
    gateways
        .into_iter()
        .map(|ip| Neighbour {
            ifindex: pod_index,
            ip,
            mac: host_mac.to_vec(),
            permanent: true,
        })
        .collect()
}

/// Permanent host-side entries for the pod's IPv6 addresses: the host end has no
/// link-local address, without which the kernel sends no neighbour solicitation. IPv4
/// needs none (ARP takes its source address from any device of the namespace).
pub fn pod_neighbours(
    host_index: u32,
    pod_mac: Option<&[u8]>,
    addresses: &[IpAddr],
) -> Vec<Neighbour> {
    let Some(mac) = pod_mac else {
        return Vec::new();
    };
    addresses
        .iter()
        .filter(|a| a.is_ipv6())
        .map(|ip| Neighbour {
            ifindex: host_index,
            ip: *ip,
            mac: mac.to_vec(),
            permanent: true,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use netlink_packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkInfo};

    use super::*;
    use crate::spec::config::BigTcp;

    #[test]
    fn one_message_makes_a_pair_with_the_peer_in_the_pod() {
        let spec = PairSpec {
            host: "nkabc",
            pod: "eth0",
            mtu: 9000,
            big_tcp: BigTcp::default(),
        };
        let msg = link_message(&spec, 7);
        let infos = crate::connector::link_infos(&msg);
        assert!(infos.contains(&LinkInfo::Kind(InfoKind::Veth)));
        let peer = infos
            .iter()
            .find_map(|i| {
                if let LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))) = i {
                    Some(p)
                } else {
                    None
                }
            })
            .unwrap();
        assert!(peer.attributes.contains(&LinkAttribute::NetNsFd(7)));
        assert!(
            peer.attributes
                .contains(&LinkAttribute::IfName("eth0".into()))
        );
        assert!(peer.attributes.contains(&LinkAttribute::Mtu(9000)));
    }

    #[test]
    fn one_neighbour_per_family() {
        let addrs: Vec<IpAddr> = ["10.0.0.5", "10.0.0.6", "fd00::5"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let n = gateway_neighbours(3, &[2, 0, 0, 0, 0, 1], &addrs);
        assert_eq!(n.len(), 2);
        assert!(
            n.iter()
                .all(|n| n.permanent && n.ifindex == 3 && n.mac == [2, 0, 0, 0, 0, 1])
        );
        assert_eq!(n[0].ip.to_string(), "169.254.1.1");
        assert_eq!(n[1].ip.to_string(), "fe80::1");
    }
}
