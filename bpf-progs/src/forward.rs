//! Pod egress to another node's pods: route the packet as the host would — a FIB lookup
//! with the packet's own addresses — and hand it straight to the out device, skipping
//! the host stack. The receiving node's uplink program puts it into the pod.

use aya_ebpf::bindings::{
    BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, TC_ACT_OK, bpf_fib_lookup, bpf_redir_neigh,
};
use aya_ebpf::helpers::generated::{
    bpf_fib_lookup as fib_lookup, bpf_redirect, bpf_redirect_neigh,
};
use aya_ebpf::programs::TcContext;
use core::mem::MaybeUninit;
use netkit_common::Stat;

use crate::packet::{self, Addresses};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const ETH_HLEN: usize = 14;
/// Offsets in the frame: the IPv4 TTL (with the protocol after it), the IPv4 header
/// checksum.
const IPV4_TTL: usize = ETH_HLEN + 8;
const IPV4_CSUM: usize = ETH_HLEN + 10;
/// Offset of the IPv6 hop limit.
const IPV6_HOP_LIMIT: usize = ETH_HLEN + 7;

/// `struct bpf_fib_lookup` (64 bytes) 8-aligned, so `packet::zeroed_words` can zero it.
#[repr(C, align(8))]
struct FibParams(bpf_fib_lookup);

/// Forward `addrs` towards its next hop. Returns the counter and the verdict.
#[inline(always)]
pub fn to_remote_pod(ctx: &TcContext, addrs: &Addresses, in_ifindex: u32) -> (Stat, i32) {
    // A router does not forward a packet whose TTL would expire; the stack does the
    // ICMP time-exceeded.
    if addrs.ttl <= 1 {
        return (Stat::PassTtl, TC_ACT_OK as i32);
    }
    let v4 = addrs.src.v4().zip(addrs.dst.v4());
    let mut slot = MaybeUninit::<FibParams>::uninit();
    // SAFETY: an all-zero bpf_fib_lookup is a valid value (plain integers and unions
    // of integers).
    let params = &mut unsafe { packet::zeroed_words(&mut slot) }.0;
    params.l4_protocol = addrs.proto;
    params.sport = u16::from_ne_bytes(addrs.sport);
    params.dport = u16::from_ne_bytes(addrs.dport);
    params.__bindgen_anon_1.tot_len = mtu_check_len(ctx, addrs);
    params.ifindex = in_ifindex;
    match v4 {
        Some((src, dst)) => {
            params.family = AF_INET;
            params.__bindgen_anon_2.tos = addrs.tos;
            params.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(src);
            params.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(dst);
        }
        None => {
            params.family = AF_INET6;
            params.__bindgen_anon_3.ipv6_src = words(&addrs.src.addr);
            params.__bindgen_anon_4.ipv6_dst = words(&addrs.dst.addr);
        }
    }
    let size = core::mem::size_of::<bpf_fib_lookup>() as i32;
    // SAFETY: the context pointer the kernel passed in and a live, initialised params.
    let ret = unsafe { fib_lookup(ctx.skb.skb.cast(), params, size, 0) } as u32;
    match ret {
        BPF_FIB_LKUP_RET_SUCCESS => {
            if rewrite_for_next_hop(ctx, Some((&params.dmac, &params.smac)), v4.is_some()).is_err()
            {
                return (Stat::DropPolicy, aya_ebpf::bindings::TC_ACT_SHOT);
            }
            // SAFETY: helper call with plain integer arguments.
            (Stat::FibOk, unsafe { bpf_redirect(params.ifindex, 0) }
                as i32)
        }
        BPF_FIB_LKUP_RET_NO_NEIGH => {
            if rewrite_for_next_hop(ctx, None, v4.is_some()).is_err() {
                return (Stat::DropPolicy, aya_ebpf::bindings::TC_ACT_SHOT);
            }
            // The next hop the lookup chose (it may be of the other family: an IPv4
            // route via an IPv6 gateway). The kernel resolves it and fills in L2.
            // SAFETY: zeroed is a valid value of this plain-integer struct.
            let mut nh: bpf_redir_neigh = unsafe { core::mem::zeroed() };
            nh.nh_family = u32::from(params.family);
            // SAFETY: reading the union arm the lookup wrote for `params.family`.
            unsafe {
                if params.family == AF_INET {
                    nh.__bindgen_anon_1.ipv4_nh = params.__bindgen_anon_4.ipv4_dst;
                } else {
                    nh.__bindgen_anon_1.ipv6_nh = params.__bindgen_anon_4.ipv6_dst;
                }
            }
            let size = core::mem::size_of::<bpf_redir_neigh>() as i32;
            // SAFETY: `nh` is live and initialised; the size is its own.
            let verdict = unsafe { bpf_redirect_neigh(params.ifindex, &mut nh, size, 0) };
            (Stat::RedirectNeigh, verdict as i32)
        }
        // Blackhole, unreachable, forwarding disabled, fragmentation needed, …: the
        // stack answers these (ICMP errors, local policy) better than we could.
        _ => (Stat::PassFib, TC_ACT_OK as i32),
    }
}

/// The length the FIB lookup checks against the out device's MTU, as the stack's
/// forwarding does (`ip_exceeds_mtu`): the packet's own length, or for a GSO packet (a TCP
/// stream's 64 KB super-packets) the length of each segment it will be cut into. Giving
/// the whole GSO packet's length would fail the check (FRAG_NEEDED) and send most of a
/// bulk transfer to the stack. 0, a GSO packet whose headers were not read, leaves the
/// check to the kernel's own `is_skb_forwardable` (which lets GSO packets through).
#[inline(always)]
fn mtu_check_len(ctx: &TcContext, addrs: &Addresses) -> u16 {
    // SAFETY: `skb` is the context pointer the kernel passed in; `gso_size` is readable.
    let gso_size = unsafe { (*ctx.skb.skb).gso_size };
    if gso_size == 0 {
        return addrs.ip_len;
    }
    if addrs.seg_hdr_len == 0 {
        return 0;
    }
    addrs.seg_hdr_len.saturating_add(gso_size as u16)
}

/// Rewrite the frame for its next hop in one `bpf_skb_store_bytes`: the MACs the FIB
/// lookup resolved (`None` when the kernel fills in L2 itself, `bpf_redirect_neigh`) and
/// the TTL / hop limit minus one, as a router does, with IPv4's header checksum following
/// along. The bytes between them are written back unchanged. One helper call instead of
/// three (MACs, checksum, TTL): each is a call into the kernel and its own writability
/// check on the skb. The caller checked that the TTL is above 1.
#[inline(always)]
fn rewrite_for_next_hop(
    ctx: &TcContext,
    macs: Option<(&[u8; 6], &[u8; 6])>,
    v4: bool,
) -> Result<(), ()> {
    match (macs, v4) {
        (Some((dmac, smac)), true) => {
            // Ethernet, then the IPv4 header up to and including its checksum.
            let mut frame = packet::read_array::<{ IPV4_CSUM + 2 }>(ctx, 0).ok_or(())?;
            frame[..6].copy_from_slice(dmac);
            frame[6..12].copy_from_slice(smac);
            ipv4_decrement_ttl(&mut frame, IPV4_TTL);
            ctx.store(0, &frame, 0).map_err(|_| ())
        }
        (Some((dmac, smac)), false) => {
            let mut frame = packet::read_array::<{ IPV6_HOP_LIMIT + 1 }>(ctx, 0).ok_or(())?;
            frame[..6].copy_from_slice(dmac);
            frame[6..12].copy_from_slice(smac);
            frame[IPV6_HOP_LIMIT] = frame[IPV6_HOP_LIMIT].wrapping_sub(1);
            ctx.store(0, &frame, 0).map_err(|_| ())
        }
        (None, true) => {
            // TTL, protocol, checksum.
            let mut word = packet::read_array::<4>(ctx, IPV4_TTL).ok_or(())?;
            ipv4_decrement_ttl(&mut word, 0);
            ctx.store(IPV4_TTL, &word, 0).map_err(|_| ())
        }
        (None, false) => {
            let hop = packet::read_array::<1>(ctx, IPV6_HOP_LIMIT).ok_or(())?[0];
            ctx.store(IPV6_HOP_LIMIT, &hop.wrapping_sub(1), 0)
                .map_err(|_| ())
        }
    }
}

/// In `bytes`, the IPv4 TTL at `ttl` (the protocol after it, the header checksum after
/// that): TTL minus one, and the checksum updated incrementally exactly as the kernel's
/// `csum_replace2` (what `bpf_l3_csum_replace` does) computes it, on the 16-bit word
/// TTL + protocol as it lies in memory.
#[inline(always)]
fn ipv4_decrement_ttl(bytes: &mut [u8], ttl: usize) {
    if ttl + 4 > bytes.len() {
        return;
    }
    let old = u16::from_ne_bytes([bytes[ttl], bytes[ttl + 1]]);
    bytes[ttl] = bytes[ttl].wrapping_sub(1);
    let new = u16::from_ne_bytes([bytes[ttl], bytes[ttl + 1]]);
    let check = u16::from_ne_bytes([bytes[ttl + 2], bytes[ttl + 3]]);
    let check = csum_replace2(check, old, new);
    bytes[ttl + 2..ttl + 4].copy_from_slice(&check.to_ne_bytes());
}

/// The kernel's `csum_replace2`: `~csum16_add(csum16_sub(~check, old), new)`.
#[inline(always)]
fn csum_replace2(check: u16, old: u16, new: u16) -> u16 {
    !csum16_add(csum16_add(!check, !old), new)
}

/// One's complement 16-bit addition (the kernel's `csum16_add`: the carry wraps around).
#[inline(always)]
fn csum16_add(a: u16, b: u16) -> u16 {
    let (sum, carry) = a.overflowing_add(b);
    sum.wrapping_add(u16::from(carry))
}

/// 16 address bytes as the four u32 words the helper structs hold (network order kept).
#[inline(always)]
fn words(addr: &[u8; 16]) -> [u32; 4] {
    let mut out = [0u32; 4];
    for (i, word) in out.iter_mut().enumerate() {
        *word = u32::from_ne_bytes([
            addr[4 * i],
            addr[4 * i + 1],
            addr[4 * i + 2],
            addr[4 * i + 3],
        ]);
    }
    out
}
