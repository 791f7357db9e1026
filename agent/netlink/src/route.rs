//! Routes: unicast routes of both families in any table, owned by a protocol number, the
//! kernel's route to one destination ([`get`], what `ip route get` asks), and the one
//! answer to "which device carries the default route".
//!
//! A route's table and protocol together say whose it is ([`RouteOwner`]): the plugin's
//! routes are `ip route add`'s default (main table, `proto static`); the agent installs
//! its node routes under its own protocol number and lists, replaces and deletes only
//! those, so routes it does not own are never touched (the kernel itself checks the
//! protocol on delete).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt as _;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteProtocol, RouteScope, RouteType,
    RouteVia,
};
use rtnetlink::{Handle, RouteMessageBuilder};

use crate::error::{KernelError, KernelResult};
use crate::link::{self, Link};

/// `RT_TABLE_MAIN`.
pub const RT_TABLE_MAIN: u32 = 254;
/// `RTPROT_STATIC`: what `ip route add` uses when no `proto` is given.
pub const RTPROT_STATIC: u8 = 4;

/// A unicast route: destination prefix, and a gateway and/or an output device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: IpAddr,
    pub prefix: u8,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
    /// `RTNH_F_ONLINK`: the gateway is reachable on `oif` without a covering prefix.
    pub onlink: bool,
}

/// Whose a route is: the table it lives in and the protocol that installed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteOwner {
    pub table: u32,
    pub protocol: u8,
}

impl RouteOwner {
    /// The main table, `proto static`: `ip route add` without options, and the plugin.
    pub const MAIN_STATIC: RouteOwner = RouteOwner {
        table: RT_TABLE_MAIN,
        protocol: RTPROT_STATIC,
    };

    /// `protocol`'s routes in the main table.
    pub const fn main(protocol: u8) -> RouteOwner {
        RouteOwner {
            table: RT_TABLE_MAIN,
            protocol,
        }
    }
}

fn describe(route: &Route) -> String {
    match route.gateway {
        Some(gw) => format!("route {}/{} via {gw}", route.dst, route.prefix),
        None => format!("route {}/{}", route.dst, route.prefix),
    }
}

/// The `RTM_NEWROUTE` body for `route` in `owner`'s table with `owner`'s protocol.
/// Gateway-less IPv4 routes get link scope (`ip route add … dev X` does the same).
pub fn message(owner: RouteOwner, route: &Route) -> KernelResult<RouteMessage> {
    let invalid = |e: &dyn std::fmt::Display| KernelError::invalid(describe(route), e);
    let mut builder = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(route.dst, route.prefix)
        .map_err(|e| invalid(&e))?
        .table_id(owner.table)
        .protocol(RouteProtocol::from(owner.protocol));
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
    Ok(builder.build())
}

/// The `RTM_DELROUTE` body: like [`message`], but matching any scope, so a route is
/// found however it was added. The kernel deletes only a route of `owner`'s protocol.
pub fn delete_message(owner: RouteOwner, route: &Route) -> KernelResult<RouteMessage> {
    let mut msg = message(owner, route)?;
    msg.header.scope = RouteScope::NoWhere;
    Ok(msg)
}

/// A unicast route message as `(owner, route)`; `None` for other route types
/// (local, broadcast, unreachable, …) and families.
pub fn decode(msg: RouteMessage) -> Option<(RouteOwner, Route)> {
    if msg.header.kind != RouteType::Unicast {
        return None;
    }
    let mut owner = RouteOwner {
        table: u32::from(msg.header.table),
        protocol: u8::from(msg.header.protocol),
    };
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
            RouteAttribute::Table(t) => owner.table = t,
            RouteAttribute::Destination(RouteAddress::Inet(a)) => route.dst = a.into(),
            RouteAttribute::Destination(RouteAddress::Inet6(a)) => route.dst = a.into(),
            RouteAttribute::Gateway(RouteAddress::Inet(a)) => route.gateway = Some(a.into()),
            RouteAttribute::Gateway(RouteAddress::Inet6(a)) => route.gateway = Some(a.into()),
            RouteAttribute::Via(RouteVia::Inet6(a)) => route.gateway = Some(a.into()),
            RouteAttribute::Oif(oif) => route.oif = Some(oif),
            _ => {}
        }
    }
    Some((owner, route))
}

/// Add `route` (`NLM_F_EXCL`: an existing route to the same prefix in the table is
/// `EEXIST`, whoever owns it).
pub async fn add(handle: &Handle, owner: RouteOwner, route: &Route) -> KernelResult<()> {
    let op = || format!("add {}", describe(route));
    let msg = message(owner, route).map_err(|e| KernelError { op: op(), ..e })?;
    handle
        .route()
        .add(msg)
        .execute()
        .await
        .map_err(|e| KernelError::from_netlink(op(), e))
}

/// Add `route`, or replace the route to the same prefix in the table (`NLM_F_REPLACE`):
/// a next hop changes without a moment without the route.
pub async fn replace(handle: &Handle, owner: RouteOwner, route: &Route) -> KernelResult<()> {
    let op = || format!("replace {}", describe(route));
    let msg = message(owner, route).map_err(|e| KernelError { op: op(), ..e })?;
    handle
        .route()
        .add(msg)
        .replace()
        .execute()
        .await
        .map_err(|e| KernelError::from_netlink(op(), e))
}

/// Delete `route` from `owner`'s table if `owner`'s protocol installed it. A route that
/// is not there (or not ours) is an error for which [`KernelError::is_not_found`] holds
/// (`ESRCH`).
pub async fn delete(handle: &Handle, owner: RouteOwner, route: &Route) -> KernelResult<()> {
    let op = || format!("delete {}", describe(route));
    let msg = delete_message(owner, route).map_err(|e| KernelError { op: op(), ..e })?;
    handle
        .route()
        .del(msg)
        .execute()
        .await
        .map_err(|e| KernelError::from_netlink(op(), e))
}

/// Every unicast route of both families, in every table, with its owner.
pub async fn dump(handle: &Handle) -> KernelResult<Vec<(RouteOwner, Route)>> {
    let op = "list routes";
    let v4: Vec<RouteMessage> = handle
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute()
        .try_collect()
        .await
        .map_err(|e| KernelError::from_netlink(op, e))?;
    let v6: Vec<RouteMessage> = handle
        .route()
        .get(RouteMessageBuilder::<Ipv6Addr>::new().build())
        .execute()
        .try_collect()
        .await
        .map_err(|e| KernelError::from_netlink(op, e))?;
    Ok(v4.into_iter().chain(v6).filter_map(decode).collect())
}

/// `owner`'s routes: those in its table that its protocol installed.
pub async fn list(handle: &Handle, owner: RouteOwner) -> KernelResult<Vec<Route>> {
    Ok(dump(handle)
        .await?
        .into_iter()
        .filter(|(o, _)| *o == owner)
        .map(|(_, r)| r)
        .collect())
}

/// The main table's unicast routes, whoever installed them.
pub async fn list_main(handle: &Handle) -> KernelResult<Vec<Route>> {
    Ok(dump(handle)
        .await?
        .into_iter()
        .filter(|(o, _)| o.table == RT_TABLE_MAIN)
        .map(|(_, r)| r)
        .collect())
}

/// The `RTM_GETROUTE` body asking for the route to `dst` alone: a destination attribute
/// with a full-length prefix, so the kernel answers with one route instead of a dump.
/// The header is otherwise zero, as the kernel's strict checking of get requests wants.
pub fn get_message(dst: IpAddr) -> RouteMessage {
    let mut msg = RouteMessage::default();
    let (family, prefix, attr) = match dst {
        IpAddr::V4(a) => (AddressFamily::Inet, 32, RouteAddress::Inet(a)),
        IpAddr::V6(a) => (AddressFamily::Inet6, 128, RouteAddress::Inet6(a)),
    };
    msg.header.address_family = family;
    msg.header.destination_prefix_length = prefix;
    msg.attributes.push(RouteAttribute::Destination(attr));
    msg
}

/// The route the kernel would send traffic to `dst` by (`ip route get`): the next hop
/// and the output device it resolves to, whichever table, rule or multipath choice gave
/// them. One request and one answer, whatever the size of the routing table. `None`
/// when `dst` cannot be reached: no route (`ENETUNREACH`), or an `unreachable`,
/// `prohibit` or `blackhole` one (`EHOSTUNREACH`, `EACCES`, `EINVAL`).
pub async fn get(handle: &Handle, dst: IpAddr) -> KernelResult<Option<Route>> {
    let op = || format!("get the route to {dst}");
    let answer: Result<Vec<RouteMessage>, _> = handle
        .route()
        .get(get_message(dst))
        .execute()
        .try_collect()
        .await;
    match answer {
        Ok(messages) => Ok(messages.into_iter().find_map(decode).map(|(_, r)| r)),
        Err(e) => {
            let e = KernelError::from_netlink(op(), e);
            let unreachable = [
                libc::ENETUNREACH,
                libc::EHOSTUNREACH,
                libc::EACCES,
                libc::EINVAL,
            ];
            if unreachable.iter().any(|errno| e.is(*errno)) {
                Ok(None)
            } else {
                Err(e)
            }
        }
    }
}

/// Destinations that stand for "off the node": public anycast addresses (Cloudflare's
/// resolvers) no node routes specially, so the kernel's route to them is the way out —
/// the default route on most nodes, or whatever more specific route covers them.
pub const OUTSIDE: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::new(1, 1, 1, 1)),
    IpAddr::V6(Ipv6Addr::new(0x2606, 0x4700, 0x4700, 0, 0, 0, 0, 0x1111)),
];

/// The device traffic leaving the node takes, IPv4 first ([`OUTSIDE`]): the device of
/// the default route, asked of the kernel with a route get per family rather than by
/// reading the routing table, which holds a route per pod. `None` when neither family
/// has a way out.
pub async fn default_route_link(handle: &Handle) -> KernelResult<Option<Link>> {
    for outside in OUTSIDE {
        if let Some(oif) = get(handle, outside).await?.and_then(|r| r.oif) {
            return link::by_index(handle, oif).await;
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(dst: &str, prefix: u8, gateway: Option<&str>, oif: Option<u32>) -> Route {
        Route {
            dst: dst.parse().unwrap(),
            prefix,
            gateway: gateway.map(|g| g.parse().unwrap()),
            oif,
            onlink: false,
        }
    }

    #[test]
    fn messages_carry_table_and_protocol() {
        let owner = RouteOwner {
            table: 254,
            protocol: 200,
        };
        let r = route("10.244.1.0", 24, Some("192.168.50.1"), Some(2));
        let msg = message(owner, &r).unwrap();
        assert_eq!(msg.header.table, 254);
        assert_eq!(msg.header.protocol, RouteProtocol::Other(200));
        assert_eq!(msg.header.scope, RouteScope::Universe);
        assert_eq!(msg.header.destination_prefix_length, 24);
        assert_eq!(decode(msg), Some((owner, r)));
    }

    #[test]
    fn tables_beyond_255_go_in_an_attribute_and_come_back() {
        let owner = RouteOwner {
            table: 1000,
            protocol: RTPROT_STATIC,
        };
        let r = route("fd00:244:1::", 64, Some("fd00:50::1"), None);
        let msg = message(owner, &r).unwrap();
        assert!(msg.attributes.contains(&RouteAttribute::Table(1000)));
        assert_eq!(decode(msg), Some((owner, r)));
    }

    #[test]
    fn device_routes_are_link_scope_and_onlink_is_kept() {
        let mut r = route("169.254.1.1", 32, None, Some(3));
        let msg = message(RouteOwner::MAIN_STATIC, &r).unwrap();
        assert_eq!(msg.header.scope, RouteScope::Link);
        r = route("0.0.0.0", 0, Some("169.254.1.1"), Some(3));
        r.onlink = true;
        let msg = message(RouteOwner::MAIN_STATIC, &r).unwrap();
        assert!(msg.header.flags.contains(RouteFlags::Onlink));
        assert_eq!(decode(msg), Some((RouteOwner::MAIN_STATIC, r)));
    }

    #[test]
    fn an_ipv6_gateway_on_an_ipv4_route_is_a_via() {
        let r = route("10.0.0.0", 8, Some("fe80::1"), Some(3));
        let msg = message(RouteOwner::MAIN_STATIC, &r).unwrap();
        assert!(
            msg.attributes
                .contains(&RouteAttribute::Via(RouteVia::Inet6(
                    "fe80::1".parse().unwrap()
                )))
        );
        assert_eq!(decode(msg).map(|(_, r)| r.gateway), Some(r.gateway));
    }

    #[test]
    fn impossible_prefixes_are_refused_before_the_kernel() {
        let e = message(RouteOwner::MAIN_STATIC, &route("10.0.0.0", 33, None, None)).unwrap_err();
        assert!(e.is(libc::EINVAL), "{e}");
    }

    #[test]
    fn deletes_match_any_scope() {
        let r = route("10.244.1.0", 24, Some("192.168.50.1"), None);
        let msg = delete_message(RouteOwner::main(200), &r).unwrap();
        assert_eq!(msg.header.scope, RouteScope::NoWhere);
        assert_eq!(msg.header.protocol, RouteProtocol::Other(200));
    }

    #[test]
    fn only_unicast_routes_decode() {
        let mut msg = message(
            RouteOwner::MAIN_STATIC,
            &route("10.0.0.1", 32, None, Some(1)),
        )
        .unwrap();
        msg.header.kind = RouteType::Local;
        assert_eq!(decode(msg), None);
    }

    #[test]
    fn a_route_get_names_one_destination_and_asks_for_no_dump() {
        for (dst, family, prefix) in [
            ("1.1.1.1", AddressFamily::Inet, 32),
            ("2606:4700:4700::1111", AddressFamily::Inet6, 128),
        ] {
            let msg = get_message(dst.parse().unwrap());
            assert_eq!(msg.header.address_family, family);
            assert_eq!(msg.header.destination_prefix_length, prefix);
            // rtnetlink sends a get with a destination without NLM_F_DUMP.
            assert!(
                msg.attributes
                    .iter()
                    .any(|a| matches!(a, RouteAttribute::Destination(_)))
            );
            assert_eq!(
                (msg.header.table, msg.header.flags),
                (0, RouteFlags::empty())
            );
        }
        assert_eq!(OUTSIDE.map(|a| a.is_ipv4()), [true, false]);
    }
}
