//! The pod datapath. Three programs, all `sched_cls` so one object serves netkit
//! (`BPF_NETKIT_PEER` / `BPF_NETKIT_PRIMARY`) and tcx (veth fallback, uplink):
//!
//! - `nk_pod_egress`: what a pod sends. Drops spoofed sources, short-cuts traffic to
//!   another local pod, hands everything else to the host stack — including packets of
//!   flows the stack translated (Service DNAT, NodePort, masquerade), which only the
//!   stack can un-translate.
//! - `nk_uplink_ingress`: what arrives from the wire. Traffic from another node's pod to
//!   a local pod goes straight into the pod with `bpf_redirect_peer`, skipping the host
//!   stack, unless its flow was translated; traffic from anything that is not a pod goes
//!   through the stack, as the pod's replies to it do.
//!
//! Whether the stack translated a flow is asked of the kernel's conntrack (`conntrack.rs`,
//! a kfunc). Each program that asks has a `_noct` twin for kernels where the kfunc cannot
//! be resolved: it sends every pod-bound packet it cannot vouch for to the stack, which
//! is always correct, just not fast. The agent loads one of the two.
//!
//! netkit's return codes (`NETKIT_PASS` 0, `NETKIT_DROP` 2, `NETKIT_REDIRECT` 7) equal
//! tc's (`TC_ACT_OK`, `TC_ACT_SHOT`, `TC_ACT_REDIRECT`), so one set of programs serves both.
#![no_std]
#![no_main]

mod conntrack;
mod forward;
mod packet;

use core::mem::MaybeUninit;

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    helpers::generated::{bpf_redirect, bpf_redirect_peer},
    macros::{classifier, map},
    maps::{HashMap, LpmTrie, PerCpuArray, lpm_trie::Key},
    programs::TcContext,
};
use netkit_common::{
    ENDPOINT_F_NETKIT, ENDPOINT_F_VETH, EndpointKey, EndpointValue, MAX_ENDPOINT_ADDRS,
    MAX_REMOTE_ROUTES, RemoteRoute, RouteAddr, STAT_COUNT, Stat,
};
use packet::{Addresses, Flow, Parsed};

/// Per-CPU decision counters, pinned by name so every loaded instance shares them.
#[map]
static NK_STATS: PerCpuArray<u64> = PerCpuArray::pinned(STAT_COUNT, 0);

/// Every local pod address → the endpoint that owns it.
#[map]
static NK_ENDPOINTS: HashMap<EndpointKey, EndpointValue> = HashMap::pinned(MAX_ENDPOINT_ADDRS, 0);

/// Other nodes' pod CIDRs: the destinations pod egress routes itself instead of passing
/// them to the host stack. Anything else not a local pod — node addresses, Services,
/// the Internet — is the stack's (kube-proxy, masquerade).
#[map]
static NK_REMOTE_ROUTES: LpmTrie<RouteAddr, RemoteRoute> = LpmTrie::pinned(MAX_REMOTE_ROUTES, 0);

/// May this packet, addressed to a local pod, skip the host stack? Not when the stack
/// translated its flow: the pod would see addresses it never talked to. `CONNTRACK`
/// says whether this program instance can ask conntrack; without it only flows NAT
/// never touches are vouched for.
#[inline(always)]
fn stack_must_handle<const CONNTRACK: bool>(ctx: &TcContext, addrs: &Addresses) -> Option<Stat> {
    match addrs.flow {
        Flow::Untranslatable => None,
        Flow::Ports if CONNTRACK => {
            conntrack::translated(ctx, addrs).then_some(Stat::PassTranslated)
        }
        Flow::Ports | Flow::Unverifiable => Some(Stat::PassUnverified),
    }
}

/// The host-side ifindex of the pod whose packet this is. Both pod-egress hooks run with
/// `skb->dev` on the host side: netkit's xmit switches `skb->dev` to the peer (the
/// primary) before it runs the `BPF_NETKIT_PEER` programs, and tcx ingress of a host veth
/// runs on that veth. So one shared program instance serves every pod; no per-pod
/// constant has to be baked in (which would cost an ELF load per pod start).
#[inline(always)]
fn host_ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: `skb` is the context pointer the kernel passed in; `ifindex` is readable.
    unsafe { (*ctx.skb.skb).ifindex }
}

#[inline(always)]
fn count(stat: Stat) {
    if let Some(counter) = NK_STATS.get_ptr_mut(stat.index()) {
        // SAFETY: per-CPU slot, so no other writer; the pointer comes from the map.
        unsafe { *counter += 1 };
    }
}

#[inline(always)]
fn lookup_endpoint(key: &EndpointKey) -> Option<&EndpointValue> {
    // SAFETY: hash map values stay valid for the program's run (RCU) even when user
    // space deletes the entry meanwhile; we only read them.
    unsafe { NK_ENDPOINTS.get(key) }
}

#[classifier]
pub fn nk_pod_egress(ctx: TcContext) -> i32 {
    pod_egress::<true>(&ctx)
}

#[classifier]
pub fn nk_pod_egress_noct(ctx: TcContext) -> i32 {
    pod_egress::<false>(&ctx)
}

#[inline(always)]
fn pod_egress<const CONNTRACK: bool>(ctx: &TcContext) -> i32 {
    let mut slot = MaybeUninit::uninit();
    let addrs = Addresses::init(&mut slot);
    match packet::parse(ctx, addrs) {
        Parsed::Ip => pod_egress_ip::<CONNTRACK>(ctx, addrs),
        // ARP, neighbour discovery and MLD from a veth pod are link-local control
        // traffic for the host stack (it answers for the gateway); anything else
        // non-IP has no business leaving an L3 pod.
        Parsed::LinkControl | Parsed::Arp => {
            count(Stat::Pass);
            TC_ACT_OK
        }
        Parsed::Other | Parsed::Truncated => {
            count(Stat::DropPolicy);
            TC_ACT_SHOT
        }
    }
}

#[inline(always)]
fn pod_egress_ip<const CONNTRACK: bool>(ctx: &TcContext, addrs: &Addresses) -> i32 {
    // The source must be one of this pod's own addresses: registered, and registered to
    // the host-side device the packet came through.
    let own = match lookup_endpoint(&addrs.src) {
        Some(src) if src.ifindex == host_ifindex(ctx) => src.flags,
        _ => {
            count(Stat::DropSpoof);
            return TC_ACT_SHOT;
        }
    };
    let Some(dst) = lookup_endpoint(&addrs.dst) else {
        return pod_egress_off_node::<CONNTRACK>(ctx, addrs);
    };
    if let Some(stat) = stack_must_handle::<CONNTRACK>(ctx, addrs) {
        count(stat);
        return TC_ACT_OK;
    }
    if dst.flags & own & ENDPOINT_F_NETKIT != 0 {
        // Into the destination's primary: its xmit hands the packet to its peer, in
        // the destination pod, after running that pod's ingress program.
        count(Stat::Redirect);
        // SAFETY: helper call with plain integer arguments.
        return unsafe { bpf_redirect(dst.ifindex, 0) } as i32;
    }
    if dst.flags & own & ENDPOINT_F_VETH != 0 {
        if packet::rewrite_macs(ctx, dst).is_err() {
            count(Stat::DropPolicy);
            return TC_ACT_SHOT;
        }
        // At tcx ingress of a host-side veth, redirect_peer lands the packet straight
        // in the other pod's eth0 without a trip through the backlog queue.
        count(Stat::RedirectPeer);
        // SAFETY: helper call with plain integer arguments.
        return unsafe { bpf_redirect_peer(dst.ifindex, 0) } as i32;
    }
    // A destination wired in the other mode (only during a migration): let the
    // stack route it.
    count(Stat::Pass);
    TC_ACT_OK
}

/// Pod egress to an address not on this node: another node's pods are routed here,
/// everything else goes to the host stack.
#[inline(always)]
fn pod_egress_off_node<const CONNTRACK: bool>(ctx: &TcContext, addrs: &Addresses) -> i32 {
    let key = Key::new(128, addrs.dst.addr);
    if NK_REMOTE_ROUTES.get(&key).is_none() {
        count(Stat::Pass);
        return TC_ACT_OK;
    }
    // The same rule as for local pods: a flow the stack translated (a reply to a
    // NodePort client that is a pod elsewhere, say) goes back through the stack.
    if let Some(stat) = stack_must_handle::<CONNTRACK>(ctx, addrs) {
        count(stat);
        return TC_ACT_OK;
    }
    let (stat, verdict) = forward::to_remote_pod(ctx, addrs, host_ifindex(ctx));
    count(stat);
    verdict
}

#[classifier]
pub fn nk_uplink_ingress(ctx: TcContext) -> i32 {
    uplink_ingress::<true>(&ctx)
}

#[classifier]
pub fn nk_uplink_ingress_noct(ctx: TcContext) -> i32 {
    uplink_ingress::<false>(&ctx)
}

#[inline(always)]
fn uplink_ingress<const CONNTRACK: bool>(ctx: &TcContext) -> i32 {
    let mut slot = MaybeUninit::uninit();
    let addrs = Addresses::init(&mut slot);
    if packet::parse(ctx, addrs) != Parsed::Ip {
        count(Stat::Pass);
        return TC_ACT_OK;
    }
    let Some(dst) = lookup_endpoint(&addrs.dst) else {
        count(Stat::Pass);
        return TC_ACT_OK;
    };
    // Only another node's pod may skip the stack: its pod's replies skip it too (pod
    // egress to a remote pod CIDR), so conntrack sees neither direction. A peer that is
    // not a pod (a node, a masqueraded NodePort client, anything outside) gets replies
    // through the stack; had its packets skipped the stack, conntrack would see only
    // those replies, mark them INVALID, and a `ctstate INVALID -j DROP` rule (kube-proxy
    // installs one) would drop them.
    if NK_REMOTE_ROUTES
        .get(&Key::new(128, addrs.src.addr))
        .is_none()
    {
        count(Stat::Pass);
        return TC_ACT_OK;
    }
    // A reply from a remote backend of a Service the pod called, or a NodePort client
    // kept un-masqueraded: the stack must undo the translation before the pod sees it.
    if let Some(stat) = stack_must_handle::<CONNTRACK>(ctx, addrs) {
        count(stat);
        return TC_ACT_OK;
    }
    if dst.flags & ENDPOINT_F_VETH != 0 && packet::rewrite_macs(ctx, dst).is_err() {
        count(Stat::DropPolicy);
        return TC_ACT_SHOT;
    }
    count(Stat::RedirectPeer);
    // SAFETY: helper call with plain integer arguments.
    unsafe { bpf_redirect_peer(dst.ifindex, 0) as i32 }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
