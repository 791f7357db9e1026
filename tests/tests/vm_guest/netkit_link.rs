//! netkit devices through rtnetlink, as the plugin creates them: what the kernel reports back
//! for each end of a pair, and what it refuses.

use std::sync::atomic::{AtomicU32, Ordering};

use futures::TryStreamExt;
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoNetkit, LinkAttribute, LinkInfo, LinkMessage, NetkitMode, NetkitPolicy,
};
use rtnetlink::{Handle, LinkMessageBuilder, LinkNetkit};

use crate::in_vm;

/// An rtnetlink handle with its own single-threaded runtime, so tests (and `Drop` guards) are
/// plain synchronous code.
struct Netlink {
    rt: tokio::runtime::Runtime,
    handle: Handle,
}

impl Netlink {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let handle = rt.block_on(async {
            let (connection, handle, _) = rtnetlink::new_connection().expect("netlink socket");
            tokio::spawn(connection);
            handle
        });
        Self { rt, handle }
    }

    fn add(&self, message: LinkMessage) -> Result<(), rtnetlink::Error> {
        self.rt.block_on(self.handle.link().add(message).execute())
    }

    /// RTM_NEWLINK without NLM_F_CREATE: the kernel's `changelink` (like `ip link set`).
    fn change(&self, message: LinkMessage) -> Result<(), rtnetlink::Error> {
        self.rt
            .block_on(self.handle.link().change(message).execute())
    }

    /// The link named `name` (a "get" request), or the error the kernel gave.
    fn get(&self, name: &str) -> Result<LinkMessage, rtnetlink::Error> {
        self.rt.block_on(async {
            let mut links = self.handle.link().get().match_name(name).execute();
            match links.try_next().await? {
                Some(link) => Ok(link),
                None => panic!("link get {name}: empty answer"),
            }
        })
    }

    /// Every link (a dump request).
    fn dump(&self) -> Vec<LinkMessage> {
        self.rt
            .block_on(self.handle.link().get().execute().try_collect())
            .expect("link dump")
    }

    fn delete(&self, name: &str) -> Result<(), rtnetlink::Error> {
        let index = self.get(name)?.header.index;
        self.rt.block_on(self.handle.link().del(index).execute())
    }
}

/// Deletes the link (and with a netkit primary, its peer) when dropped, also on panic.
struct LinkGuard<'a> {
    nl: &'a Netlink,
    name: String,
}

impl Drop for LinkGuard<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.nl.delete(&self.name) {
            eprintln!("cleanup: deleting link {}: {e}", self.name);
        }
    }
}

/// A name no other test (or earlier run) uses, short enough for IFNAMSIZ with a suffix.
fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}x{n}", std::process::id() % 100_000)
}

/// The netkit-relevant parts of a link message.
#[derive(Debug, Default, PartialEq, Eq, Clone)]
struct NetkitView {
    name: String,
    index: u32,
    /// IFLA_LINK: for netkit, the other end's ifindex.
    link: Option<u32>,
    kind: Option<InfoKind>,
    primary: Option<bool>,
    mode: Option<NetkitMode>,
    policy: Option<NetkitPolicy>,
    peer_policy: Option<NetkitPolicy>,
}

fn view(message: &LinkMessage) -> NetkitView {
    let mut v = NetkitView {
        index: message.header.index,
        ..NetkitView::default()
    };
    for attr in &message.attributes {
        match attr {
            LinkAttribute::IfName(name) => v.name = name.clone(),
            LinkAttribute::Link(index) => v.link = Some(*index),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(kind) => v.kind = Some(kind.clone()),
                        LinkInfo::Data(InfoData::Netkit(data)) => {
                            for item in data {
                                match item {
                                    InfoNetkit::Primary(p) => v.primary = Some(*p),
                                    InfoNetkit::Mode(m) => v.mode = Some(*m),
                                    InfoNetkit::Policy(p) => v.policy = Some(*p),
                                    InfoNetkit::PeerPolicy(p) => v.peer_policy = Some(*p),
                                    _ => {}
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    v
}

/// The link `name` as a get request reports it, checked against what a dump reports.
fn read_back(nl: &Netlink, name: &str) -> NetkitView {
    let got = view(
        &nl.get(name)
            .unwrap_or_else(|e| panic!("link get {name}: {e}")),
    );
    let dumped: Vec<NetkitView> = nl
        .dump()
        .iter()
        .map(view)
        .filter(|v| v.name == name)
        .collect();
    assert_eq!(
        dumped,
        vec![got.clone()],
        "link dump and link get disagree about {name}"
    );
    got
}

fn netkit_pair(primary: &str, peer: &str) -> LinkMessageBuilder<LinkNetkit> {
    LinkNetkit::new(primary, peer, NetkitMode::L3)
}

/// An L3 pair with primary policy pass and peer policy drop, as the plugin creates it;
/// the guard deletes it.
fn pass_drop_pair<'a>(nl: &'a Netlink, prefix: &str) -> (String, String, LinkGuard<'a>) {
    let primary = unique_name(prefix);
    let peer = format!("{primary}p");
    nl.add(
        netkit_pair(&primary, &peer)
            .policy(NetkitPolicy::Pass)
            .peer_policy(NetkitPolicy::Drop)
            .build(),
    )
    .unwrap_or_else(|e| panic!("creating netkit pair {primary}/{peer}: {e}"));
    let guard = LinkGuard {
        nl,
        name: primary.clone(),
    };
    (primary, peer, guard)
}

/// The errno of a netlink error (positive), or a panic describing what came back instead.
fn errno(result: Result<(), rtnetlink::Error>, what: &str) -> i32 {
    match result {
        Ok(()) => panic!("{what}: the kernel accepted it"),
        Err(rtnetlink::Error::NetlinkError(e)) => -e.raw_code(),
        Err(e) => panic!("{what}: expected a netlink error, got {e}"),
    }
}

#[test]
fn netkit_pair_reports_mode_and_policies_on_both_ends() {
    if !in_vm() {
        return;
    }
    let nl = Netlink::new();
    let (primary, peer, _guard) = pass_drop_pair(&nl, "nkp");

    let p = read_back(&nl, &primary);
    let q = read_back(&nl, &peer);
    println!("primary: {p:?}\npeer:    {q:?}");

    assert_eq!(p.kind, Some(InfoKind::Netkit), "primary kind");
    assert_eq!(q.kind, Some(InfoKind::Netkit), "peer kind");
    assert_eq!(p.mode, Some(NetkitMode::L3), "primary mode");
    assert_eq!(q.mode, Some(NetkitMode::L3), "peer mode");
    assert_eq!(p.primary, Some(true), "the primary reports itself primary");
    assert_eq!(
        q.primary,
        Some(false),
        "the peer reports itself not primary"
    );
    // Each end reports its own policy as IFLA_NETKIT_POLICY and the other end's as
    // IFLA_NETKIT_PEER_POLICY.
    assert_eq!(p.policy, Some(NetkitPolicy::Pass), "primary's own policy");
    assert_eq!(
        p.peer_policy,
        Some(NetkitPolicy::Drop),
        "peer policy seen from the primary"
    );
    assert_eq!(q.policy, Some(NetkitPolicy::Drop), "peer's own policy");
    assert_eq!(
        q.peer_policy,
        Some(NetkitPolicy::Pass),
        "primary policy seen from the peer"
    );
    assert_eq!(p.link, Some(q.index), "primary's IFLA_LINK is the peer");
    assert_eq!(q.link, Some(p.index), "peer's IFLA_LINK is the primary");
}

#[test]
fn kernel_enforces_netkit_policy_rules() {
    if !in_vm() {
        return;
    }
    let nl = Netlink::new();

    // Only pass and drop are valid default policies; redirect is a BPF verdict, not a policy.
    let bad = unique_name("nkb");
    let err = errno(
        nl.add(
            netkit_pair(&bad, &format!("{bad}p"))
                .policy(NetkitPolicy::Pass)
                .peer_policy(NetkitPolicy::Redirect)
                .build(),
        ),
        "a netkit pair with peer policy redirect",
    );
    assert_eq!(err, libc::EINVAL, "errno for peer policy redirect");
    assert!(nl.get(&bad).is_err(), "{bad} exists after a refused create");

    let (primary, peer, _guard) = pass_drop_pair(&nl, "nkc");
    let p_index = read_back(&nl, &primary).index;
    let q_index = read_back(&nl, &peer).index;

    // The peer (the pod's end) cannot change the pair's settings, e.g. lift its own drop.
    let err = errno(
        nl.change(
            LinkMessageBuilder::<LinkNetkit>::new_with_info_kind(InfoKind::Netkit)
                .index(q_index)
                .policy(NetkitPolicy::Pass)
                .build(),
        ),
        "changing the policy through the peer",
    );
    assert_eq!(err, libc::EACCES, "errno for a change through the peer");
    assert_eq!(
        read_back(&nl, &peer).policy,
        Some(NetkitPolicy::Drop),
        "peer policy after a refused change"
    );

    // The mode is fixed at creation.
    let err = errno(
        nl.change(
            LinkMessageBuilder::<LinkNetkit>::new_with_info_kind(InfoKind::Netkit)
                .index(p_index)
                .mode(NetkitMode::L2)
                .build(),
        ),
        "changing the mode",
    );
    assert_eq!(err, libc::EACCES, "errno for a mode change");

    // Through the primary, the peer's policy can be changed.
    nl.change(
        LinkMessageBuilder::<LinkNetkit>::new_with_info_kind(InfoKind::Netkit)
            .index(p_index)
            .peer_policy(NetkitPolicy::Pass)
            .build(),
    )
    .unwrap_or_else(|e| panic!("changing the peer policy through the primary: {e}"));
    let q = read_back(&nl, &peer);
    assert_eq!(
        q.policy,
        Some(NetkitPolicy::Pass),
        "peer policy after the change"
    );
    assert_eq!(
        q.mode,
        Some(NetkitMode::L3),
        "mode after the refused change"
    );
}
