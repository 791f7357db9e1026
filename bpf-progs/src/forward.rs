//! Pod egress to another node's pods: route the packet as the host would — a FIB lookup
//! with the packet's own addresses — and hand it straight to the out device, skipping
//! the host stack. The receiving node's uplink program puts it into the pod.

use aya_ebpf::bindings::{
    BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, TC_ACT_OK, bpf_fib_lookup, bpf_redir_neigh,
};
use aya_ebpf::helpers::generated::{
    bpf_fib_lookup as fib_lookup, bpf_l3_csum_replace, bpf_redirect, bpf_redirect_neigh,
};
use aya_ebpf::programs::TcContext;
use netkit_common::Stat;

use crate::packet::Addresses;

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const ETH_HLEN: usize = 14;
/// Offsets in the IPv4 header: TTL (with the protocol after it), header checksum.
const IPV4_TTL: usize = ETH_HLEN + 8;
const IPV4_CSUM: usize = ETH_HLEN + 10;
/// Offset of the IPv6 hop limit.
const IPV6_HOP_LIMIT: usize = ETH_HLEN + 7;

/// Forward `addrs` towards its next hop. Returns the counter and the verdict.
#[inline(always)]
pub fn to_remote_pod(ctx: &TcContext, addrs: &Addresses, in_ifindex: u32) -> (Stat, i32) {
    // A router does not forward a packet whose TTL would expire; the stack does the
    // ICMP time-exceeded.
    if addrs.ttl <= 1 {
        return (Stat::PassTtl, TC_ACT_OK as i32);
    }
    let v4 = addrs.src.v4().zip(addrs.dst.v4());
    // SAFETY: an all-zero bpf_fib_lookup is a valid value (plain integers and unions
    // of integers).
    let mut params: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    params.l4_protocol = addrs.proto;
    params.sport = u16::from_ne_bytes(addrs.sport);
    params.dport = u16::from_ne_bytes(addrs.dport);
    params.__bindgen_anon_1.tot_len = addrs.ip_len;
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
    let ret = unsafe { fib_lookup(ctx.skb.skb.cast(), &mut params, size, 0) } as u32;
    match ret {
        BPF_FIB_LKUP_RET_SUCCESS => {
            let mut macs = [0u8; 12];
            macs[..6].copy_from_slice(&params.dmac);
            macs[6..].copy_from_slice(&params.smac);
            if ctx.store(0, &macs, 0).is_err() || decrement_ttl(ctx, addrs, v4.is_some()).is_err() {
                return (Stat::DropPolicy, aya_ebpf::bindings::TC_ACT_SHOT);
            }
            // SAFETY: helper call with plain integer arguments.
            (Stat::FibOk, unsafe { bpf_redirect(params.ifindex, 0) }
                as i32)
        }
        BPF_FIB_LKUP_RET_NO_NEIGH => {
            if decrement_ttl(ctx, addrs, v4.is_some()).is_err() {
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

/// TTL / hop limit minus one, as a router does; IPv4's header checksum follows along.
#[inline(always)]
fn decrement_ttl(ctx: &TcContext, addrs: &Addresses, v4: bool) -> Result<(), ()> {
    let new = addrs.ttl - 1;
    if v4 {
        // The checksum covers 16-bit words; TTL is the first byte of its word (the
        // protocol, unchanged, the second). The helper takes the words as they lie in
        // memory, so the unchanged byte may be left as zero on both sides.
        let old_word = u64::from(u16::from_ne_bytes([addrs.ttl, 0]));
        let new_word = u64::from(u16::from_ne_bytes([new, 0]));
        // SAFETY: the context pointer the kernel passed in; the offsets are inside the
        // IPv4 header the parser read.
        let ret =
            unsafe { bpf_l3_csum_replace(ctx.skb.skb, IPV4_CSUM as u32, old_word, new_word, 2) };
        if ret != 0 {
            return Err(());
        }
        ctx.store(IPV4_TTL, &new, 0).map_err(|_| ())
    } else {
        ctx.store(IPV6_HOP_LIMIT, &new, 0).map_err(|_| ())
    }
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
