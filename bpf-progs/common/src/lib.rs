//! The layouts the BPF programs and the agent share: map keys and values, the stats
//! indices and the names both sides use for maps and globals. Defined once, here.
//!
//! Every type is `#[repr(C)]`, `Copy`, padded explicitly (the verifier rejects reads of
//! uninitialised stack padding, and user space must write the same bytes the program
//! reads) and checked by a compile-time size assert.
#![no_std]

/// Names of the pinned maps. User space opens them by these names; the BPF side
/// declares them with the same identifiers (the ELF symbol is the pin name).
pub mod map_names {
    pub const STATS: &str = "NK_STATS";
    pub const ENDPOINTS: &str = "NK_ENDPOINTS";
    pub const REMOTE_ROUTES: &str = "NK_REMOTE_ROUTES";
}

/// Names of the programs in the object.
pub mod program_names {
    /// Pod egress: netkit `BPF_NETKIT_PEER`, or tcx ingress of the host-side veth.
    pub const POD_EGRESS: &str = "nk_pod_egress";
    /// Node uplink: tcx ingress.
    pub const UPLINK_INGRESS: &str = "nk_uplink_ingress";
    /// The twins of the two above for kernels where conntrack cannot be asked: every
    /// pod-bound packet they cannot vouch for goes through the host stack.
    pub const POD_EGRESS_NOCT: &str = "nk_pod_egress_noct";
    pub const UPLINK_INGRESS_NOCT: &str = "nk_uplink_ingress_noct";
}

/// One per-CPU counter per datapath decision. The discriminant is the index into
/// the `NK_STATS` per-CPU array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    /// `bpf_redirect_peer` into a local pod (uplink or veth host side ingress).
    RedirectPeer = 0,
    /// `bpf_redirect` to a local pod's netkit primary.
    Redirect = 1,
    /// `bpf_redirect_neigh` towards a next hop.
    RedirectNeigh = 2,
    /// `bpf_fib_lookup` resolved a next hop with its L2 address.
    FibOk = 3,
    /// Handed to the host stack.
    Pass = 4,
    /// Pod egress with a source address that is not the pod's own.
    DropSpoof = 5,
    /// Dropped by policy (for example non-IP from an L3 pod).
    DropPolicy = 6,
    /// A packet for a local pod handed to the host stack instead of the fast path because
    /// conntrack says the stack translated its flow (a Service DNAT, a NodePort,
    /// masquerade): only the stack can undo that translation.
    PassTranslated = 7,
    /// A packet for a local pod handed to the host stack because whether its flow was
    /// translated cannot be checked: no conntrack lookup on this kernel, or a packet the
    /// lookup cannot describe (fragments, SCTP, ICMP errors, IPv6 extension headers).
    PassUnverified = 8,
    /// A packet for another node's pod CIDR whose FIB lookup gave no usable answer
    /// (unreachable, forwarding disabled, fragmentation needed, …): the stack handles it.
    PassFib = 9,
    /// A packet for another node's pod CIDR whose TTL / hop limit would expire here: the
    /// stack sends the ICMP time-exceeded.
    PassTtl = 10,
}

impl Stat {
    /// Every counter, in index order.
    pub const ALL: [Stat; STAT_COUNT as usize] = [
        Stat::RedirectPeer,
        Stat::Redirect,
        Stat::RedirectNeigh,
        Stat::FibOk,
        Stat::Pass,
        Stat::DropSpoof,
        Stat::DropPolicy,
        Stat::PassTranslated,
        Stat::PassUnverified,
        Stat::PassFib,
        Stat::PassTtl,
    ];

    /// The name operators and tests see (`netkit-agent stats`, metrics labels).
    pub const fn name(self) -> &'static str {
        match self {
            Stat::RedirectPeer => "redirect_peer",
            Stat::Redirect => "redirect",
            Stat::RedirectNeigh => "redirect_neigh",
            Stat::FibOk => "fib_ok",
            Stat::Pass => "pass",
            Stat::DropSpoof => "drop_spoof",
            Stat::DropPolicy => "drop_policy",
            Stat::PassTranslated => "pass_translated",
            Stat::PassUnverified => "pass_unverified",
            Stat::PassFib => "pass_fib",
            Stat::PassTtl => "pass_ttl",
        }
    }

    pub const fn index(self) -> u32 {
        self as u32
    }
}

/// Number of entries in `NK_STATS`.
pub const STAT_COUNT: u32 = 11;

/// Maximum number of addresses (endpoints × families) on one node.
pub const MAX_ENDPOINT_ADDRS: u32 = 65_536;

/// Key of `NK_ENDPOINTS`: one pod address. IPv4 is stored IPv4-mapped
/// (`::ffff:a.b.c.d`) so one map serves both families. Aligned to 8 (the size stays 16,
/// no padding): the BPF programs then build and copy keys in two 8-byte moves instead of
/// sixteen byte moves (BPF has no unaligned loads and stores).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EndpointKey {
    /// Network byte order.
    pub addr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<EndpointKey>() == 16);

impl EndpointKey {
    pub const fn from_v4(octets: [u8; 4]) -> Self {
        // `::ffff:a.b.c.d` built as two 8-byte words: in the BPF programs, where every
        // packet's addresses pass through here, that is two stores instead of a call to
        // a byte-wise memset for the zeros and ten byte stores.
        let [a, b, c, d] = octets;
        let words = [0u64, u64::from_ne_bytes([0, 0, 0xff, 0xff, a, b, c, d])];
        // SAFETY: [u64; 2] and [u8; 16] have the same size, and every bit pattern is a
        // valid [u8; 16].
        EndpointKey {
            addr: unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>(words) },
        }
    }

    pub const fn from_v6(octets: [u8; 16]) -> Self {
        EndpointKey { addr: octets }
    }

    /// The IPv4 address, when the key is IPv4-mapped.
    #[inline(always)]
    pub fn v4(&self) -> Option<[u8; 4]> {
        let a = &self.addr;
        let mapped = a[..10].iter().all(|b| *b == 0) && a[10] == 0xff && a[11] == 0xff;
        mapped.then_some([a[12], a[13], a[14], a[15]])
    }
}

/// The endpoint is wired with a netkit pair (`ifindex` is the primary).
pub const ENDPOINT_F_NETKIT: u32 = 1 << 0;
/// The endpoint is wired with a veth pair (`ifindex` is the host-side veth).
pub const ENDPOINT_F_VETH: u32 = 1 << 1;

/// Value of `NK_ENDPOINTS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointValue {
    /// Host-side ifindex: netkit primary or host-side veth.
    pub ifindex: u32,
    /// `ENDPOINT_F_*`.
    pub flags: u32,
    /// MAC of the pod's interface (veth only; netkit L3 devices have all-zero MACs).
    pub pod_mac: [u8; 6],
    /// MAC of the host-side veth (veth only).
    pub host_mac: [u8; 6],
}
// 4 + 4 + 6 + 6: no padding, the struct's 4-byte alignment is already met.
const _: () = assert!(core::mem::size_of::<EndpointValue>() == 20);

/// Remote pod CIDRs (both families) the map holds at most.
pub const MAX_REMOTE_ROUTES: u32 = 16_384;

/// The address part of a `NK_REMOTE_ROUTES` key: 16 bytes, IPv4 mapped like
/// `EndpointKey`, so an IPv4 /24 is stored with prefix length 96 + 24. The key proper is
/// the LPM trie's `{ prefix_len: u32, data }` (aya's `lpm_trie::Key` on both sides).
pub type RouteAddr = [u8; 16];

/// Value of `NK_REMOTE_ROUTES`: another node's pod CIDR. The FIB decides the next hop;
/// the node address is kept for the agent's reconciliation and for operators.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteRoute {
    /// The node the CIDR lives on, IPv4-mapped like `EndpointKey`.
    pub node: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<RemoteRoute>() == 16);

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data, `#[repr(C)]`, no padding (sizes asserted above), every bit
    // pattern is valid.
    unsafe impl aya::Pod for super::EndpointKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::EndpointValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RemoteRoute {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_indices_are_dense_and_in_order() {
        for (i, s) in Stat::ALL.iter().enumerate() {
            assert_eq!(s.index() as usize, i, "{} out of place", s.name());
        }
    }

    #[test]
    fn v4_keys_are_v4_mapped() {
        let k = EndpointKey::from_v4([10, 1, 2, 3]);
        assert_eq!(&k.addr[..12], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
        assert_eq!(&k.addr[12..], &[10, 1, 2, 3]);
        assert_eq!(k.v4(), Some([10, 1, 2, 3]));
        assert_eq!(EndpointKey::from_v6([0xfd; 16]).v4(), None);
    }
}
