//! netkit devices through rtnetlink, as the plugin creates them: what the kernel reports back
//! for each end of a pair, and what it refuses.

use std::sync::atomic::{AtomicU32, Ordering};

use netkit_netlink::link::{self, Link, LinkKind, NetkitInfo, Pair};
use netkit_netlink::{KernelError, KernelResult};
use netlink_packet_route::link::{InfoKind, LinkMessage, NetkitMode, NetkitPolicy};
use rtnetlink::{Handle, LinkMessageBuilder, LinkNetkit};

use crate::in_vm;

/// A netlink connection with its own single-threaded runtime, so tests (and `Drop` guards)
/// are plain synchronous code.
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
        let handle = rt
            .block_on(async { netkit_netlink::connect() })
            .expect("netlink socket");
        Self { rt, handle }
    }

    fn add(&self, message: LinkMessage) -> KernelResult<()> {
        self.rt.block_on(link::add(&self.handle, message))
    }

    /// RTM_NEWLINK without NLM_F_CREATE: the kernel's `changelink` (like `ip link set`).
    fn change(&self, message: LinkMessage) -> KernelResult<()> {
        self.rt.block_on(link::change(&self.handle, message))
    }

    /// The link named `name` (a "get" request); `None` when there is none.
    fn get(&self, name: &str) -> KernelResult<Option<Link>> {
        self.rt.block_on(link::by_name(&self.handle, name))
    }

    /// Every link (a dump request).
    fn dump(&self) -> Vec<Link> {
        self.rt
            .block_on(link::list(&self.handle))
            .expect("link dump")
    }

    fn delete(&self, name: &str) -> KernelResult<()> {
        match self.get(name)? {
            Some(found) => self.rt.block_on(link::delete(&self.handle, found.index)),
            None => Err(KernelError::from_errno(
                format!("delete link {name}"),
                libc::ENODEV,
            )),
        }
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

/// The link `name` as a get request reports it, checked against what a dump reports.
fn read_back(nl: &Netlink, name: &str) -> Link {
    let got = nl
        .get(name)
        .unwrap_or_else(|e| panic!("link get {name}: {e}"))
        .unwrap_or_else(|| panic!("link get {name}: no such link"));
    let dumped: Vec<Link> = nl.dump().into_iter().filter(|l| l.name == name).collect();
    assert_eq!(
        dumped,
        vec![got.clone()],
        "link dump and link get disagree about {name}"
    );
    got
}

/// The netkit settings a link reports (a panic if it reports none).
fn netkit_of(link: &Link) -> NetkitInfo {
    link.netkit
        .unwrap_or_else(|| panic!("{} reports no netkit settings: {link:?}", link.name))
}

/// An L3 netkit pair request with these policies, both ends in this namespace.
fn netkit_pair(
    primary: &str,
    peer: &str,
    policy: NetkitPolicy,
    peer_policy: NetkitPolicy,
) -> LinkMessage {
    Pair {
        name: primary,
        peer,
        peer_netns: None,
        attributes: &[],
    }
    .netkit(NetkitMode::L3, policy, peer_policy)
}

/// An L3 pair with primary policy pass and peer policy drop, as the plugin creates it;
/// the guard deletes it.
fn pass_drop_pair<'a>(nl: &'a Netlink, prefix: &str) -> (String, String, LinkGuard<'a>) {
    let primary = unique_name(prefix);
    let peer = format!("{primary}p");
    nl.add(netkit_pair(
        &primary,
        &peer,
        NetkitPolicy::Pass,
        NetkitPolicy::Drop,
    ))
    .unwrap_or_else(|e| panic!("creating netkit pair {primary}/{peer}: {e}"));
    let guard = LinkGuard {
        nl,
        name: primary.clone(),
    };
    (primary, peer, guard)
}

/// The errno of a refused request (positive), or a panic describing what came back instead.
fn errno(result: KernelResult<()>, what: &str) -> i32 {
    match result {
        Ok(()) => panic!("{what}: the kernel accepted it"),
        Err(e) => e
            .errno
            .unwrap_or_else(|| panic!("{what}: expected a netlink error, got {e}")),
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

    assert_eq!(p.kind, Some(LinkKind::Netkit), "primary kind");
    assert_eq!(q.kind, Some(LinkKind::Netkit), "peer kind");
    let (pn, qn) = (netkit_of(&p), netkit_of(&q));
    assert_eq!(pn.mode, NetkitMode::L3, "primary mode");
    assert_eq!(qn.mode, NetkitMode::L3, "peer mode");
    assert!(pn.primary, "the primary reports itself primary");
    assert!(!qn.primary, "the peer reports itself not primary");
    // Each end reports its own policy as IFLA_NETKIT_POLICY and the other end's as
    // IFLA_NETKIT_PEER_POLICY.
    assert_eq!(pn.policy, NetkitPolicy::Pass, "primary's own policy");
    assert_eq!(
        pn.peer_policy,
        NetkitPolicy::Drop,
        "peer policy seen from the primary"
    );
    assert_eq!(qn.policy, NetkitPolicy::Drop, "peer's own policy");
    assert_eq!(
        qn.peer_policy,
        NetkitPolicy::Pass,
        "primary policy seen from the peer"
    );
    assert_eq!(
        p.peer_index,
        Some(q.index),
        "primary's IFLA_LINK is the peer"
    );
    assert_eq!(
        q.peer_index,
        Some(p.index),
        "peer's IFLA_LINK is the primary"
    );
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
        nl.add(netkit_pair(
            &bad,
            &format!("{bad}p"),
            NetkitPolicy::Pass,
            NetkitPolicy::Redirect,
        )),
        "a netkit pair with peer policy redirect",
    );
    assert_eq!(err, libc::EINVAL, "errno for peer policy redirect");
    assert_eq!(
        nl.get(&bad)
            .unwrap_or_else(|e| panic!("link get {bad}: {e}")),
        None,
        "{bad} exists after a refused create"
    );

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
        netkit_of(&read_back(&nl, &peer)).policy,
        NetkitPolicy::Drop,
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
    let q = netkit_of(&read_back(&nl, &peer));
    assert_eq!(q.policy, NetkitPolicy::Pass, "peer policy after the change");
    assert_eq!(q.mode, NetkitMode::L3, "mode after the refused change");
}
