//! Built-in IPAM: the plugin sends no addresses in `AddEndpoint`; the agent picks them
//! from the node's pod CIDRs, persists the choice and returns it in the reply.

use std::net::IpAddr;

use netkit_api::Endpoint;

use crate::spec::result::{Cidr, ResultError};

/// The addresses the agent allocated.
pub fn addresses(endpoint: &Endpoint) -> Result<Vec<IpAddr>, ResultError> {
    endpoint
        .ips
        .iter()
        .enumerate()
        .map(|(n, ip)| {
            Cidr::parse(&ip.address)
                .map(|c| c.addr)
                .ok_or_else(|| ResultError {
                    what: format!("agent reply ips[{n}].address"),
                    reason: format!("{:?} is not an address/prefix", ip.address),
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use netkit_api::{EndpointId, IpConfig, LinkMode};

    use super::*;

    fn endpoint(ips: &[&str]) -> Endpoint {
        Endpoint {
            id: EndpointId {
                container_id: "c".into(),
                ifname: "eth0".into(),
            },
            netns: "/run/netns/p".into(),
            mode: LinkMode::Veth,
            host_ifname: "nk1".into(),
            host_ifindex: 9,
            pod_mac: None,
            host_mac: None,
            ips: ips
                .iter()
                .map(|a| IpConfig {
                    address: a.to_string(),
                    gateway: None,
                })
                .collect(),
            builtin_ipam: true,
            programs: vec![],
        }
    }

    #[test]
    fn allocated_addresses_lose_their_pool_prefix() {
        let got = addresses(&endpoint(&["10.0.0.5/24", "fd00::5/64"])).unwrap();
        assert_eq!(
            got,
            vec![
                "10.0.0.5".parse::<IpAddr>().unwrap(),
                "fd00::5".parse().unwrap()
            ]
        );
        assert!(
            addresses(&endpoint(&["10.0.0.5"]))
                .unwrap_err()
                .what
                .contains("ips[0]")
        );
    }
}
