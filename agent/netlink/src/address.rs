//! Interface addresses.

use std::net::IpAddr;

use futures::TryStreamExt as _;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use rtnetlink::Handle;

use crate::error::{KernelError, KernelResult};

/// Add `addr/prefix` to link `index`; IPv6 addresses are added with `IFA_F_NODAD`
/// (usable at once).
pub async fn add(handle: &Handle, index: u32, addr: IpAddr, prefix: u8) -> KernelResult<()> {
    let mut request = handle.address().add(index, addr, prefix);
    if addr.is_ipv6() {
        request
            .message_mut()
            .attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    request.execute().await.map_err(|e| {
        KernelError::from_netlink(format!("add address {addr}/{prefix} to link #{index}"), e)
    })
}

/// The addresses of link `index`, both families.
pub async fn list(handle: &Handle, index: u32) -> KernelResult<Vec<(IpAddr, u8)>> {
    let msgs: Vec<AddressMessage> = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(|e| KernelError::from_netlink(format!("list addresses of link #{index}"), e))?;
    Ok(msgs
        .into_iter()
        .filter(|m| m.header.index == index)
        .filter_map(decode)
        .collect())
}

/// `(address, prefix length)` of an address message: `IFA_LOCAL` when present (the
/// local end of a point-to-point address), else `IFA_ADDRESS`.
pub fn decode(msg: AddressMessage) -> Option<(IpAddr, u8)> {
    let prefix = msg.header.prefix_len;
    let mut address = None;
    for attr in msg.attributes {
        match attr {
            AddressAttribute::Local(ip) => return Some((ip, prefix)),
            AddressAttribute::Address(ip) => address = Some(ip),
            _ => {}
        }
    }
    address.map(|ip| (ip, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_address_wins_over_the_peer() {
        let mut msg = AddressMessage::default();
        msg.header.prefix_len = 32;
        msg.attributes = vec![
            AddressAttribute::Address("10.0.0.2".parse().unwrap()),
            AddressAttribute::Local("10.0.0.1".parse().unwrap()),
        ];
        assert_eq!(decode(msg.clone()), Some(("10.0.0.1".parse().unwrap(), 32)));
        msg.attributes.pop();
        assert_eq!(decode(msg.clone()), Some(("10.0.0.2".parse().unwrap(), 32)));
        msg.attributes.clear();
        assert_eq!(decode(msg), None);
    }
}
