//! ADD: wire one pod and hand it to the agent.
//!
//! Order, and why:
//! 1. Refuse early, before anything exists: the netns must open (and not be ours),
//!    `CNI_IFNAME` must not exist in it, `prevResult` must decode.
//! 2. Delegated IPAM allocates (its DEL is registered first: the spec wants DEL even
//!    when the delegated ADD fails).
//! 3. One `RTM_NEWLINK` creates the pair with the peer straight in the pod netns
//!    under its final name ([`connector::create_pair`]); the host end stays down.
//! 4. Pod: `lo` and the interface up. Nothing can leave the pod yet — netkit: the
//!    peer policy is drop until the agent attaches; veth: the host end is down, so the
//!    pod end has no carrier.
//! 5. Hand-off: `AddEndpoint` (carrying delegated addresses, or none for built-in
//!    IPAM) returns only once the agent has programmed the datapath, with the
//!    addresses.
//! 6. Pod addressing: /32 and /128 (IPv6 without DAD), default routes via the
//!    link-local gateways unless the pod already has one of that family (another
//!    network's), veth: plus permanent neighbours for the gateways.
//! 7. Host: forwarding on, rp_filter loose on the host end, host end up, a /32 (/128)
//!    route per pod address via the host end.
//!
//! Every step registers its undo; any failure runs them in reverse (agent endpoint,
//! `lo` back down if we raised it, link — which takes the pod end, its addresses,
//! routes and neighbours with it — then the IPAM release) and reports the original
//! error. Forwarding sysctls stay: they are node-wide and other pods need them.

use std::net::IpAddr;
use std::time::Instant;

use netkit_api::{AddEndpoint, EndpointId, LinkMode};

use super::Ctx;
use crate::agent;
use crate::connector::probe_cache::NetkitProbeCache;
use crate::connector::{self, PairSpec, veth};
use crate::error::Error;
use crate::fault;
use crate::ipam::{self, builtin};
use crate::netlink::{Kernel, KernelError, Link, Ns, Route, format_mac, meaningful_mac};
use crate::spec::config::Mode;
use crate::spec::env::{EnvError, NETNS};
use crate::spec::result::{Cidr, CniResult, Interface, IpEntry, RouteEntry};

/// MTU when there is no default route to copy it from.
pub const FALLBACK_MTU: u32 = 1500;

pub fn add(ctx: &mut Ctx<'_>) -> Result<CniResult, Error> {
    let started = Instant::now();
    ctx.flush_deletion_queue();
    let id = ctx.endpoint_id();
    let netns = ctx
        .inv
        .netns
        .clone()
        .ok_or_else(|| EnvError::Missing(vec![NETNS]))?;
    ctx.kernel.open_pod_netns(&netns)?;
    if ctx.kernel.link_by_name(Ns::Pod, &ctx.inv.ifname)?.is_some()
        && !settle_previous(ctx, &id, Ns::Pod, &ctx.inv.ifname.clone())
    {
        return Err(connector::ConnectorError::Exists {
            name: ctx.inv.ifname.clone(),
            ns: "pod",
        }
        .into());
    }
    let prev = match &ctx.conf.prev_result {
        Some(value) => Some(CniResult::from_value(value, "prevResult")?),
        None => None,
    };

    let mut undo = Undo::default();
    let ours = match wire(ctx, &id, &netns.display().to_string(), &mut undo) {
        Ok(ours) => ours,
        Err(e) => {
            tracing::warn!(error = %e, "ADD failed; rolling back");
            return Err(undo.run(ctx, &id, e));
        }
    };
    tracing::info!(
        elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
        "pod wired"
    );
    Ok(match prev {
        Some(prev) => ours.appended_to(prev),
        None => ours,
    })
}

fn wire(
    ctx: &mut Ctx<'_>,
    id: &EndpointId,
    netns: &str,
    undo: &mut Undo,
) -> Result<CniResult, Error> {
    let delegated = match ctx.delegate() {
        Some(delegate) => {
            undo.push(Step::ReleaseIpam);
            Some(delegate.add()?)
        }
        None => None,
    };
    fault::point("after-ipam");

    let mtu = match ctx.conf.mtu {
        Some(mtu) => mtu,
        None => default_mtu(ctx.kernel)?,
    };
    let host_name = connector::host_ifname(id);
    let spec = PairSpec {
        host: &host_name,
        pod: &ctx.inv.ifname,
        mtu,
        big_tcp: ctx.conf.big_tcp,
    };
    // `auto` on a kernel this boot already found without netkit goes straight to veth.
    let probe = NetkitProbeCache::new(&ctx.conf.state_dir);
    let asked = match ctx.conf.mode {
        Mode::Auto if probe.known_absent() => {
            tracing::debug!("this boot's kernel has no netkit (recorded): veth");
            Mode::Veth
        }
        configured => configured,
    };
    let mode = match connector::create_pair(ctx.kernel, asked, &spec) {
        Err(connector::ConnectorError::Exists { ns: "host", .. })
            if settle_previous(ctx, id, Ns::Host, &host_name) =>
        {
            connector::create_pair(ctx.kernel, asked, &spec)?
        }
        created => created?,
    };
    if asked == Mode::Auto && mode == LinkMode::Veth {
        probe.remember_absent();
    }
    let host = existing(ctx.kernel, Ns::Host, &host_name)?;
    undo.push(Step::DeleteLink(host.index));
    let pod = existing(ctx.kernel, Ns::Pod, &ctx.inv.ifname)?;
    fault::point("after-link");
    tracing::debug!(?mode, host = %host_name, host_index = host.index, "pair created");
    if let Some(alias) = connector::alias(&ctx.conf.name, id) {
        ctx.kernel.set_alias(Ns::Host, host.index, &alias)?;
    }
    if let Some(lo) = ctx.kernel.link_by_name(Ns::Pod, "lo")?
        && !lo.up
    {
        ctx.kernel.set_link_up(Ns::Pod, lo.index)?;
        undo.push(Step::LoopbackDown(lo.index));
    }
    ctx.kernel.set_link_up(Ns::Pod, pod.index)?;
    fault::point("after-pod-up");

    let macs = |link: &Link| meaningful_mac(link.mac.as_deref()).map(format_mac);
    let request = AddEndpoint {
        id: id.clone(),
        netns: netns.to_string(),
        mode,
        host_ifname: host_name.clone(),
        host_ifindex: host.index,
        pod_mac: if mode == LinkMode::Veth {
            macs(&pod)
        } else {
            None
        },
        host_mac: if mode == LinkMode::Veth {
            macs(&host)
        } else {
            None
        },
        ips: delegated
            .as_ref()
            .map(|r| ipam::to_api(&r.ips))
            .unwrap_or_default(),
    };
    let handed_off = Instant::now();
    let endpoint = match agent::add_endpoint(ctx.agent, request) {
        Ok(endpoint) => {
            let agent_ms = handed_off.elapsed().as_secs_f64() * 1e3;
            tracing::info!(agent_ms, ips = ?endpoint.ips, "the agent programmed the endpoint");
            endpoint
        }
        Err(e) => {
            if e.may_have_applied() {
                undo.push(Step::DelEndpoint);
            }
            return Err(e.into());
        }
    };
    undo.push(Step::DelEndpoint);
    fault::point("after-agent");
    let addresses: Vec<IpAddr> = match &delegated {
        Some(result) => result.ips.iter().map(|ip| ip.address.addr).collect(),
        None => builtin::addresses(&endpoint)?,
    };
    if addresses.is_empty() {
        return Err(Error::NoAddresses);
    }
    let (v4, v6) = (
        addresses.iter().any(IpAddr::is_ipv4),
        addresses.iter().any(IpAddr::is_ipv6),
    );

    // Pod addressing.
    for addr in &addresses {
        let cidr = Cidr::host(*addr);
        ctx.kernel
            .add_address(Ns::Pod, pod.index, cidr.addr, cidr.prefix)?;
    }
    fault::point("after-pod-addresses");
    let mut routes: Vec<RouteEntry> = Vec::new();
    let family_defaults = addresses
        .iter()
        .filter(|a| a.is_ipv4())
        .take(1)
        .chain(addresses.iter().filter(|a| a.is_ipv6()).take(1));
    for addr in family_defaults {
        routes.push(RouteEntry::new(
            Cidr::default_route_for(*addr),
            Some(connector::gateway_for(*addr)),
        ));
    }
    // Routes the IPAM plugin asks for go via our gateway of their family.
    for extra in delegated.iter().flat_map(|r| &r.routes) {
        let has_family = if extra.dst.addr.is_ipv4() { v4 } else { v6 };
        if !extra.dst.is_default() && has_family {
            routes.push(RouteEntry::new(
                extra.dst,
                Some(connector::gateway_for(extra.dst.addr)),
            ));
        }
    }
    // The spec: another network may already have set the pod's default route; ours is
    // then skipped (and not reported, since we did not create it).
    let present = ctx.kernel.routes(Ns::Pod)?;
    routes.retain(|r| {
        let taken = r.dst.is_default()
            && present
                .iter()
                .any(|p| p.prefix == 0 && p.dst.is_ipv4() == r.dst.addr.is_ipv4());
        if taken {
            tracing::info!(dst = %r.dst, "the pod already has a default route; keeping it");
        }
        !taken
    });
    for route in &routes {
        ctx.kernel.add_route(
            Ns::Pod,
            &Route {
                dst: route.dst.addr,
                prefix: route.dst.prefix,
                gateway: route.gw,
                oif: Some(pod.index),
                onlink: route.dst.addr.is_ipv4(),
            },
        )?;
    }
    if mode == LinkMode::Veth {
        let host_mac = host.mac.clone().ok_or_else(|| {
            KernelError::new(
                format!("read the MAC of {host_name}"),
                None,
                "veth without a MAC",
            )
        })?;
        for neighbour in veth::gateway_neighbours(pod.index, &host_mac, &addresses) {
            ctx.kernel.add_neighbour(Ns::Pod, &neighbour)?;
        }
    }

    fault::point("after-pod-routes");

    // Host side.
    host_sysctls(ctx.kernel, &host_name, v4, v6)?;
    ctx.kernel.set_link_up(Ns::Host, host.index)?;
    if mode == LinkMode::Veth {
        // The host end has no link-local address to solicit from (see host_sysctls).
        for neighbour in veth::pod_neighbours(host.index, pod.mac.as_deref(), &addresses) {
            ctx.kernel.add_neighbour(Ns::Host, &neighbour)?;
        }
    }
    for addr in &addresses {
        let cidr = Cidr::host(*addr);
        let route = Route {
            dst: cidr.addr,
            prefix: cidr.prefix,
            gateway: None,
            oif: Some(host.index),
            onlink: false,
        };
        ctx.kernel.add_route(Ns::Host, &route)?;
    }

    fault::point("after-host");

    let dns = match &delegated {
        Some(result) if !result.dns.is_empty() => result.dns.clone(),
        _ => ctx.conf.dns.clone(),
    };
    Ok(CniResult {
        interfaces: vec![
            Interface {
                name: host_name,
                mac: macs(&host),
                mtu: Some(host.mtu),
                ..Default::default()
            },
            Interface {
                name: ctx.inv.ifname.clone(),
                mac: macs(&pod),
                mtu: Some(pod.mtu),
                sandbox: Some(netns.to_string()),
                ..Default::default()
            },
        ],
        ips: addresses
            .iter()
            .map(|a| IpEntry {
                address: Cidr::host(*a),
                gateway: Some(connector::gateway_for(*a)),
                interface: Some(1),
            })
            .collect(),
        routes,
        dns,
    })
}

/// A name this attachment needs is taken (`name` in `ns`: our host end, or
/// `CNI_IFNAME` in the pod): by this attachment's previous link, when a DEL handed it to
/// the agent and the teardown has not finished (a runtime re-adding right after
/// deleting, as `podman network reload` does). The agent is asked to finish that
/// teardown (nothing else changes). `true` when the name is free now.
fn settle_previous(ctx: &mut Ctx<'_>, id: &EndpointId, ns: Ns, name: &str) -> bool {
    if let Err(e) = agent::settle_endpoint(ctx.agent, id) {
        tracing::warn!(error = %e, "asking the agent to finish a previous teardown");
        return false;
    }
    let free = matches!(ctx.kernel.link_by_name(ns, name), Ok(None));
    if free {
        tracing::info!(link = %name, "the previous link of this attachment is gone");
    }
    free
}

fn existing(kernel: &mut dyn Kernel, ns: Ns, name: &str) -> Result<Link, KernelError> {
    kernel.link_by_name(ns, name)?.ok_or_else(|| {
        KernelError::from_errno(format!("look up the new link {name}"), libc::ENODEV)
    })
}

/// The MTU of the device traffic leaving the node takes (the default route's; IPv4
/// first), else 1500. Asked with a route get: the host's routing table holds a route per
/// pod, and reading it whole made each ADD slower than the last.
pub fn default_mtu(kernel: &mut dyn Kernel) -> Result<u32, KernelError> {
    let uplink = crate::netlink::default_route_link(kernel, Ns::Host)?;
    Ok(uplink
        .map(|l| l.mtu)
        .filter(|m| *m >= 68)
        .unwrap_or(FALLBACK_MTU))
}

/// Forwarding on (only for the families the pod uses: turning IPv6 forwarding on
/// changes how the host treats router advertisements), loose reverse-path filtering
/// on the host end (`2`: the kernel uses the larger of `all` and the device's value, so
/// `2` is loose whatever `all` says), no DAD on the host end.
fn host_sysctls(
    kernel: &mut dyn Kernel,
    host: &str,
    v4: bool,
    v6: bool,
) -> Result<(), KernelError> {
    let mut ensure = |key: &str, value: &str| -> Result<(), KernelError> {
        if kernel.sysctl(key)? != value {
            kernel.set_sysctl(key, value)?;
        }
        Ok(())
    };
    if v4 {
        ensure("net/ipv4/ip_forward", "1")?;
        ensure(&format!("net/ipv4/conf/{host}/rp_filter"), "2")?;
    }
    if v6 {
        ensure("net/ipv6/conf/all/forwarding", "1")?;
        ensure(&format!("net/ipv6/conf/{host}/accept_dad"), "0")?;
    }
    // Nothing of IPv6 on the host end of a pod without an IPv6 address (`disable_ipv6`),
    // and otherwise no link-local address on it (`addr_gen_mode` none); either set before
    // it comes up. Nothing needs one: a veth host end's IPv6 neighbours are written
    // permanent, netkit's L3 devices have none. With IPv6 on, every host end coming up
    // costs the pod start a multicast route beside every other host end's (the kernel's
    // IPv6 FIB keeps them in one list it walks on insert) and a walk of the node's whole
    // IPv6 FIB (`rt6_sync_up`); a link-local address would add a prefix route the same
    // way, and router solicitations in the background. Both keys are absent when the
    // kernel has IPv6 off.
    let (key, value) = if v6 {
        ("addr_gen_mode", "1")
    } else {
        ("disable_ipv6", "1")
    };
    match ensure(&format!("net/ipv6/conf/{host}/{key}"), value) {
        Err(e) if e.is_not_found() => Ok(()),
        other => other,
    }
}

/// What to undo if a later step fails.
enum Step {
    ReleaseIpam,
    DeleteLink(u32),
    /// The pod's `lo` was down before we brought it up.
    LoopbackDown(u32),
    DelEndpoint,
}

#[derive(Default)]
struct Undo {
    steps: Vec<Step>,
}

impl Undo {
    fn push(&mut self, step: Step) {
        self.steps.push(step);
    }

    /// Undo in reverse order; returns `cause`, with anything that could not be undone.
    fn run(self, ctx: &mut Ctx<'_>, id: &EndpointId, cause: Error) -> Error {
        let mut leftovers = Vec::new();
        for step in self.steps.into_iter().rev() {
            match step {
                Step::DelEndpoint => match agent::del_endpoint(ctx.agent, id) {
                    Ok(()) => {}
                    Err(e) if e.is_unavailable() => {
                        if let Err(q) = ctx.queue.enqueue(id) {
                            leftovers.push(format!("{e}; and queueing the deletion failed: {q}"));
                        }
                    }
                    Err(e) => leftovers.push(e.to_string()),
                },
                Step::DeleteLink(index) => match ctx.kernel.delete_link(Ns::Host, index) {
                    Err(e) if !e.is_not_found() => leftovers.push(e.to_string()),
                    _ => {}
                },
                Step::LoopbackDown(index) => match ctx.kernel.set_link_down(Ns::Pod, index) {
                    Err(e) if !e.is_not_found() => leftovers.push(e.to_string()),
                    _ => {}
                },
                Step::ReleaseIpam => {
                    if let Some(delegate) = ctx.delegate()
                        && let Err(e) = delegate.del()
                    {
                        leftovers.push(e.to_string());
                    }
                }
            }
        }
        if leftovers.is_empty() {
            cause
        } else {
            tracing::error!(?leftovers, "rollback incomplete");
            Error::RollbackIncomplete {
                cause: Box::new(cause),
                leftovers,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use netkit_api::{ApiError, ErrorKind, Request};
    use serde_json::{Value, json};

    use super::*;
    use crate::netlink::LinkKind;
    use crate::netlink::fake::UPLINK_MTU;
    use crate::spec::error::CniError;
    use crate::testing::{POD, POD2, World, id};

    fn added_request(w: &World) -> AddEndpoint {
        w.agent
            .with(|s| {
                s.requests.iter().find_map(|r| {
                    if let Request::AddEndpoint(a) = r {
                        Some(a.clone())
                    } else {
                        None
                    }
                })
            })
            .unwrap()
    }

    #[test]
    fn builtin_ipam_on_veth_wires_both_sides() {
        let mut w = World::new();
        let conf = w.conf(json!({"dns": {"nameservers": ["10.96.0.10"]}}));
        let result = w.add("c1", POD, &conf).unwrap();
        let host_name = connector::host_ifname(&id("c1"));

        assert_eq!(result["cniVersion"], "1.1.0");
        assert_eq!(result["interfaces"][0]["name"], host_name.as_str());
        assert!(result["interfaces"][0].get("sandbox").is_none());
        assert_eq!(result["interfaces"][1]["name"], "eth0");
        assert_eq!(result["interfaces"][1]["sandbox"], POD);
        assert_eq!(result["interfaces"][1]["mtu"], UPLINK_MTU);
        assert!(result["interfaces"][1]["mac"].is_string());
        assert_eq!(
            result["ips"],
            json!([
                {"address": "10.22.0.2/32", "gateway": "169.254.1.1", "interface": 1},
                {"address": "fd00:22::2/128", "gateway": "fe80::1", "interface": 1}
            ])
        );
        assert_eq!(
            result["routes"],
            json!([{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}, {"dst": "::/0", "gw": "fe80::1"}])
        );
        assert_eq!(result["dns"]["nameservers"], json!(["10.96.0.10"]));

        let k = &mut w.kernel;
        let host = k.host.by_name(&host_name).unwrap().clone();
        assert!(host.up);
        assert_eq!(host.kind, Some(LinkKind::Veth));
        assert_eq!(host.alias.as_deref(), Some("netkit-cni:pods:c1:eth0"));
        let pod = k.pod(POD);
        let eth0 = pod.by_name("eth0").unwrap();
        let eth0_mac = eth0.mac.clone();
        assert!(eth0.up && pod.by_name("lo").unwrap().up);
        assert_eq!(eth0.peer_index, Some(host.index));
        let addrs: Vec<String> = pod
            .addresses
            .iter()
            .map(|(_, a, p)| format!("{a}/{p}"))
            .collect();
        assert_eq!(addrs, ["10.22.0.2/32", "fd00:22::2/128"]);
        assert!(
            pod.routes
                .iter()
                .any(|r| r.prefix == 0 && r.gateway == Some(gateway4()) && r.onlink)
        );
        assert!(
            pod.routes
                .iter()
                .any(|r| r.prefix == 0 && r.gateway == Some(gateway6()))
        );
        assert_eq!(pod.neighbours.len(), 2);
        assert!(
            pod.neighbours
                .iter()
                .all(|n| n.permanent && Some(&n.mac) == host.mac.as_ref())
        );
        assert!(
            k.host
                .routes
                .iter()
                .any(|r| r.dst.to_string() == "10.22.0.2"
                    && r.prefix == 32
                    && r.oif == Some(host.index))
        );
        assert!(
            k.host
                .routes
                .iter()
                .any(|r| r.dst.to_string() == "fd00:22::2" && r.prefix == 128)
        );
        assert_eq!(k.sysctls["net/ipv4/ip_forward"], "1");
        assert_eq!(k.sysctls["net/ipv6/conf/all/forwarding"], "1");
        assert_eq!(
            k.sysctls[&format!("net/ipv4/conf/{host_name}/rp_filter")],
            "2"
        );
        assert_eq!(
            k.sysctls[&format!("net/ipv6/conf/{host_name}/accept_dad")],
            "0"
        );
        // No link-local on the host end, so the pod's IPv6 address has a permanent
        // host-side entry (and IPv4 none: ARP needs no address of the host end's own).
        assert_eq!(
            k.sysctls[&format!("net/ipv6/conf/{host_name}/addr_gen_mode")],
            "1"
        );
        assert!(
            !k.sysctls
                .contains_key(&format!("net/ipv6/conf/{host_name}/disable_ipv6")),
            "a dual-stack pod's host end keeps IPv6"
        );
        let host_neighbours: Vec<_> = k
            .host
            .neighbours
            .iter()
            .filter(|n| n.ifindex == host.index)
            .collect();
        assert_eq!(host_neighbours.len(), 1, "{host_neighbours:?}");
        assert_eq!(host_neighbours[0].ip.to_string(), "fd00:22::2");
        assert!(host_neighbours[0].permanent);
        assert_eq!(Some(&host_neighbours[0].mac), eth0_mac.as_ref());

        let req = added_request(&w);
        assert!(req.ips.is_empty(), "built-in IPAM sends no addresses");
        assert_eq!(req.mode, LinkMode::Veth);
        assert_eq!(req.host_ifindex, host.index);
        assert!(req.pod_mac.is_some() && req.host_mac.is_some());
        assert!(w.agent.with(|s| s.endpoints.contains_key(&id("c1"))));
    }

    fn gateway4() -> IpAddr {
        connector::GATEWAY_V4.into()
    }

    fn gateway6() -> IpAddr {
        connector::GATEWAY_V6.into()
    }

    #[test]
    fn the_host_end_comes_up_only_after_the_agent_confirmed() {
        // veth: until the host end is up the pod end has no carrier, so the pod can
        // send nothing before the agent's programs are attached.
        let mut w = World::new();
        w.agent
            .with(|s| s.refuse_add = Some(ApiError::new(ErrorKind::Internal, "attach failed")));
        let _ = w.add("c1", POD, &w.conf(json!({}))).unwrap_err();
        assert!(
            w.kernel
                .log
                .iter()
                .all(|l| !l.starts_with("set_link_up Host")),
            "{:?}",
            w.kernel.log
        );
        // netkit: the peer policy is drop from creation.
        let mut w = World::new();
        w.kernel.netkit_supported = true;
        w.add("c1", POD, &w.conf(json!({}))).unwrap();
        let req = added_request(&w);
        let host = w.kernel.host.by_name(&req.host_ifname).unwrap();
        assert_eq!(
            host.netkit.unwrap().peer_policy,
            netlink_packet_route::link::NetkitPolicy::Drop
        );
    }

    #[test]
    fn auto_asks_for_netkit_once_per_boot() {
        let mut w = World::new();
        let conf = w.conf(json!({}));
        let link_adds = |w: &World| {
            w.kernel
                .log
                .iter()
                .filter(|op| op.starts_with("add_link "))
                .count()
        };
        w.add("c1", POD, &conf).unwrap();
        assert_eq!(link_adds(&w), 2, "netkit refused, then veth");
        w.add("c2", POD2, &conf).unwrap();
        assert_eq!(link_adds(&w), 3, "the refusal was asked for again");
        assert_eq!(added_request(&w).mode, LinkMode::Veth);
    }

    #[test]
    fn netkit_when_the_kernel_has_it() {
        let mut w = World::new();
        w.kernel.netkit_supported = true;
        let result = w.add("c1", POD, &w.conf(json!({"mtu": 9000}))).unwrap();
        assert!(
            result["interfaces"][1].get("mac").is_none(),
            "netkit L3 has no MAC to report"
        );
        assert_eq!(result["interfaces"][1]["mtu"], 9000);
        let req = added_request(&w);
        assert_eq!(req.mode, LinkMode::Netkit);
        assert_eq!((req.pod_mac, req.host_mac), (None, None));
        assert!(
            w.kernel.pod(POD).neighbours.is_empty(),
            "L3 needs no neighbours"
        );
        let host = w.kernel.host.by_name(&req.host_ifname).unwrap();
        assert!(connector::netkit::check(host).is_ok());
    }

    #[test]
    fn delegated_ipam_addresses_go_to_the_agent_and_the_pod() {
        let mut w = World::new();
        let conf =
            w.conf(json!({"ipam": {"type": "fake-ipam"}, "dns": {"nameservers": ["1.1.1.1"]}}));
        let result = w.add("c1", POD, &conf).unwrap();
        assert_eq!(
            result["ips"],
            json!([{"address": "10.33.0.2/32", "gateway": "169.254.1.1", "interface": 1}])
        );
        assert_eq!(
            result["routes"],
            json!([{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}, {"dst": "192.168.50.0/24", "gw": "169.254.1.1"}])
        );
        assert_eq!(
            result["dns"]["nameservers"],
            json!(["10.33.0.10"]),
            "the IPAM plugin's DNS wins"
        );
        let req = added_request(&w);
        assert_eq!(req.ips.len(), 1);
        assert_eq!(req.ips[0].address, "10.33.0.2/24");
        assert_eq!(req.ips[0].gateway.as_deref(), Some("10.33.0.1"));
        assert!(
            !w.kernel
                .sysctls
                .contains_key("net/ipv6/conf/all/forwarding")
                || w.kernel.sysctls["net/ipv6/conf/all/forwarding"] == "0",
            "no IPv6, no IPv6 forwarding"
        );
        // An IPv4-only pod's host end has IPv6 off before it comes up: no multicast route
        // and no walk of the node's IPv6 FIB per pod start.
        let host_name = connector::host_ifname(&id("c1"));
        assert_eq!(
            w.kernel.sysctls[&format!("net/ipv6/conf/{host_name}/disable_ipv6")],
            "1"
        );
        assert!(
            !w.kernel
                .sysctls
                .contains_key(&format!("net/ipv6/conf/{host_name}/addr_gen_mode"))
        );
    }

    #[test]
    fn a_second_interface_keeps_the_first_ones_default_routes() {
        let mut w = World::new();
        let conf = w.conf(json!({}));
        w.add("c1", POD, &conf).unwrap();
        w.ifname = "eth1".into();
        let result = w.add("c1", POD, &conf).unwrap();
        assert!(
            result.get("routes").is_none(),
            "no route of ours to report: {result}"
        );
        let pod = w.kernel.pod(POD);
        let eth1 = pod.by_name("eth1").unwrap();
        assert_eq!(pod.routes.iter().filter(|r| r.prefix == 0).count(), 2);
        assert!(pod.routes.iter().all(|r| r.oif != Some(eth1.index)));
        assert_eq!(
            pod.neighbours
                .iter()
                .filter(|n| n.ifindex == eth1.index)
                .count(),
            2
        );
        let mut check = conf.clone();
        check["prevResult"] = result;
        w.run(crate::spec::env::Command::Check, "c1", Some(POD), &check)
            .unwrap();
        w.run(crate::spec::env::Command::Del, "c1", None, &conf)
            .unwrap();
        assert!(w.kernel.pod(POD).links.values().all(|l| l.name != "eth1"));
        assert!(w.kernel.pod(POD).links.values().any(|l| l.name == "eth0"));
    }

    #[test]
    fn answers_in_the_requested_version() {
        let mut w = World::new();
        let result = w
            .add("c1", POD, &w.conf(json!({"cniVersion": "0.4.0"})))
            .unwrap();
        assert_eq!(result["cniVersion"], "0.4.0");
        assert_eq!(result["ips"][0]["version"], "4");
        assert!(result["interfaces"][1].get("mtu").is_none());
    }

    #[test]
    fn a_previous_result_is_kept_and_our_indexes_follow_it() {
        let mut w = World::new();
        let prev = json!({"cniVersion": "1.1.0", "interfaces": [{"name": "dummy0"}],
                          "ips": [{"address": "192.168.9.9/24", "interface": 0}]});
        let result = w
            .add("c1", POD, &w.conf(json!({"prevResult": prev})))
            .unwrap();
        assert_eq!(result["interfaces"][0]["name"], "dummy0");
        assert_eq!(result["interfaces"][2]["name"], "eth0");
        assert_eq!(result["ips"][0]["interface"], 0);
        assert_eq!(result["ips"][1]["interface"], 2);
    }

    #[test]
    fn an_add_never_reads_the_host_routing_table() {
        // The host table holds a route per pod: reading it per ADD made ADD slower as
        // the node filled up.
        let mut w = World::new();
        for n in 0..3 {
            let pod = format!("/run/netns/p{n}");
            w.kernel.add_pod(&pod);
            w.add(&format!("c{n}"), &pod, &w.conf(json!({}))).unwrap();
        }
        assert!(
            !w.kernel.route_dumps.contains(&Ns::Host),
            "{:?}",
            w.kernel.route_dumps
        );
    }

    #[test]
    fn mtu_defaults_to_the_uplink() {
        assert_eq!(
            default_mtu(&mut crate::netlink::fake::FakeKernel::new()).unwrap(),
            UPLINK_MTU
        );
        let mut k = crate::netlink::fake::FakeKernel::new();
        k.host.routes.clear();
        assert_eq!(default_mtu(&mut k).unwrap(), FALLBACK_MTU);
    }

    fn code(e: &Error) -> u32 {
        e.to_cni().code
    }

    #[test]
    fn an_existing_interface_is_refused_and_left_untouched() {
        let mut w = World::new();
        w.kernel.add_pod_link(POD, "eth0");
        let before = w.snapshot();
        let conf = w.conf(json!({"ipam": {"type": "fake-ipam"}}));
        let err = w.add("c1", POD, &conf).unwrap_err();
        assert_eq!(code(&err), 100);
        assert!(err.to_string().contains("eth0 already exists"), "{err}");
        assert_eq!(w.snapshot(), before);
        assert!(w.ipam.with(|s| s.calls.is_empty()), "refused before IPAM");
        assert!(w.agent.with(|s| {
            s.requests
                .iter()
                .all(|r| !matches!(r, Request::AddEndpoint(_)))
        }));
    }

    #[test]
    fn a_colliding_host_link_is_not_ours_to_delete() {
        let mut w = World::new();
        let name = connector::host_ifname(&id("c1"));
        let stale = w.kernel.add_host_link(&name, None);
        let before = w.snapshot();
        let err = w
            .add("c1", POD, &w.conf(json!({"ipam": {"type": "fake-ipam"}})))
            .unwrap_err();
        assert_eq!(code(&err), 100, "{err}");
        assert!(w.kernel.host.links.contains_key(&stale));
        assert_eq!(w.snapshot(), before, "IPAM released, nothing else touched");
    }

    #[test]
    fn namespace_problems_have_their_codes() {
        let mut w = World::new();
        let conf = w.conf(json!({}));
        assert_eq!(code(&w.add("c1", "/run/netns/gone", &conf).unwrap_err()), 3);
        assert_eq!(
            code(
                &w.add("c1", crate::netlink::fake::OWN_NETNS, &conf)
                    .unwrap_err()
            ),
            4
        );
    }

    #[test]
    fn netkit_mode_without_netkit_is_a_config_error_and_rolls_back() {
        let mut w = World::new();
        let before = w.snapshot();
        let err = w
            .add(
                "c1",
                POD,
                &w.conf(json!({"mode": "netkit", "ipam": {"type": "fake-ipam"}})),
            )
            .unwrap_err();
        assert_eq!(code(&err), 7);
        assert!(err.to_string().contains("no netkit support"));
        assert_eq!(w.snapshot(), before);
    }

    #[test]
    fn an_unreachable_agent_is_try_again_later_with_nothing_left_behind() {
        for ipam in [json!(null), json!({"type": "fake-ipam"})] {
            let mut w = World::new();
            w.agent.with(|s| s.up = false);
            let before = w.snapshot();
            let err = w
                .add("c1", POD, &w.conf(json!({"ipam": ipam})))
                .unwrap_err();
            assert_eq!(code(&err), 11, "{err}");
            assert_eq!(w.snapshot(), before, "ipam={ipam}");
            assert!(
                w.queue().pending().unwrap().is_empty(),
                "nothing reached the agent, nothing to queue"
            );
        }
    }

    #[test]
    fn agent_refusals_roll_back() {
        for (kind, want) in [
            (ErrorKind::PoolExhausted, 11),
            (ErrorKind::InvalidRequest, 7),
            (ErrorKind::Internal, 102),
        ] {
            let mut w = World::new();
            let before = w.snapshot();
            w.agent
                .with(|s| s.refuse_add = Some(ApiError::new(kind, "no")));
            let err = w.add("c1", POD, &w.conf(json!({}))).unwrap_err();
            assert_eq!(code(&err), want, "{kind:?}");
            assert_eq!(w.snapshot(), before);
        }
    }

    #[test]
    fn a_lost_reply_deletes_what_the_agent_may_have_programmed() {
        let mut w = World::new();
        let before = w.snapshot();
        w.agent.with(|s| s.lose_add_reply = true);
        let err = w.add("c1", POD, &w.conf(json!({}))).unwrap_err();
        assert_eq!(code(&err), 11);
        assert_eq!(w.snapshot(), before);
        assert!(w.agent.with(|s| s.deleted.contains(&id("c1"))));
    }

    #[test]
    fn a_failing_ipam_add_is_followed_by_its_del() {
        let mut w = World::new();
        w.ipam.with(|s| {
            s.fail = Some((
                crate::spec::env::Command::Add,
                CniError::new(11, "range busy"),
            ))
        });
        let err = w
            .add("c1", POD, &w.conf(json!({"ipam": {"type": "fake-ipam"}})))
            .unwrap_err();
        assert_eq!(code(&err), 11, "the IPAM plugin's code passes through");
        let calls: Vec<_> = w.ipam.with(|s| s.calls.iter().map(|(c, _)| *c).collect());
        assert_eq!(
            calls,
            [
                crate::spec::env::Command::Add,
                crate::spec::env::Command::Del
            ]
        );
    }

    /// Fail each kernel change in turn: every failure must leave the node as it was.
    fn every_failing_step_rolls_back(netkit: bool, conf: Value) {
        let mut n = 0;
        loop {
            let mut w = World::new();
            w.kernel.netkit_supported = netkit;
            let before = w.snapshot();
            w.kernel.fail_at = Some((n, libc::EIO));
            let conf = w.conf(conf.clone());
            match w.add("c1", POD, &conf) {
                Ok(_) => break,
                Err(err) => {
                    assert_eq!(code(&err), 101, "step {n}: {err}");
                    assert_eq!(
                        w.snapshot(),
                        before,
                        "step {n} ({}) left state behind",
                        w.kernel.log[n]
                    );
                }
            }
            n += 1;
            assert!(n < 100, "ADD never succeeded");
        }
        assert!(n >= 8, "only {n} steps?");
    }

    #[test]
    fn every_failing_step_rolls_back_builtin_veth() {
        every_failing_step_rolls_back(false, json!({}));
    }

    #[test]
    fn every_failing_step_rolls_back_delegated_netkit() {
        every_failing_step_rolls_back(true, json!({"ipam": {"type": "fake-ipam"}}));
    }

    #[test]
    fn rollback_failures_are_reported() {
        let mut w = World::new();
        w.agent
            .with(|s| s.refuse_add = Some(ApiError::new(ErrorKind::Internal, "boom")));
        // The refusal is change #6 or so; make the link deletion in the rollback fail.
        let conf = w.conf(json!({}));
        w.kernel.fail_at = None;
        let changes_before_handoff = {
            let mut probe = World::new();
            probe
                .agent
                .with(|s| s.refuse_add = Some(ApiError::new(ErrorKind::Internal, "boom")));
            let c = probe.conf(json!({}));
            let _ = probe.add("c1", POD, &c);
            probe
                .kernel
                .log
                .iter()
                .position(|l| l.starts_with("delete_link"))
                .unwrap()
        };
        w.kernel.fail_at = Some((changes_before_handoff, libc::EBUSY));
        let err = w.add("c1", POD, &conf).unwrap_err();
        let doc = err.to_cni();
        assert_eq!(doc.code, 102);
        assert!(doc.details.unwrap().contains("roll-back left behind"));
    }
}
