//! CHECK: compare the kernel with `prevResult` — what this plugin created and lists
//! there — and ask the agent and the delegated IPAM plugin. Routes and settings a
//! later plugin in the chain may have changed (MTU, MAC, other routes) are not judged.

use std::collections::BTreeSet;
use std::net::IpAddr;

use netkit_api::LinkMode;

use super::Ctx;
use crate::agent;
use crate::connector;
use crate::error::Error;
use crate::ipam::builtin;
use crate::netlink::Ns;
use crate::spec::env::{EnvError, NETNS};
use crate::spec::result::{Cidr, CniResult};

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("CHECK needs prevResult (the result of the ADD)")]
    NoPrevResult,
    #[error("{0}")]
    Mismatch(String),
}

fn mismatch(msg: impl Into<String>) -> Error {
    CheckError::Mismatch(msg.into()).into()
}

pub fn check(ctx: &mut Ctx<'_>) -> Result<(), Error> {
    let prev = ctx
        .conf
        .prev_result
        .as_ref()
        .ok_or(CheckError::NoPrevResult)?;
    let prev = CniResult::from_value(prev, "prevResult")?;
    let id = ctx.endpoint_id();
    let ifname = &ctx.inv.ifname;
    let netns = ctx
        .inv
        .netns
        .clone()
        .ok_or_else(|| EnvError::Missing(vec![NETNS]))?;
    let netns_str = netns.display().to_string();

    let pod_at = prev
        .interfaces
        .iter()
        .position(|i| i.name == *ifname && i.sandbox.as_deref().is_none_or(|s| s == netns_str))
        .ok_or_else(|| {
            mismatch(format!(
                "prevResult lists no interface {ifname} in {netns_str}"
            ))
        })?;
    let want: Vec<Cidr> = prev
        .ips
        .iter()
        .filter(|ip| ip.interface == Some(pod_at))
        .map(|ip| ip.address)
        .collect();
    if want.is_empty() {
        return Err(mismatch(format!(
            "prevResult assigns no address to {ifname}"
        )));
    }

    ctx.kernel.open_pod_netns(&netns)?;
    let host_name = connector::host_ifname(&id);
    let host = ctx
        .kernel
        .link_by_name(Ns::Host, &host_name)?
        .ok_or_else(|| mismatch(format!("host link {host_name} is missing")))?;
    let mode = connector::check_host_link(ctx.conf.mode, &host).map_err(mismatch)?;
    if !host.up {
        return Err(mismatch(format!("host link {host_name} is down")));
    }
    let pod = ctx
        .kernel
        .link_by_name(Ns::Pod, ifname)?
        .ok_or_else(|| mismatch(format!("{ifname} is missing from {netns_str}")))?;
    if pod.peer_index != Some(host.index) {
        return Err(mismatch(format!(
            "{ifname} in {netns_str} is not the peer of {host_name}"
        )));
    }
    if !pod.up {
        return Err(mismatch(format!("{ifname} in {netns_str} is down")));
    }

    let have = ctx.kernel.addresses(Ns::Pod, pod.index)?;
    for cidr in &want {
        if !have.contains(&(cidr.addr, cidr.prefix)) {
            return Err(mismatch(format!("address {cidr} is missing from {ifname}")));
        }
    }
    let pod_routes = ctx.kernel.routes(Ns::Pod)?;
    for route in prev
        .routes
        .iter()
        .filter(|r| r.gw.is_some_and(connector::is_gateway))
    {
        let present = pod_routes.iter().any(|k| {
            k.dst == route.dst.addr
                && k.prefix == route.dst.prefix
                && k.gateway == route.gw
                && k.oif == Some(pod.index)
        });
        if !present {
            return Err(mismatch(format!(
                "route {} via {:?} is missing from {ifname}",
                route.dst, route.gw
            )));
        }
    }
    if mode == LinkMode::Veth {
        let neighbours = ctx.kernel.neighbours(Ns::Pod, pod.index)?;
        let addrs: Vec<IpAddr> = want.iter().map(|c| c.addr).collect();
        let host_mac = host.mac.clone().unwrap_or_default();
        for expected in connector::veth::gateway_neighbours(pod.index, &host_mac, &addrs) {
            if !neighbours
                .iter()
                .any(|n| n.ip == expected.ip && n.mac == expected.mac && n.permanent)
            {
                return Err(mismatch(format!(
                    "permanent neighbour {} on {ifname} is missing",
                    expected.ip
                )));
            }
        }
    }
    // Asked per address (RTM_GETROUTE) rather than by reading the host's routing table,
    // which holds a route per pod on the node: what matters is where the kernel sends
    // traffic for the pod's address.
    for cidr in &want {
        let host_cidr = Cidr::host(cidr.addr);
        let via = ctx.kernel.route_get(Ns::Host, cidr.addr)?;
        if via.and_then(|r| r.oif) != Some(host.index) {
            return Err(mismatch(format!(
                "host route {host_cidr} dev {host_name} is missing"
            )));
        }
    }

    let endpoint = agent::get_endpoint(ctx.agent, &id)?
        .ok_or_else(|| mismatch(format!("the agent has no endpoint {id}")))?;
    if endpoint.host_ifindex != host.index {
        return Err(mismatch(format!(
            "the agent's endpoint {id} is on ifindex {}, the host link is {}",
            endpoint.host_ifindex, host.index
        )));
    }
    let agent_addrs: BTreeSet<IpAddr> = builtin::addresses(&endpoint)?.into_iter().collect();
    let want_addrs: BTreeSet<IpAddr> = want.iter().map(|c| c.addr).collect();
    if agent_addrs != want_addrs {
        return Err(mismatch(format!(
            "the agent's endpoint {id} has addresses {agent_addrs:?}, prevResult {want_addrs:?}"
        )));
    }

    if let Some(delegate) = ctx.delegate() {
        delegate.check()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::netlink::Kernel as _;
    use crate::netlink::fake::FakeNs;
    use crate::spec::env::Command;
    use crate::spec::error::CniError;
    use crate::testing::{POD, World};

    /// ADD, then the configuration CHECK gets (ADD's result as prevResult).
    fn added(w: &mut World, netkit: bool, extra: Value) -> Value {
        w.kernel.netkit_supported = netkit;
        let conf = w.conf(extra);
        let result = w.add("c1", POD, &conf).unwrap();
        let mut conf = conf;
        conf["prevResult"] = result;
        conf
    }

    fn check(w: &mut World, conf: &Value) -> Result<(), Error> {
        w.run(Command::Check, "c1", Some(POD), conf).map(drop)
    }

    fn mismatch_text(w: &mut World, conf: &Value) -> String {
        let err = check(w, conf).unwrap_err();
        assert_eq!(err.to_cni().code, 103, "{err}");
        err.to_string()
    }

    #[test]
    fn a_fresh_attachment_checks_out_in_every_mode_and_version() {
        for (netkit, extra) in [
            (false, json!({})),
            (true, json!({})),
            (
                false,
                json!({"cniVersion": "0.4.0", "ipam": {"type": "fake-ipam"}}),
            ),
            (true, json!({"cniVersion": "1.0.0", "mode": "netkit"})),
        ] {
            let mut w = World::new();
            let conf = added(&mut w, netkit, extra.clone());
            check(&mut w, &conf).unwrap_or_else(|e| panic!("{extra}: {e}"));
        }
    }

    /// The CHECK mismatch after `breakage` of a fresh veth attachment.
    fn mismatch_after(breakage: impl FnOnce(&mut World)) -> String {
        let mut broken = World::new();
        let conf = added(&mut broken, false, json!({}));
        breakage(&mut broken);
        mismatch_text(&mut broken, &conf)
    }

    fn pod_ns(w: &mut World) -> &mut FakeNs {
        w.kernel.pods.get_mut(std::path::Path::new(POD)).unwrap()
    }

    #[test]
    fn each_missing_piece_is_named() {
        let mut w = World::new();
        let conf = added(&mut w, false, json!({}));
        let host = w
            .kernel
            .host
            .links
            .values()
            .find(|l| l.name.starts_with("nk"))
            .unwrap()
            .clone();

        assert!(
            mismatch_after(|b| pod_ns(b).addresses.retain(|(_, a, _)| a.is_ipv6()))
                .contains("address 10.22.0.2/32")
        );
        assert!(
            mismatch_after(|b| pod_ns(b).routes.retain(|r| r.dst.is_ipv6()))
                .contains("route 0.0.0.0/0")
        );
        assert!(mismatch_after(|b| pod_ns(b).neighbours.clear()).contains("neighbour 169.254.1.1"));
        assert!(
            mismatch_after(|b| b.kernel.host.routes.retain(|r| r.prefix == 0))
                .contains("host route 10.22.0.2/32")
        );
        assert!(
            mismatch_after(|b| b.agent.with(|s| s.endpoints.clear()))
                .contains("agent has no endpoint")
        );

        w.kernel.delete_link(Ns::Host, host.index).unwrap();
        assert!(mismatch_text(&mut w, &conf).contains("is missing"));
    }

    #[test]
    fn a_mode_mismatch_is_reported() {
        let mut w = World::new();
        let mut conf = added(&mut w, false, json!({}));
        conf["mode"] = json!("netkit");
        assert!(mismatch_text(&mut w, &conf).contains("mode netkit"));
    }

    #[test]
    fn no_prev_result_or_no_netns_have_their_codes() {
        let mut w = World::new();
        let conf = added(&mut w, false, json!({}));
        let mut bare = conf.clone();
        bare.as_object_mut().unwrap().remove("prevResult");
        assert_eq!(check(&mut w, &bare).unwrap_err().to_cni().code, 7);
        w.kernel.pods.remove(std::path::Path::new(POD));
        assert_eq!(check(&mut w, &conf).unwrap_err().to_cni().code, 3);
    }

    #[test]
    fn the_ipam_plugin_is_checked_too() {
        let mut w = World::new();
        let conf = added(&mut w, false, json!({"ipam": {"type": "fake-ipam"}}));
        w.ipam
            .with(|s| s.fail = Some((Command::Check, CniError::new(7, "no allocation"))));
        assert_eq!(check(&mut w, &conf).unwrap_err().to_cni().code, 7);
    }
}
