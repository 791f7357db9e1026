//! Built-in IPAM: one address per configured pod CIDR (so one per family when the
//! node is dual-stack). Allocation is a pure function of the pools and the addresses in
//! use — the registry is the record of what is in use — which is what makes a restart
//! safe: nothing live can be handed out twice.

use std::net::IpAddr;

use ipnetwork::IpNetwork;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum IpamError {
    #[error("pod CIDR {0} has no free address")]
    Exhausted(IpNetwork),
    #[error("no pod CIDR is configured")]
    NoPools,
}

/// Pick the first free host address of each pool, starting after `hint` when it lies in
/// the pool (so a just-released address is not reused at once: a slow peer may still
/// send to it). `in_use` answers for one address, so callers keep an index instead of
/// collecting every address on the node for each allocation.
pub fn allocate(
    pools: &[IpNetwork],
    in_use: impl Fn(IpAddr) -> bool,
    hints: &[IpAddr],
) -> Result<Vec<IpNetwork>, IpamError> {
    if pools.is_empty() {
        return Err(IpamError::NoPools);
    }
    pools
        .iter()
        .map(|pool| {
            let hint = hints.iter().copied().find(|h| pool.contains(*h));
            pick(pool, &in_use, hint)
                .and_then(|addr| IpNetwork::new(addr, pool.prefix()).ok())
                .ok_or(IpamError::Exhausted(*pool))
        })
        .collect()
}

fn pick(pool: &IpNetwork, in_use: impl Fn(IpAddr) -> bool, hint: Option<IpAddr>) -> Option<IpAddr> {
    let (first, last) = usable_range(pool)?;
    let start = match hint.map(to_u128) {
        Some(h) if h >= first && h < last => h + 1,
        _ => first,
    };
    let v4 = pool.is_ipv4();
    // Scan from the hint to the end, then wrap to the start: at most one pass. Bounded
    // in practice by the pod count, as allocation stops at the first free address.
    (start..=last)
        .chain(first..start)
        .map(|n| from_u128(n, v4))
        .find(|a| !in_use(*a))
}

/// First and last assignable address: IPv4 skips network and broadcast addresses;
/// IPv6 skips the subnet-router anycast address (the all-zero host part).
fn usable_range(pool: &IpNetwork) -> Option<(u128, u128)> {
    let network = to_u128(pool.network());
    let size_bits = if pool.is_ipv4() { 32 } else { 128 } - u32::from(pool.prefix());
    let last = if size_bits >= 128 {
        u128::MAX
    } else {
        network + (1u128 << size_bits) - 1
    };
    let (first, last) = match pool {
        IpNetwork::V4(_) if size_bits >= 2 => (network + 1, last - 1),
        IpNetwork::V4(_) => (network, last),
        IpNetwork::V6(_) if size_bits >= 1 => (network + 1, last),
        IpNetwork::V6(_) => (network, last),
    };
    (first <= last).then_some((first, last))
}

fn to_u128(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn from_u128(n: u128, v4: bool) -> IpAddr {
    if v4 {
        // Callers stay within an IPv4 pool, so the value fits.
        IpAddr::V4(std::net::Ipv4Addr::from(n as u32))
    } else {
        IpAddr::V6(std::net::Ipv6Addr::from(n))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    #[test]
    fn dual_stack_gets_one_address_per_pool() {
        let got = allocate(&[net("10.1.0.0/24"), net("fd00:1::/64")], |_| false, &[]).unwrap();
        assert_eq!(got, vec![net("10.1.0.1/24"), net("fd00:1::1/64")]);
    }

    #[test]
    fn skips_addresses_in_use_and_never_network_or_broadcast() {
        let pool = net("10.1.0.0/30"); // .1 and .2 usable
        let used: HashSet<IpAddr> = ["10.1.0.1".parse().unwrap()].into();
        assert_eq!(
            allocate(&[pool], |a| used.contains(&a), &[]).unwrap(),
            vec![net("10.1.0.2/30")]
        );
        let used: HashSet<IpAddr> =
            ["10.1.0.1".parse().unwrap(), "10.1.0.2".parse().unwrap()].into();
        assert_eq!(
            allocate(&[pool], |a| used.contains(&a), &[]),
            Err(IpamError::Exhausted(pool))
        );
    }

    #[test]
    fn continues_after_the_hint_and_wraps() {
        let pool = net("10.1.0.0/29"); // .1 ..= .6
        let hint = ["10.1.0.6".parse().unwrap()];
        assert_eq!(
            allocate(&[pool], |_| false, &hint).unwrap(),
            vec![net("10.1.0.1/29")]
        );
        let hint = ["10.1.0.3".parse().unwrap()];
        assert_eq!(
            allocate(&[pool], |_| false, &hint).unwrap(),
            vec![net("10.1.0.4/29")]
        );
    }

    #[test]
    fn no_pools_is_an_error() {
        assert_eq!(allocate(&[], |_| false, &[]), Err(IpamError::NoPools));
    }
}
