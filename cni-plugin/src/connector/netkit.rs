//! netkit pairs: L3 mode, primary (host side) policy pass, peer (pod side) policy
//! drop — the pod can send nothing until the agent attaches its program.

use std::os::fd::RawFd;

use netlink_packet_route::link::{LinkMessage, NetkitMode, NetkitPolicy};

use super::PairSpec;
use crate::netlink::Link;

/// One `RTM_NEWLINK`: the primary in the host namespace, the peer in the pod's.
pub fn link_message(spec: &PairSpec<'_>, pod_netns: RawFd) -> LinkMessage {
    let attributes = spec.end_attributes();
    spec.pair(&attributes, pod_netns)
        .netkit(NetkitMode::L3, NetkitPolicy::Pass, NetkitPolicy::Drop)
}

/// CHECK: the host end is the primary, L3, pass, with the peer's default drop.
pub fn check(host: &Link) -> Result<(), String> {
    let info = host
        .netkit
        .ok_or_else(|| format!("{}: the kernel reports no netkit settings", host.name))?;
    if !info.primary {
        return Err(format!("{} is not the netkit primary", host.name));
    }
    if info.mode != NetkitMode::L3 {
        return Err(format!(
            "{} is in netkit mode {}, not l3",
            host.name, info.mode
        ));
    }
    if info.policy != NetkitPolicy::Pass {
        return Err(format!(
            "{} has primary policy {}, not forward",
            host.name, info.policy
        ));
    }
    if info.peer_policy != NetkitPolicy::Drop {
        return Err(format!(
            "{} has peer policy {}, not blackhole",
            host.name, info.peer_policy
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use netlink_packet_route::link::{InfoData, InfoKind, InfoNetkit, LinkAttribute, LinkInfo};

    use super::*;
    use crate::netlink::NetkitInfo;
    use crate::spec::config::BigTcp;

    #[test]
    fn one_message_makes_an_l3_pair_with_the_peer_in_the_pod() {
        let big_tcp = BigTcp {
            gso_max_size: Some(196_608),
            gro_ipv4_max_size: Some(131_072),
            ..Default::default()
        };
        let spec = PairSpec {
            host: "nkabc",
            pod: "eth0",
            mtu: 1400,
            big_tcp,
        };
        let msg = link_message(&spec, 42);
        assert!(
            msg.attributes
                .contains(&LinkAttribute::IfName("nkabc".into()))
        );
        assert!(msg.attributes.contains(&LinkAttribute::Mtu(1400)));
        assert!(msg.attributes.contains(&LinkAttribute::GsoMaxSize(196_608)));
        let infos = crate::connector::link_infos(&msg);
        assert!(infos.contains(&LinkInfo::Kind(InfoKind::Netkit)));
        let data = infos
            .iter()
            .find_map(|i| {
                if let LinkInfo::Data(InfoData::Netkit(d)) = i {
                    Some(d)
                } else {
                    None
                }
            })
            .unwrap();
        assert!(data.contains(&InfoNetkit::Mode(NetkitMode::L3)));
        assert!(data.contains(&InfoNetkit::Policy(NetkitPolicy::Pass)));
        assert!(data.contains(&InfoNetkit::PeerPolicy(NetkitPolicy::Drop)));
        let peer = data
            .iter()
            .find_map(|d| {
                if let InfoNetkit::Peer(p) = d {
                    Some(p)
                } else {
                    None
                }
            })
            .unwrap();
        assert!(
            peer.attributes
                .contains(&LinkAttribute::IfName("eth0".into()))
        );
        assert!(peer.attributes.contains(&LinkAttribute::NetNsFd(42)));
        assert!(peer.attributes.contains(&LinkAttribute::Mtu(1400)));
        assert!(
            peer.attributes
                .contains(&LinkAttribute::GroIpv4MaxSize(131_072))
        );
    }

    #[test]
    fn check_names_each_wrong_setting() {
        let good = NetkitInfo {
            mode: NetkitMode::L3,
            primary: true,
            policy: NetkitPolicy::Pass,
            peer_policy: NetkitPolicy::Drop,
        };
        let link = |info| Link {
            name: "nk1".into(),
            netkit: Some(info),
            ..Default::default()
        };
        assert_eq!(check(&link(good)), Ok(()));
        assert!(
            check(&link(NetkitInfo {
                mode: NetkitMode::L2,
                ..good
            }))
            .unwrap_err()
            .contains("l2")
        );
        assert!(
            check(&link(NetkitInfo {
                primary: false,
                ..good
            }))
            .unwrap_err()
            .contains("primary")
        );
        assert!(
            check(&link(NetkitInfo {
                policy: NetkitPolicy::Drop,
                ..good
            }))
            .unwrap_err()
            .contains("primary policy")
        );
        assert!(
            check(&link(NetkitInfo {
                peer_policy: NetkitPolicy::Pass,
                ..good
            }))
            .unwrap_err()
            .contains("peer policy")
        );
    }
}
