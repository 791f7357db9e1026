//! Where a pod's link is created: the pair in one netlink request (one file per link
//! mode), the host-side name derived from the attachment, and the mode decision —
//! netkit, veth, or (`auto`) netkit probed by trying, with veth as the fallback.

pub mod netkit;
pub mod probe_cache;
pub mod veth;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::RawFd;

use netkit_api::{EndpointId, LinkMode};
use netlink_packet_route::link::LinkAttribute;
use sha2::{Digest as _, Sha256};

use crate::netlink::link::Pair;
use crate::netlink::{Kernel, KernelError, Link, LinkKind, Ns};
use crate::spec::config::{BigTcp, Mode};

/// Host-side names are `nk` + 11 hex digits, in both link modes: DEL and GC find the
/// link from the attachment id alone, whatever mode ADD ended up using.
pub const HOST_PREFIX: &str = "nk";
/// The pod's default gateways: link-local, never on the wire, the same in every pod.
pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
pub const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
/// Host links carry `netkit-cni:<network>:<container id>:<ifname>` as their alias so
/// GC can recognise links whose attachment is gone.
pub const ALIAS_PREFIX: &str = "netkit-cni:";
/// `IFALIASZ - 1`.
const ALIAS_MAX: usize = 255;

/// The host-side interface name of an attachment: deterministic, at most 15 bytes.
pub fn host_ifname(id: &EndpointId) -> String {
    let digest = Sha256::digest(format!("{}/{}", id.container_id, id.ifname));
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("{HOST_PREFIX}{}", &hex[..11])
}

/// The pod's gateway in `addr`'s family.
pub fn gateway_for(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => GATEWAY_V4.into(),
        IpAddr::V6(_) => GATEWAY_V6.into(),
    }
}

pub fn is_gateway(addr: IpAddr) -> bool {
    addr == IpAddr::from(GATEWAY_V4) || addr == IpAddr::from(GATEWAY_V6)
}

/// The host link's alias, or `None` when it would not fit.
pub fn alias(network: &str, id: &EndpointId) -> Option<String> {
    let alias = format!("{ALIAS_PREFIX}{network}:{}:{}", id.container_id, id.ifname);
    (alias.len() <= ALIAS_MAX).then_some(alias)
}

/// `(network, attachment)` from a host link's alias, if we wrote it.
pub fn parse_alias(alias: &str) -> Option<(String, EndpointId)> {
    let mut parts = alias.strip_prefix(ALIAS_PREFIX)?.split(':');
    let (network, container_id, ifname) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || network.is_empty() || container_id.is_empty() || ifname.is_empty()
    {
        return None;
    }
    Some((
        network.to_string(),
        EndpointId {
            container_id: container_id.to_string(),
            ifname: ifname.to_string(),
        },
    ))
}

/// What both ends of the pair are created with.
#[derive(Debug, Clone, Copy)]
pub struct PairSpec<'a> {
    /// Host-side name (netkit primary / host veth).
    pub host: &'a str,
    /// Pod-side name: `CNI_IFNAME`.
    pub pod: &'a str,
    pub mtu: u32,
    pub big_tcp: BigTcp,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error(
        "mode \"netkit\": this kernel has no netkit support (netkit needs Linux 6.7+ with CONFIG_NETKIT); \
         use mode \"auto\" or \"veth\""
    )]
    NetkitUnsupported,
    #[error("interface {name} already exists in the {ns} network namespace")]
    Exists { name: String, ns: &'static str },
    #[error("no pod network namespace is open")]
    NoPodNetns,
    #[error(transparent)]
    Kernel(#[from] KernelError),
}

impl PairSpec<'_> {
    /// MTU and BIG TCP sizes: set on each end.
    fn end_attributes(&self) -> Vec<LinkAttribute> {
        let big = self.big_tcp;
        let sizes = [
            big.gso_max_size.map(LinkAttribute::GsoMaxSize),
            big.gro_max_size.map(LinkAttribute::GroMaxSize),
            big.gso_ipv4_max_size.map(LinkAttribute::GsoIpv4MaxSize),
            big.gro_ipv4_max_size.map(LinkAttribute::GroIpv4MaxSize),
        ];
        std::iter::once(LinkAttribute::Mtu(self.mtu))
            .chain(sizes.into_iter().flatten())
            .collect()
    }

    /// The pair request: the peer is created straight in the pod namespace
    /// (`IFLA_NET_NS_FD`) under its final name — no temporary name, no rename.
    fn pair<'a>(&'a self, attributes: &'a [LinkAttribute], pod_netns: RawFd) -> Pair<'a> {
        Pair {
            name: self.host,
            peer: self.pod,
            peer_netns: Some(pod_netns),
            attributes,
        }
    }
}

/// Create the pair as `mode` says and return the link mode it was made in.
///
/// `auto` tries netkit and falls back to veth when the kernel does not know the link
/// kind (`EOPNOTSUPP`). `EEXIST` becomes `Exists` naming which side collided, and
/// nothing is deleted: the existing link is not ours.
pub fn create_pair(
    kernel: &mut dyn Kernel,
    mode: Mode,
    spec: &PairSpec<'_>,
) -> Result<LinkMode, ConnectorError> {
    let fd = kernel.pod_netns_fd().ok_or(ConnectorError::NoPodNetns)?;
    let unsupported = |e: &KernelError| e.is(libc::EOPNOTSUPP);
    let created = match mode {
        Mode::Veth => add(kernel, LinkMode::Veth, spec, fd),
        Mode::Netkit => match add(kernel, LinkMode::Netkit, spec, fd) {
            Err(e) if unsupported(&e) => return Err(ConnectorError::NetkitUnsupported),
            other => other,
        },
        Mode::Auto => match add(kernel, LinkMode::Netkit, spec, fd) {
            Err(e) if unsupported(&e) => {
                tracing::debug!("the kernel has no netkit; falling back to veth");
                add(kernel, LinkMode::Veth, spec, fd)
            }
            other => other,
        },
    };
    match created {
        Ok(mode) => Ok(mode),
        Err(e) if e.is(libc::EEXIST) => Err(which_exists(kernel, spec)),
        Err(e) => Err(e.into()),
    }
}

fn add(
    kernel: &mut dyn Kernel,
    mode: LinkMode,
    spec: &PairSpec<'_>,
    fd: RawFd,
) -> Result<LinkMode, KernelError> {
    let message = match mode {
        LinkMode::Netkit => netkit::link_message(spec, fd),
        LinkMode::Veth => veth::link_message(spec, fd),
    };
    kernel.add_link(message).map(|()| mode)
}

fn which_exists(kernel: &mut dyn Kernel, spec: &PairSpec<'_>) -> ConnectorError {
    match kernel.link_by_name(Ns::Host, spec.host) {
        Ok(Some(_)) => ConnectorError::Exists {
            name: spec.host.to_string(),
            ns: "host",
        },
        _ => ConnectorError::Exists {
            name: spec.pod.to_string(),
            ns: "pod",
        },
    }
}

/// CHECK: the host link is of the kind `mode` allows, with that kind's settings.
pub fn check_host_link(mode: Mode, link: &Link) -> Result<LinkMode, String> {
    let found = match &link.kind {
        Some(LinkKind::Netkit) => LinkMode::Netkit,
        Some(LinkKind::Veth) => LinkMode::Veth,
        Some(LinkKind::Other(kind)) => {
            return Err(format!(
                "{} is a {kind} link, not netkit or veth",
                link.name
            ));
        }
        None => return Err(format!("{} has no link kind", link.name)),
    };
    match (mode, found) {
        (Mode::Netkit, LinkMode::Veth) => Err(format!(
            "{} is veth but the configuration says mode netkit",
            link.name
        )),
        (Mode::Veth, LinkMode::Netkit) => Err(format!(
            "{} is netkit but the configuration says mode veth",
            link.name
        )),
        (_, LinkMode::Netkit) => netkit::check(link).map(|()| LinkMode::Netkit),
        (_, LinkMode::Veth) => Ok(LinkMode::Veth),
    }
}

/// Unit tests: the `IFLA_LINKINFO` of a link message.
#[cfg(test)]
fn link_infos(
    msg: &netlink_packet_route::link::LinkMessage,
) -> &[netlink_packet_route::link::LinkInfo] {
    msg.attributes
        .iter()
        .find_map(|a| {
            if let LinkAttribute::LinkInfo(i) = a {
                Some(i)
            } else {
                None
            }
        })
        .unwrap()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::netlink::fake::FakeKernel;

    fn id(c: &str, i: &str) -> EndpointId {
        EndpointId::new(c, i)
    }

    #[test]
    fn host_names_are_stable_short_and_distinct() {
        let a = host_ifname(&id("0123456789abcdef", "eth0"));
        assert_eq!(a, host_ifname(&id("0123456789abcdef", "eth0")));
        assert_eq!(a.len(), 13);
        assert!(a.starts_with("nk") && a[2..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, host_ifname(&id("0123456789abcdef", "eth1")));
        assert_ne!(a, host_ifname(&id("0123456789abcdee", "eth0")));
        // A long id still gives a valid interface name.
        assert_eq!(host_ifname(&id(&"f".repeat(200), "eth0")).len(), 13);
    }

    #[test]
    fn aliases_round_trip() {
        let a = alias("pods", &id("c1", "eth0")).unwrap();
        assert_eq!(a, "netkit-cni:pods:c1:eth0");
        assert_eq!(
            parse_alias(&a),
            Some(("pods".to_string(), id("c1", "eth0")))
        );
        assert_eq!(parse_alias("something else"), None);
        assert_eq!(parse_alias("netkit-cni:pods:c1"), None);
        assert_eq!(alias("pods", &id(&"c".repeat(300), "eth0")), None);
    }

    #[test]
    fn gateways_match_the_family() {
        assert_eq!(
            gateway_for("10.0.0.1".parse().unwrap()).to_string(),
            "169.254.1.1"
        );
        assert_eq!(
            gateway_for("fd00::1".parse().unwrap()).to_string(),
            "fe80::1"
        );
        assert!(is_gateway("fe80::1".parse().unwrap()));
    }

    fn spec() -> PairSpec<'static> {
        PairSpec {
            host: "nk0000000000a",
            pod: "eth0",
            mtu: 1450,
            big_tcp: BigTcp::default(),
        }
    }

    fn kernel(netkit: bool) -> FakeKernel {
        let mut k = FakeKernel::new();
        k.netkit_supported = netkit;
        k.add_pod("/run/netns/p");
        k.open_pod_netns(Path::new("/run/netns/p")).unwrap();
        k
    }

    #[test]
    fn auto_uses_netkit_when_the_kernel_has_it() {
        let mut k = kernel(true);
        assert_eq!(
            create_pair(&mut k, Mode::Auto, &spec()).unwrap(),
            LinkMode::Netkit
        );
        let host = k.link_by_name(Ns::Host, "nk0000000000a").unwrap().unwrap();
        assert_eq!(host.kind, Some(LinkKind::Netkit));
    }

    #[test]
    fn auto_falls_back_to_veth() {
        let mut k = kernel(false);
        assert_eq!(
            create_pair(&mut k, Mode::Auto, &spec()).unwrap(),
            LinkMode::Veth
        );
        let pod = k.link_by_name(Ns::Pod, "eth0").unwrap().unwrap();
        assert_eq!(pod.kind, Some(LinkKind::Veth));
        assert_eq!(pod.mtu, 1450);
    }

    #[test]
    fn netkit_mode_on_a_kernel_without_netkit_says_so() {
        let mut k = kernel(false);
        let err = create_pair(&mut k, Mode::Netkit, &spec()).unwrap_err();
        assert!(matches!(err, ConnectorError::NetkitUnsupported));
        assert!(err.to_string().contains("no netkit support"), "{err}");
        assert!(k.link_by_name(Ns::Host, "nk0000000000a").unwrap().is_none());
    }

    #[test]
    fn an_existing_name_is_reported_and_left_alone() {
        let mut k = kernel(true);
        create_pair(&mut k, Mode::Auto, &spec()).unwrap();
        let before = k.clone();
        let err = create_pair(&mut k, Mode::Auto, &spec()).unwrap_err();
        assert!(
            matches!(&err, ConnectorError::Exists { ns: "host", .. }),
            "{err}"
        );
        assert_eq!(k.host, before.host);
        let other = PairSpec {
            host: "nk0000000000b",
            ..spec()
        };
        let err = create_pair(&mut k, Mode::Veth, &other).unwrap_err();
        assert!(
            matches!(&err, ConnectorError::Exists { ns: "pod", .. }),
            "{err}"
        );
    }

    #[test]
    fn check_accepts_what_create_made() {
        for (supported, mode) in [
            (true, Mode::Auto),
            (true, Mode::Netkit),
            (false, Mode::Veth),
        ] {
            let mut k = kernel(supported);
            let made = create_pair(&mut k, mode, &spec()).unwrap();
            let host = k.link_by_name(Ns::Host, "nk0000000000a").unwrap().unwrap();
            assert_eq!(check_host_link(mode, &host), Ok(made));
        }
        let mut k = kernel(false);
        create_pair(&mut k, Mode::Veth, &spec()).unwrap();
        let host = k.link_by_name(Ns::Host, "nk0000000000a").unwrap().unwrap();
        assert!(
            check_host_link(Mode::Netkit, &host)
                .unwrap_err()
                .contains("mode netkit")
        );
    }
}
