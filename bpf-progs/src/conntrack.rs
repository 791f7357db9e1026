//! Did the host stack translate this packet's flow? Asked of the kernel's own conntrack
//! through the `bpf_skb_ct_lookup` kfunc (nf_conntrack's BPF interface, `sched_cls`).
//!
//! Conntrack keeps every flow it has seen under two tuples: the original direction and
//! the reply direction. For a flow nothing translated, the reply tuple is the original
//! one inverted, so the packet's tuple and its inverse find the *same* entry. For a flow
//! the stack translated (a Service DNAT, a NodePort, masquerade), the reply tuple names
//! the translated addresses: the packet's tuple finds the entry and its inverse finds
//! nothing (or, never in practice, another entry). And a flow the stack never saw —
//! pod-to-pod traffic that only ever took the fast path — is not in conntrack at all.
//!
//! So the decision is exact and needs no memory of ours: nothing unrelated can evict or
//! poison it, and nothing is read from `struct nf_conn` (whose layout varies by kernel
//! config; Rust has no CO-RE field relocations) — only the pointers are compared.

use aya_ebpf::programs::TcContext;
use core::ffi::c_void;

use crate::packet::Addresses;

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
/// `opts.netns_id`: look up in the netns of the device the packet is on (the node's).
const BPF_F_CURRENT_NETNS: i32 = -1;

/// `struct bpf_ct_opts` in the 12-byte layout every kernel with these kfuncs accepts
/// (later kernels add zone fields behind a 16-byte size and still take 12).
#[repr(C)]
struct CtOpts {
    netns_id: i32,
    /// Out: why a lookup found nothing.
    error: i32,
    l4proto: u8,
    /// Out: which of the entry's tuples matched.
    dir: u8,
    /// Must be zero.
    reserved: [u8; 2],
}
const CT_OPTS_SIZE: u32 = 12;
const _: () = assert!(core::mem::size_of::<CtOpts>() == CT_OPTS_SIZE as usize);

/// `struct bpf_sock_tuple`'s IPv4 arm: addresses and ports in network byte order.
#[repr(C, align(4))]
struct TupleV4 {
    saddr: [u8; 4],
    daddr: [u8; 4],
    sport: [u8; 2],
    dport: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<TupleV4>() == 12);

/// `struct bpf_sock_tuple`'s IPv6 arm.
#[repr(C, align(4))]
struct TupleV6 {
    saddr: [u8; 16],
    daddr: [u8; 16],
    sport: [u8; 2],
    dport: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<TupleV6>() == 36);

// The kfuncs, resolved against the running kernel's BTF by the agent's loader
// (`agent/src/datapath/kfunc.rs`): the calls arrive as relocations against these names.
unsafe extern "C" {
    fn bpf_skb_ct_lookup(
        skb: *mut c_void,
        tuple: *mut c_void,
        tuple_size: u32,
        opts: *mut CtOpts,
        opts_size: u32,
    ) -> *mut c_void;
    fn bpf_ct_release(ct: *mut c_void);
}

/// Look up the conntrack entry holding `tuple`: a referenced pointer, or null.
#[inline(always)]
fn lookup(ctx: &TcContext, tuple: *mut c_void, tuple_size: u32, l4proto: u8) -> *mut c_void {
    let mut opts = CtOpts {
        netns_id: BPF_F_CURRENT_NETNS,
        error: 0,
        l4proto,
        dir: 0,
        reserved: [0; 2],
    };
    // SAFETY: the context pointer is the one the kernel passed in; `tuple` points to
    // `tuple_size` initialised bytes on our stack; `opts` is a live, initialised local.
    unsafe {
        bpf_skb_ct_lookup(
            ctx.skb.skb.cast(),
            tuple,
            tuple_size,
            &mut opts,
            CT_OPTS_SIZE,
        )
    }
}

/// Whether `forward`'s inverse (`backward`) finds the very entry `forward` finds. The
/// first reference is held until the second lookup is done, so the entry cannot be
/// freed and its memory reused (nf_conn is SLAB_TYPESAFE_BY_RCU) between the two: equal
/// pointers mean one entry. Only the pointers are compared, never dereferenced.
#[inline(always)]
fn same_entry_both_ways<T>(
    ctx: &TcContext,
    forward: &mut T,
    backward: &mut T,
    l4proto: u8,
) -> Option<bool> {
    let size = core::mem::size_of::<T>() as u32;
    let first = lookup(ctx, (forward as *mut T).cast(), size, l4proto);
    if first.is_null() {
        return None;
    }
    let second = lookup(ctx, (backward as *mut T).cast(), size, l4proto);
    let same = first == second;
    if !second.is_null() {
        // SAFETY: a non-null reference the lookup acquired, released exactly once.
        unsafe { bpf_ct_release(second) };
    }
    // SAFETY: as above.
    unsafe { bpf_ct_release(first) };
    Some(same)
}

/// Whether the stack translated the flow `addrs` belongs to (see the module docs). Only
/// TCP and UDP are asked: the kfunc knows no other protocol, and the caller keeps every
/// other protocol that NAT could touch off the fast path.
#[inline(always)]
pub fn translated(ctx: &TcContext, addrs: &Addresses) -> bool {
    if addrs.proto != IPPROTO_TCP && addrs.proto != IPPROTO_UDP {
        return false;
    }
    let same = if let (Some(src), Some(dst)) = (addrs.src.v4(), addrs.dst.v4()) {
        let mut forward = TupleV4 {
            saddr: src,
            daddr: dst,
            sport: addrs.sport,
            dport: addrs.dport,
        };
        let mut backward = TupleV4 {
            saddr: dst,
            daddr: src,
            sport: addrs.dport,
            dport: addrs.sport,
        };
        same_entry_both_ways(ctx, &mut forward, &mut backward, addrs.proto)
    } else {
        let mut forward = TupleV6 {
            saddr: addrs.src.addr,
            daddr: addrs.dst.addr,
            sport: addrs.sport,
            dport: addrs.dport,
        };
        let mut backward = TupleV6 {
            saddr: addrs.dst.addr,
            daddr: addrs.src.addr,
            sport: addrs.dport,
            dport: addrs.sport,
        };
        same_entry_both_ways(ctx, &mut forward, &mut backward, addrs.proto)
    };
    // Unknown to conntrack: the stack never saw the flow, so it translated nothing.
    same == Some(false)
}
