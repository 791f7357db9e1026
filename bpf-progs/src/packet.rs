//! Header parsing with direct packet access: just the fields the datapath decides on.

use aya_ebpf::programs::TcContext;
use core::mem::MaybeUninit;
use netkit_common::{EndpointKey, EndpointValue};

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;
const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ICMPV6: u8 = 58;
const IPV6_HLEN: usize = 40;
const UDP_HLEN: usize = 8;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMP: u8 = 1;
/// Link-scoped ICMPv6 control messages a pod's kernel sends on its own, from its
/// link-local or the unspecified address: MLD (RFC 2710 types 130–132, RFC 3810 type 143)
/// and neighbour discovery (RFC 4861 types 133–136). They are for the host stack, not data.
#[inline(always)]
fn is_icmpv6_link_control(kind: u8) -> bool {
    matches!(kind, 130..=136 | 143)
}

/// What the fast path may assume about a packet's flow: whether the host stack could
/// have translated it, and whether conntrack can be asked.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Flow {
    /// TCP or UDP with both ports read: conntrack can say whether it was translated.
    Ports = 0,
    /// ICMP / ICMPv6 queries (echo and the like): Service NAT never rewrites them between
    /// pods, and conntrack lookups do not cover them.
    Untranslatable = 1,
    /// Anything else: may belong to a translated flow, and a conntrack lookup cannot
    /// tell (fragments, IPv6 extension headers, SCTP, ICMP errors quoting a flow, other
    /// protocols). Only the stack handles these correctly.
    Unverifiable = 2,
}

/// Source and destination of an IP packet, with the transport ports when it has them.
/// Filled in place by `parse`: returning it inside an enum would copy the enum's
/// undefined padding bytes, which the verifier rejects as reads of uninitialised stack.
pub struct Addresses {
    pub src: EndpointKey,
    pub dst: EndpointKey,
    /// IPPROTO_TCP or IPPROTO_UDP when `flow` is `Ports`, else 0.
    pub proto: u8,
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    pub flow: Flow,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// IPv4 TOS (0 for IPv6): the FIB lookup matches on it.
    pub tos: u8,
    /// Length of the IP packet (header included), for the FIB lookup's MTU check.
    pub ip_len: u16,
    /// For TCP and UDP: the IP and transport headers' length, which every segment of a
    /// GSO packet repeats (its segments are this plus `gso_size` long); 0 otherwise.
    pub seg_hdr_len: u16,
}

impl Addresses {
    /// All fields zero, the flow `Unverifiable`, in `slot` (see `zeroed_words`).
    #[inline(always)]
    pub fn init(slot: &mut MaybeUninit<Addresses>) -> &mut Addresses {
        // SAFETY: all zeros is a valid Addresses: byte arrays and integers, and a `Flow`
        // of 0 (`Ports`), set right below.
        let addrs = unsafe { zeroed_words(slot) };
        addrs.flow = Flow::Unverifiable;
        addrs
    }
}

/// Classify the transport header at `offset`: read the ports of TCP and UDP, tell ICMP
/// queries from ICMP errors (which quote, and so belong to, another flow). The first
/// four bytes are read at once (ports, or ICMP type/code/checksum): a one-byte bound check
/// at a variable offset compiles to `p >= end`, which the verifier does not take as a
/// bound, while `p + 4 > end` it does.
#[inline(always)]
fn classify_transport(ctx: &TcContext, offset: usize, proto: u8, out: &mut Addresses) {
    let Some(head) = read_array::<4>(ctx, offset) else {
        out.flow = Flow::Unverifiable;
        return;
    };
    out.flow = match proto {
        IPPROTO_TCP | IPPROTO_UDP => {
            out.proto = proto;
            out.sport = [head[0], head[1]];
            out.dport = [head[2], head[3]];
            out.seg_hdr_len = segment_headers(ctx, offset, proto);
            Flow::Ports
        }
        // Destination unreachable, source quench, redirect, time exceeded, parameter
        // problem: errors.
        IPPROTO_ICMP if matches!(head[0], 3 | 4 | 5 | 11 | 12) => Flow::Unverifiable,
        IPPROTO_ICMP => Flow::Untranslatable,
        // ICMPv6 types below 128 are errors (RFC 4443).
        IPPROTO_ICMPV6 if head[0] >= 128 => Flow::Untranslatable,
        _ => Flow::Unverifiable,
    };
}

/// The IP and transport headers' length for a TCP or UDP packet whose transport header
/// starts at `offset` in the frame: what each segment of a GSO packet carries besides its
/// `gso_size` bytes of payload (the stack's `skb_gso_network_seglen`). 0 when the TCP
/// header is not all there.
#[inline(always)]
fn segment_headers(ctx: &TcContext, offset: usize, proto: u8) -> u16 {
    let transport = if proto == IPPROTO_TCP {
        // The data offset, in 32-bit words, is the high nibble of byte 12.
        match read_array::<16>(ctx, offset) {
            Some(tcp) => usize::from(tcp[12] >> 4) * 4,
            None => return 0,
        }
    } else {
        UDP_HLEN
    };
    (offset - ETH_HLEN + transport) as u16
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// IPv4 or IPv6; the addresses were written to the caller's `Addresses`.
    Ip,
    Arp,
    /// ICMPv6 neighbour discovery or MLD.
    LinkControl,
    Other,
    Truncated,
}

/// A pointer to `len` bytes at `offset`, or `None` when the packet is shorter. The
/// explicit bound check is what lets the verifier accept the later reads.
#[inline(always)]
fn bytes_at(ctx: &TcContext, offset: usize, len: usize) -> Option<*const u8> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + len > end {
        return None;
    }
    Some((start + offset) as *const u8)
}

#[inline(always)]
pub fn read_array<const N: usize>(ctx: &TcContext, offset: usize) -> Option<[u8; N]> {
    let p = bytes_at(ctx, offset, N)?;
    // SAFETY: `bytes_at` checked that N bytes are inside the packet; unaligned read
    // because IP headers follow a 14-byte Ethernet header.
    Some(unsafe { core::ptr::read_unaligned(p as *const [u8; N]) })
}

#[inline(always)]
fn read_u8(ctx: &TcContext, offset: usize) -> Option<u8> {
    read_array::<1>(ctx, offset).map(|b| b[0])
}

/// The ICMPv6 type of an IPv6 packet whose ICMPv6 header follows the fixed header
/// directly (ND) or one 8-byte hop-by-hop header (MLD, which carries Router Alert).
#[inline(always)]
fn icmpv6_type(ctx: &TcContext, l3: usize, next: u8) -> Option<u8> {
    match next {
        IPPROTO_ICMPV6 => read_u8(ctx, l3 + IPV6_HLEN),
        IPPROTO_HOPOPTS => {
            let inner = read_u8(ctx, l3 + IPV6_HLEN)?;
            // Hdr Ext Len counts 8-octet units after the first 8: 0 means 8 bytes.
            let ext_len = read_u8(ctx, l3 + IPV6_HLEN + 1)?;
            if inner == IPPROTO_ICMPV6 && ext_len == 0 {
                read_u8(ctx, l3 + IPV6_HLEN + 8)
            } else {
                None
            }
        }
        _ => None,
    }
}

#[inline(always)]
/// Parse a frame. Every hook we attach to sees an Ethernet header: veth and the uplink
/// obviously, and netkit too — even in L3 mode the device is set up as Ethernet (with
/// `IFF_NOARP` and zero addresses), and its xmit runs our programs before
/// `eth_type_trans`.
pub fn parse(ctx: &TcContext, out: &mut Addresses) -> Parsed {
    let l3 = ETH_HLEN;
    let Some(proto) = read_array::<2>(ctx, 12).map(u16::from_be_bytes) else {
        return Parsed::Truncated;
    };
    match proto {
        ETH_P_IP => {
            let Some(src) = read_array::<4>(ctx, l3 + 12) else {
                return Parsed::Truncated;
            };
            let Some(dst) = read_array::<4>(ctx, l3 + 16) else {
                return Parsed::Truncated;
            };
            out.src = EndpointKey::from_v4(src);
            out.dst = EndpointKey::from_v4(dst);
            // The fixed header's first 12 bytes: the checks above bound only 16..24.
            let Some(head) = read_array::<12>(ctx, l3) else {
                return Parsed::Ip;
            };
            let (first, proto, frag) = (head[0], head[9], [head[6], head[7]]);
            out.tos = head[1];
            out.ip_len = u16::from_be_bytes([head[2], head[3]]);
            out.ttl = head[8];
            // A fragment (more-fragments set or a non-zero offset) is only whole, and
            // its flow only known, after reassembly in the stack.
            let fragment = u16::from_be_bytes(frag) & 0x3fff != 0;
            let ihl = usize::from(first & 0x0f);
            if !fragment && ihl >= 5 {
                classify_transport(ctx, l3 + ihl * 4, proto, out);
            }
            Parsed::Ip
        }
        ETH_P_IPV6 => {
            let Some(next) = read_u8(ctx, l3 + 6) else {
                return Parsed::Truncated;
            };
            if let Some(kind) = icmpv6_type(ctx, l3, next)
                && is_icmpv6_link_control(kind)
            {
                return Parsed::LinkControl;
            }
            let Some(src) = read_array::<16>(ctx, l3 + 8) else {
                return Parsed::Truncated;
            };
            let Some(dst) = read_array::<16>(ctx, l3 + 24) else {
                return Parsed::Truncated;
            };
            out.src = EndpointKey::from_v6(src);
            out.dst = EndpointKey::from_v6(dst);
            if let Some(head) = read_array::<8>(ctx, l3) {
                let payload = u16::from_be_bytes([head[4], head[5]]);
                out.ip_len = payload.saturating_add(IPV6_HLEN as u16);
                out.ttl = head[7];
            }
            // Extension headers (fragments among them) leave the flow Unverifiable.
            classify_transport(ctx, l3 + IPV6_HLEN, next, out);
            Parsed::Ip
        }
        ETH_P_ARP => Parsed::Arp,
        _ => Parsed::Other,
    }
}

/// Rewrite the Ethernet header for delivery into a veth pod: to the pod's MAC, from
/// its host-side veth, as if the host had routed it.
#[inline(always)]
pub fn rewrite_macs(ctx: &TcContext, dst: &EndpointValue) -> Result<(), ()> {
    // Built whole, not zeroed and then filled: see `zeroed_words`.
    let [a, b, c, d, e, f] = dst.pod_mac;
    let [g, h, i, j, k, l] = dst.host_mac;
    ctx.store(0, &[a, b, c, d, e, f, g, h, i, j, k, l], 0)
        .map_err(|_| ())
}

/// `slot` set to all zeros with 8-byte volatile stores, for the larger structs every
/// packet needs zeroed. Plain zeroing (`zeroed()`, a zero literal) lets LLVM merge the
/// stores into a `memset` call, and on BPF that is compiler_builtins' byte-at-a-time loop:
/// five instructions a byte.
///
/// # Safety
///
/// All zeros must be a valid `T`.
#[inline(always)]
pub unsafe fn zeroed_words<T>(slot: &mut MaybeUninit<T>) -> &mut T {
    const {
        assert!(core::mem::align_of::<T>() >= 8 && core::mem::size_of::<T>() % 8 == 0);
    }
    let words = slot.as_mut_ptr().cast::<u64>();
    let mut i = 0;
    while i < core::mem::size_of::<T>() / 8 {
        // SAFETY: `T` is 8-aligned and a whole number of words long, so every word
        // written is inside `slot` and aligned.
        unsafe { words.add(i).write_volatile(0) };
        i += 1;
    }
    // SAFETY: every byte is written, and the caller vouches that zeros are a valid `T`.
    unsafe { slot.assume_init_mut() }
}
