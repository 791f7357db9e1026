//! Links: what the kernel reports about one (kind, MTU, MAC, netkit settings), the
//! pair request that makes a netkit or veth pair in one message, and the link verbs.

use std::os::fd::RawFd;

use futures::TryStreamExt as _;
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoNetkit, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
    NetkitMode, NetkitPolicy,
};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec};

use crate::error::{KernelError, KernelResult};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkKind {
    Netkit,
    Veth,
    Other(String),
}

/// `IFLA_NETKIT_*` as the kernel reports them for one end: each end reports its own
/// policy as `policy` and the other end's as `peer_policy`.
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

impl From<LinkMessage> for Link {
    fn from(msg: LinkMessage) -> Link {
        let mut link = Link {
            index: msg.header.index,
            up: msg.header.flags.contains(LinkFlags::Up),
            ..Link::default()
        };
        for attr in msg.attributes {
            match attr {
                LinkAttribute::IfName(name) => link.name = name,
                LinkAttribute::Address(mac) => link.mac = Some(mac),
                LinkAttribute::Mtu(mtu) => link.mtu = mtu,
                LinkAttribute::IfAlias(alias) => link.alias = Some(alias),
                LinkAttribute::Link(peer) => link.peer_index = Some(peer),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        match info {
                            LinkInfo::Kind(InfoKind::Netkit) => link.kind = Some(LinkKind::Netkit),
                            LinkInfo::Kind(InfoKind::Veth) => link.kind = Some(LinkKind::Veth),
                            LinkInfo::Kind(other) => {
                                link.kind = Some(LinkKind::Other(other.to_string()))
                            }
                            LinkInfo::Data(InfoData::Netkit(attrs)) => {
                                link.netkit = Some(NetkitInfo::from_attributes(&attrs))
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }
}

impl NetkitInfo {
    /// Decode `IFLA_INFO_DATA` of a netkit link; a setting the kernel left out reads as
    /// `Other(u32::MAX)` (or not primary), which no check accepts.
    pub fn from_attributes(attrs: &[InfoNetkit]) -> NetkitInfo {
        let mut info = NetkitInfo {
            mode: NetkitMode::Other(u32::MAX),
            primary: false,
            policy: NetkitPolicy::Other(u32::MAX),
            peer_policy: NetkitPolicy::Other(u32::MAX),
        };
        for attr in attrs {
            match attr {
                InfoNetkit::Mode(mode) => info.mode = *mode,
                InfoNetkit::Primary(primary) => info.primary = *primary,
                InfoNetkit::Policy(policy) => info.policy = *policy,
                InfoNetkit::PeerPolicy(policy) => info.peer_policy = *policy,
                _ => {}
            }
        }
        info
    }
}

/// A pair of linked devices made by one `RTM_NEWLINK`: `name` in the namespace of the
/// socket that sends it, `peer` straight in `peer_netns` (`IFLA_NET_NS_FD`) under its
/// final name — no temporary name, no rename, no move afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pair<'a> {
    pub name: &'a str,
    pub peer: &'a str,
    /// The peer's namespace; `None` creates it beside `name`.
    pub peer_netns: Option<RawFd>,
    /// Set on both ends, after the name (MTU, GSO/GRO sizes, …).
    pub attributes: &'a [LinkAttribute],
}

impl Pair<'_> {
    /// A netkit pair: `name` is the primary, with `policy`; the peer gets `peer_policy`.
    pub fn netkit(
        &self,
        mode: NetkitMode,
        policy: NetkitPolicy,
        peer_policy: NetkitPolicy,
    ) -> LinkMessage {
        let info = vec![
            InfoNetkit::Mode(mode),
            InfoNetkit::Policy(policy),
            InfoNetkit::PeerPolicy(peer_policy),
            InfoNetkit::Peer(self.peer_message()),
        ];
        self.end(
            LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Netkit),
            self.name,
        )
        .set_info_data(InfoData::Netkit(info))
        .build()
    }

    /// A veth pair.
    pub fn veth(&self) -> LinkMessage {
        self.end(
            LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Veth),
            self.name,
        )
        .set_info_data(InfoData::Veth(InfoVeth::Peer(self.peer_message())))
        .build()
    }

    fn end(
        &self,
        builder: LinkMessageBuilder<LinkUnspec>,
        name: &str,
    ) -> LinkMessageBuilder<LinkUnspec> {
        self.attributes
            .iter()
            .cloned()
            .fold(builder.name(name), |b, attr| b.append_extra_attribute(attr))
    }

    fn peer_message(&self) -> LinkMessage {
        let peer = self.end(LinkMessageBuilder::<LinkUnspec>::new(), self.peer);
        match self.peer_netns {
            Some(fd) => peer.setns_by_fd(fd),
            None => peer,
        }
        .build()
    }
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

/// The name a link message carries, for naming the operation.
fn name_of(message: &LinkMessage) -> Option<&str> {
    message.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(name) => Some(name.as_str()),
        _ => None,
    })
}

/// `RTM_NEWLINK` with `NLM_F_CREATE | NLM_F_EXCL`: create a link (a whole pair, for
/// [`Pair`] messages).
pub async fn add(handle: &Handle, message: LinkMessage) -> KernelResult<()> {
    let op = match name_of(&message) {
        Some(name) => format!("create link {name}"),
        None => "create a link".to_string(),
    };
    handle
        .link()
        .add(message)
        .execute()
        .await
        .map_err(|e| KernelError::from_netlink(op, e))
}

/// `RTM_NEWLINK` without `NLM_F_CREATE`: change an existing link's kind-specific
/// settings (the kernel's `changelink`, like `ip link set … type netkit …`).
pub async fn change(handle: &Handle, message: LinkMessage) -> KernelResult<()> {
    let op = format!("change link #{}", message.header.index);
    handle
        .link()
        .change(message)
        .execute()
        .await
        .map_err(|e| KernelError::from_netlink(op, e))
}

/// The link named `name`; `None` when there is none.
pub async fn by_name(handle: &Handle, name: &str) -> KernelResult<Option<Link>> {
    let request = handle.link().get().match_name(name);
    found(request.execute().try_next().await, || {
        format!("look up link {name}")
    })
}

/// The link with ifindex `index`; `None` when there is none.
pub async fn by_index(handle: &Handle, index: u32) -> KernelResult<Option<Link>> {
    let request = handle.link().get().match_index(index);
    found(request.execute().try_next().await, || {
        format!("look up link #{index}")
    })
}

fn found(
    answer: Result<Option<LinkMessage>, rtnetlink::Error>,
    op: impl FnOnce() -> String,
) -> KernelResult<Option<Link>> {
    match answer {
        Ok(msg) => Ok(msg.map(Link::from)),
        Err(e) => {
            let e = KernelError::from_netlink(op(), e);
            if e.is_not_found() { Ok(None) } else { Err(e) }
        }
    }
}

/// Every link of the namespace.
pub async fn list(handle: &Handle) -> KernelResult<Vec<Link>> {
    let msgs: Vec<LinkMessage> = handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|e| KernelError::from_netlink("list links", e))?;
    Ok(msgs.into_iter().map(Link::from).collect())
}

/// `RTM_DELLINK` by ifindex (a pair goes with either end). A link already gone is an
/// error for which [`KernelError::is_not_found`] holds.
pub async fn delete(handle: &Handle, index: u32) -> KernelResult<()> {
    handle
        .link()
        .del(index)
        .execute()
        .await
        .map_err(|e| KernelError::from_netlink(format!("delete link #{index}"), e))
}

pub async fn set_up(handle: &Handle, index: u32) -> KernelResult<()> {
    let msg = LinkUnspec::new_with_index(index).up().build();
    set(handle, msg, || format!("set link #{index} up")).await
}

pub async fn set_down(handle: &Handle, index: u32) -> KernelResult<()> {
    let msg = LinkUnspec::new_with_index(index).down().build();
    set(handle, msg, || format!("set link #{index} down")).await
}

pub async fn set_alias(handle: &Handle, index: u32, alias: &str) -> KernelResult<()> {
    let msg = LinkUnspec::new_with_index(index).alias(alias).build();
    set(handle, msg, || format!("set the alias of link #{index}")).await
}

/// `RTM_SETLINK` with `msg`.
async fn set(handle: &Handle, msg: LinkMessage, op: impl FnOnce() -> String) -> KernelResult<()> {
    handle
        .link()
        .set(msg)
        .execute()
        .await
        .map_err(|e| KernelError::from_netlink(op(), e))
}

#[cfg(test)]
mod tests {
    use netlink_packet_route::link::LinkHeader;

    use super::*;

    fn infos(msg: &LinkMessage) -> &[LinkInfo] {
        msg.attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::LinkInfo(i) => Some(i.as_slice()),
                _ => None,
            })
            .unwrap()
    }

    #[test]
    fn macs_format_as_lower_hex() {
        assert_eq!(
            format_mac(&[0x02, 0xab, 0, 1, 2, 0xff]),
            "02:ab:00:01:02:ff"
        );
        assert_eq!(meaningful_mac(Some(&[0; 6])), None);
        assert_eq!(meaningful_mac(None), None);
        assert_eq!(
            meaningful_mac(Some(&[2, 0, 0, 0, 0, 1])),
            Some(&[2u8, 0, 0, 0, 0, 1][..])
        );
    }

    #[test]
    fn a_netkit_pair_is_one_message_with_the_peer_inside() {
        let attrs = [LinkAttribute::Mtu(1400), LinkAttribute::GsoMaxSize(65_536)];
        let pair = Pair {
            name: "nk1",
            peer: "eth0",
            peer_netns: Some(42),
            attributes: &attrs,
        };
        let msg = pair.netkit(NetkitMode::L3, NetkitPolicy::Pass, NetkitPolicy::Drop);
        assert_eq!(
            msg.attributes[..3],
            [
                LinkAttribute::IfName("nk1".into()),
                LinkAttribute::Mtu(1400),
                LinkAttribute::GsoMaxSize(65_536)
            ]
        );
        assert!(infos(&msg).contains(&LinkInfo::Kind(InfoKind::Netkit)));
        let Some(LinkInfo::Data(InfoData::Netkit(data))) = infos(&msg).get(1) else {
            panic!("no netkit data in {msg:?}");
        };
        assert_eq!(
            data[..3],
            [
                InfoNetkit::Mode(NetkitMode::L3),
                InfoNetkit::Policy(NetkitPolicy::Pass),
                InfoNetkit::PeerPolicy(NetkitPolicy::Drop)
            ]
        );
        let Some(InfoNetkit::Peer(peer)) = data.get(3) else {
            panic!("no peer in {data:?}");
        };
        assert_eq!(
            peer.attributes,
            [
                LinkAttribute::IfName("eth0".into()),
                LinkAttribute::Mtu(1400),
                LinkAttribute::GsoMaxSize(65_536),
                LinkAttribute::NetNsFd(42)
            ]
        );
    }

    #[test]
    fn a_veth_pair_without_a_namespace_keeps_the_peer_here() {
        let pair = Pair {
            name: "a",
            peer: "b",
            peer_netns: None,
            attributes: &[],
        };
        let msg = pair.veth();
        assert!(infos(&msg).contains(&LinkInfo::Kind(InfoKind::Veth)));
        let peer = infos(&msg)
            .iter()
            .find_map(|i| match i {
                LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))) => Some(p),
                _ => None,
            })
            .unwrap();
        assert_eq!(peer.attributes, [LinkAttribute::IfName("b".into())]);
    }

    #[test]
    fn link_messages_decode_with_their_netkit_settings() {
        let mut msg = LinkMessage::default();
        msg.header = LinkHeader {
            index: 7,
            flags: LinkFlags::Up,
            ..LinkHeader::default()
        };
        msg.attributes = vec![
            LinkAttribute::IfName("nk7".into()),
            LinkAttribute::Mtu(1450),
            LinkAttribute::Link(8),
            LinkAttribute::IfAlias("netkit-cni:n:c:eth0".into()),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Netkit),
                LinkInfo::Data(InfoData::Netkit(vec![
                    InfoNetkit::Primary(true),
                    InfoNetkit::Mode(NetkitMode::L3),
                    InfoNetkit::Policy(NetkitPolicy::Pass),
                    InfoNetkit::PeerPolicy(NetkitPolicy::Drop),
                ])),
            ]),
        ];
        let link = Link::from(msg);
        assert_eq!(
            link,
            Link {
                index: 7,
                name: "nk7".into(),
                kind: Some(LinkKind::Netkit),
                mac: None,
                mtu: 1450,
                up: true,
                alias: Some("netkit-cni:n:c:eth0".into()),
                peer_index: Some(8),
                netkit: Some(NetkitInfo {
                    mode: NetkitMode::L3,
                    primary: true,
                    policy: NetkitPolicy::Pass,
                    peer_policy: NetkitPolicy::Drop,
                }),
            }
        );
    }

    #[test]
    fn missing_netkit_settings_never_look_right() {
        let info = NetkitInfo::from_attributes(&[InfoNetkit::Mode(NetkitMode::L2)]);
        assert_eq!(info.mode, NetkitMode::L2);
        assert!(!info.primary);
        assert_eq!(info.policy, NetkitPolicy::Other(u32::MAX));
        assert_eq!(info.peer_policy, NetkitPolicy::Other(u32::MAX));
    }
}
