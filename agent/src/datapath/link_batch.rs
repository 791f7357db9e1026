//! Deleting several pods' links in one unregistration.
//!
//! Each `RTM_DELLINK` of one device is one `unregister_netdevice_many` in the kernel:
//! expedited grace periods under the rtnl lock, then (after the lock) an `rcu_barrier()`
//! before the device is freed. Here that was 20–24 ms per device, one device after
//! another; fifty devices deleted by group took 22 ms together. So the agent's teardowns
//! put the links of all the pods queued for teardown in one device group and delete the
//! group: the kernel's `rtnl_group_dellink` queues them all and unregisters them at once.
//!
//! A device group is a plain number any administrator may use (`ip link set … group N`),
//! and deleting a group deletes every member. So the group is drawn at random from the
//! upper half of the number space for each batch, and the namespace's links are read back
//! before the deletion: if any link not in the batch is in the group, the batch is not
//! deleted by group (the caller falls back to deleting its links one by one).

use std::collections::BTreeSet;

use netkit_netlink::{Kernel, KernelError, Ns};

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error("device group {group} also holds link #{index} ({name}), which is not being deleted")]
    Foreign {
        group: u32,
        index: u32,
        name: String,
    },
}

/// A group for one batch: random, in the upper half of the u32 space (the groups people
/// name in `/etc/iproute2/group` are small numbers), never 0 (the default group).
pub fn random_group() -> u32 {
    let mut bytes = [0u8; 4];
    // SAFETY: `bytes` is a live buffer of the length passed.
    let got = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    let random = if got == 4 {
        u32::from_ne_bytes(bytes)
    } else {
        // No getrandom: the time's nanoseconds and the pid still differ between batches
        // and agents; the read-back below is what makes a collision harmless.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        nanos ^ std::process::id().rotate_left(16)
    };
    random | 0x8000_0000
}

/// Delete the links `indexes` of the host namespace together, through device group
/// `group`. Links already gone are skipped. Nothing is deleted when a link outside
/// `indexes` turns out to be in `group`; the links of `indexes` are then left in it.
pub fn delete_together<K: Kernel>(
    kernel: &mut K,
    indexes: &[u32],
    group: u32,
) -> Result<(), BatchError> {
    let mut members = BTreeSet::new();
    for &index in indexes {
        match kernel.set_link_group(Ns::Host, index, group) {
            Ok(()) => {
                members.insert(index);
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    if members.is_empty() {
        return Ok(());
    }
    if let Some(foreign) = kernel
        .links(Ns::Host)?
        .into_iter()
        .find(|l| l.group == group && !members.contains(&l.index))
    {
        return Err(BatchError::Foreign {
            group,
            index: foreign.index,
            name: foreign.name,
        });
    }
    match kernel.delete_link_group(Ns::Host, group) {
        // Every member went meanwhile (deleted by someone else): nothing left to do.
        Err(e) if e.is_not_found() => Ok(()),
        other => Ok(other?),
    }
}

#[cfg(test)]
mod tests {
    use netkit_netlink::fake::FakeKernel;
    use netkit_netlink::{Link, LinkKind};

    use super::*;

    fn kernel_with(links: &[(u32, &str, u32)]) -> FakeKernel {
        let mut kernel = FakeKernel::default();
        for &(index, name, group) in links {
            kernel.host.links.insert(
                index,
                Link {
                    index,
                    name: name.to_string(),
                    kind: Some(LinkKind::Veth),
                    group,
                    ..Link::default()
                },
            );
        }
        kernel
    }

    fn names(kernel: &FakeKernel) -> Vec<String> {
        kernel.host.links.values().map(|l| l.name.clone()).collect()
    }

    #[test]
    fn deletes_the_batch_in_one_group_request_and_nothing_else() {
        let mut kernel = kernel_with(&[
            (1, "uplink", 0),
            (2, "nk1", 0),
            (3, "nk2", 0),
            (4, "nk3", 7),
        ]);
        delete_together(&mut kernel, &[2, 3, 4], random_group()).unwrap();
        assert_eq!(names(&kernel), ["uplink"]);
        let deletes: Vec<_> = kernel
            .log
            .iter()
            .filter(|op| op.starts_with("delete"))
            .collect();
        assert_eq!(deletes.len(), 1, "{:?}", kernel.log);
        assert!(deletes[0].starts_with("delete_link_group"));
    }

    #[test]
    fn a_foreign_link_in_the_group_stops_the_group_deletion() {
        let group = 0x8000_0042;
        let mut kernel = kernel_with(&[(1, "theirs", group), (2, "nk1", 0), (3, "nk2", 0)]);
        let err = delete_together(&mut kernel, &[2, 3], group).unwrap_err();
        assert!(
            matches!(&err, BatchError::Foreign { index: 1, name, .. } if name == "theirs"),
            "{err}"
        );
        assert_eq!(names(&kernel), ["theirs", "nk1", "nk2"]);
    }

    #[test]
    fn links_already_gone_are_skipped() {
        let mut kernel = kernel_with(&[(1, "uplink", 0), (2, "nk1", 0)]);
        delete_together(&mut kernel, &[2, 9], random_group()).unwrap();
        assert_eq!(names(&kernel), ["uplink"]);
        // Nothing of the batch left: no group request at all.
        delete_together(&mut kernel, &[9], random_group()).unwrap();
        let group_deletes = kernel
            .log
            .iter()
            .filter(|op| op.starts_with("delete_link_group"))
            .count();
        assert_eq!(group_deletes, 1, "{:?}", kernel.log);
    }

    #[test]
    fn the_group_is_never_a_small_or_default_one() {
        for _ in 0..100 {
            assert!(random_group() >= 0x8000_0000);
        }
    }
}
