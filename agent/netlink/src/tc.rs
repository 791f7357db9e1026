//! Traffic control: an `ingress` qdisc and one direct-action `cls_bpf` filter on a link's
//! ingress — how the agent attaches a pod's egress program on a veth host end.
//!
//! Why not a tcx link there: a tcx attach swaps the device's `bpf_mprog` entry and waits
//! for a normal RCU grace period (`synchronize_rcu`) while holding the rtnl lock, 7–16 ms
//! on a 250 Hz kernel, and that wait was most of a pod start. Adding a `cls_bpf` filter
//! to a fresh qdisc swaps the qdisc's mini-Qdisc instead, which waits only when no grace
//! period has passed since that mini-Qdisc was last retired, and then an *expedited* one
//! (`mini_qdisc_pair_swap`, net/sched/sch_generic.c); adding the qdisc to a device that
//! is down deactivates nothing. Together: tens to hundreds of µs. Replacing the filter's
//! program later (an agent upgrade) swaps it in place without a moment with no program
//! (`cls_bpf_change` on an existing handle).
//!
//! Why `ingress` and not `clsact`: only the ingress hook is used, and each qdisc's filter
//! block goes on a machine-wide list that binding the next one walks
//! (`flow_indr_dev_setup_offload` → `find_indir_dev`, for devices without tc offload);
//! `clsact` puts two blocks there per device. A bare attach on a namespace already holding
//! 1,000 of them: 205 µs p50 with `clsact`, 154 µs with `ingress` (94 µs with 20).
//! Filters address the hook the same way on both (`ffff:fff2`), so a device that already
//! has a `clsact` (an agent of an earlier build) keeps it and takes the filter there.

use futures::StreamExt as _;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::tc::{
    TcAttribute, TcBpfFlags, TcFilterBpf, TcFilterBpfOption, TcHandle, TcMessage, TcOption,
};
use rtnetlink::Handle;
use rtnetlink::packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkMessage,
    NetlinkPayload,
};

use crate::error::{KernelError, KernelResult};

/// The qdisc kind that gives a device an ingress filter hook.
const INGRESS: &str = "ingress";
/// The ingress qdisc's own handle, `ffff:` (`clsact`'s too).
const INGRESS_HANDLE: TcHandle = TcHandle {
    major: 0xffff,
    minor: 0,
};
/// `ETH_P_ALL`: the filter sees every protocol. The kernel reads the protocol half of
/// `tcm_info` in network byte order.
const ETH_P_ALL: u16 = 0x0003;

/// Which hook a filter sits on (`ingress` has the first; `clsact` both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Ingress,
    Egress,
}

impl Hook {
    fn parent(self) -> TcHandle {
        TcHandle {
            major: 0xffff,
            minor: match self {
                Hook::Ingress => TcHandle::MIN_INGRESS,
                Hook::Egress => TcHandle::MIN_EGRESS,
            },
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Hook::Ingress => "ingress",
            Hook::Egress => "egress",
        }
    }
}

/// Where one BPF filter sits: priority and handle within a hook. Fixed by the caller, so
/// a second attach of the same filter replaces it instead of adding another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilterSlot {
    pub hook: Hook,
    pub priority: u16,
    pub handle: u32,
}

/// A `cls_bpf` filter as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BpfFilter {
    pub priority: u16,
    pub handle: u32,
    /// The name the filter was given (`TCA_BPF_NAME`).
    pub name: Option<String>,
    /// The attached program's id.
    pub prog_id: Option<u32>,
    pub direct_action: bool,
}

/// `RTM_NEWQDISC` for `ingress` on link `ifindex`, with `NLM_F_EXCL`.
pub fn ingress_qdisc_message(ifindex: u32) -> KernelResult<TcMessage> {
    let mut message = TcMessage::with_index(index_of(ifindex, "add an ingress qdisc")?);
    message.header.parent = TcHandle::INGRESS;
    message.header.handle = INGRESS_HANDLE;
    message
        .attributes
        .push(TcAttribute::Kind(INGRESS.to_string()));
    Ok(message)
}

/// `RTM_NEWTFILTER` for a direct-action `cls_bpf` filter running program `prog_fd`.
pub fn bpf_filter_message(
    ifindex: u32,
    slot: FilterSlot,
    prog_fd: u32,
    name: &str,
) -> KernelResult<TcMessage> {
    let mut message = TcMessage::with_index(index_of(ifindex, "add a bpf filter")?);
    message.header.parent = slot.hook.parent();
    message.header.handle = TcHandle::from(slot.handle);
    message.header.info = filter_info(slot.priority);
    message
        .attributes
        .push(TcAttribute::Kind(TcFilterBpf::KIND.to_string()));
    message.attributes.push(TcAttribute::Options(vec![
        TcOption::Bpf(TcFilterBpfOption::ProgFd(prog_fd)),
        TcOption::Bpf(TcFilterBpfOption::ProgName(name.to_string())),
        TcOption::Bpf(TcFilterBpfOption::Flags(TcBpfFlags::DirectAction)),
    ]));
    Ok(message)
}

/// `tcm_info` of a filter: the priority in the upper half, the protocol (network byte
/// order) in the lower.
fn filter_info(priority: u16) -> u32 {
    (u32::from(priority) << 16) | u32::from(ETH_P_ALL.to_be())
}

fn index_of(ifindex: u32, op: &str) -> KernelResult<i32> {
    i32::try_from(ifindex)
        .ok()
        .filter(|i| *i > 0)
        .ok_or_else(|| KernelError::invalid(op, format!("no such link index {ifindex}")))
}

/// Decode a filter dump entry; `None` for a filter that is not `cls_bpf`, and for the
/// entry a dump gives each priority's classifier itself (handle 0, no options).
pub fn decode_bpf_filter(message: &TcMessage) -> Option<BpfFilter> {
    if u32::from(message.header.handle) == 0 {
        return None;
    }
    let is_bpf = message
        .attributes
        .iter()
        .any(|a| matches!(a, TcAttribute::Kind(kind) if kind == TcFilterBpf::KIND));
    if !is_bpf {
        return None;
    }
    let mut filter = BpfFilter {
        priority: (message.header.info >> 16) as u16,
        handle: message.header.handle.into(),
        name: None,
        prog_id: None,
        direct_action: false,
    };
    let options = message.attributes.iter().filter_map(|a| match a {
        TcAttribute::Options(options) => Some(options),
        _ => None,
    });
    for option in options.flatten() {
        match option {
            TcOption::Bpf(TcFilterBpfOption::ProgName(name)) => filter.name = Some(name.clone()),
            TcOption::Bpf(TcFilterBpfOption::ProgId(id)) => filter.prog_id = Some(*id),
            TcOption::Bpf(TcFilterBpfOption::Flags(flags)) => {
                filter.direct_action = flags.contains(TcBpfFlags::DirectAction);
            }
            _ => {}
        }
    }
    Some(filter)
}

/// Give link `ifindex` an `ingress` qdisc; one already there (or a `clsact`, which has
/// the same handle and hook) is success.
pub async fn ensure_ingress_qdisc(handle: &Handle, ifindex: u32) -> KernelResult<()> {
    let message = RouteNetlinkMessage::NewQueueDiscipline(ingress_qdisc_message(ifindex)?);
    let op = || format!("add an ingress qdisc to link #{ifindex}");
    match request(handle, message, NLM_F_CREATE | NLM_F_EXCL, op).await {
        Err(e) if e.is(libc::EEXIST) => Ok(()),
        other => other,
    }
}

/// Attach program `prog_fd` as the direct-action `cls_bpf` filter in `slot` of link
/// `ifindex`, or swap the program of the filter already there (`NLM_F_REPLACE`). The
/// link needs an `ingress` (or `clsact`) qdisc ([`ensure_ingress_qdisc`]).
pub async fn replace_bpf_filter(
    handle: &Handle,
    ifindex: u32,
    slot: FilterSlot,
    prog_fd: u32,
    name: &str,
) -> KernelResult<()> {
    let op = || {
        format!(
            "attach bpf filter {name} at {} of link #{ifindex}",
            slot.hook.name()
        )
    };
    let message =
        RouteNetlinkMessage::NewTrafficFilter(bpf_filter_message(ifindex, slot, prog_fd, name)?);
    request(handle, message, NLM_F_CREATE | NLM_F_REPLACE, op).await
}

/// The `cls_bpf` filters at `hook` of link `ifindex`. A link without the qdisc has none.
pub async fn bpf_filters(
    handle: &Handle,
    ifindex: u32,
    hook: Hook,
) -> KernelResult<Vec<BpfFilter>> {
    let op = || format!("list the {} filters of link #{ifindex}", hook.name());
    let mut message = TcMessage::with_index(index_of(ifindex, "list filters")?);
    message.header.parent = hook.parent();
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::GetTrafficFilter(message));
    req.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut handle = handle.clone();
    let responses = handle
        .request(req)
        .map_err(|e| KernelError::from_netlink(op(), e))?;
    let messages: Vec<NetlinkMessage<RouteNetlinkMessage>> = responses.collect().await;
    let mut filters = Vec::new();
    for message in messages {
        match message.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewTrafficFilter(tc)) => {
                filters.extend(decode_bpf_filter(&tc));
            }
            NetlinkPayload::Error(e) => {
                let e = KernelError::from_netlink(op(), rtnetlink::Error::NetlinkError(e));
                // No qdisc: no hook to list (EINVAL from a missing parent qdisc).
                if e.is(libc::EINVAL) || e.is_not_found() {
                    return Ok(Vec::new());
                }
                return Err(e);
            }
            _ => {}
        }
    }
    Ok(filters)
}

/// Send `message` with `flags`, acknowledged; the kernel's refusal is an error naming
/// `op`, with its errno.
async fn request(
    handle: &Handle,
    message: RouteNetlinkMessage,
    flags: u16,
    op: impl Fn() -> String,
) -> KernelResult<()> {
    let mut req = NetlinkMessage::from(message);
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    let mut handle = handle.clone();
    let mut responses = handle
        .request(req)
        .map_err(|e| KernelError::from_netlink(op(), e))?;
    while let Some(message) = responses.next().await {
        if let NetlinkPayload::Error(e) = message.payload {
            return Err(KernelError::from_netlink(
                op(),
                rtnetlink::Error::NetlinkError(e),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rtnetlink::packet_core::{Emitable as _, Parseable as _};

    use super::*;

    const INGRESS: FilterSlot = FilterSlot {
        hook: Hook::Ingress,
        priority: 1,
        handle: 1,
    };

    fn round_trip(message: &TcMessage) -> TcMessage {
        let mut bytes = vec![0u8; message.buffer_len()];
        message.emit(&mut bytes);
        TcMessage::parse(bytes.as_slice()).unwrap()
    }

    #[test]
    fn the_ingress_qdisc_sits_at_the_ingress_parent_with_its_own_handle() {
        let m = ingress_qdisc_message(7).unwrap();
        assert_eq!(m.header.index, 7);
        assert_eq!(u32::from(m.header.parent), 0xffff_fff1);
        assert_eq!(u32::from(m.header.handle), 0xffff_0000);
        assert!(m.attributes.contains(&TcAttribute::Kind("ingress".into())));
    }

    #[test]
    fn a_bpf_filter_names_its_hook_priority_protocol_and_program() {
        let m = bpf_filter_message(7, INGRESS, 42, "nk_pod_egress").unwrap();
        assert_eq!(u32::from(m.header.parent), 0xffff_fff2);
        assert_eq!(u32::from(m.header.handle), 1);
        // Priority 1, protocol ETH_P_ALL as the wire carries it (0x0300 on little endian).
        assert_eq!(m.header.info >> 16, 1);
        assert_eq!((m.header.info & 0xffff) as u16, 0x0003u16.to_be());
        let egress = FilterSlot {
            hook: Hook::Egress,
            ..INGRESS
        };
        let m2 = bpf_filter_message(7, egress, 42, "x").unwrap();
        assert_eq!(u32::from(m2.header.parent), 0xffff_fff3);

        let parsed = decode_bpf_filter(&round_trip(&m)).unwrap();
        assert_eq!(parsed.priority, 1);
        assert_eq!(parsed.handle, 1);
        assert_eq!(parsed.name.as_deref(), Some("nk_pod_egress"));
        assert!(parsed.direct_action);
    }

    #[test]
    fn other_classifiers_and_classifier_heads_are_not_bpf_filters() {
        let mut m = TcMessage::with_index(3);
        m.header.handle = TcHandle::from(1);
        m.attributes.push(TcAttribute::Kind("u32".into()));
        assert_eq!(decode_bpf_filter(&m), None);
        let mut head = TcMessage::with_index(3);
        head.attributes.push(TcAttribute::Kind("bpf".into()));
        assert_eq!(decode_bpf_filter(&head), None);
    }

    #[test]
    fn index_zero_is_refused_before_the_kernel_sees_it() {
        assert!(ingress_qdisc_message(0).unwrap_err().is(libc::EINVAL));
        assert!(bpf_filter_message(u32::MAX, INGRESS, 1, "x").is_err());
    }
}
