//! One invocation at a time per attachment. Runtimes normally serialise the commands of
//! one container, but nothing in the spec promises it, and an ADD racing a DEL of the
//! same container id and interface could leave a link the registry no longer knows.
//! ADD, DEL and CHECK of one attachment therefore hold an exclusive `flock` for their
//! whole run; different attachments proceed in parallel.
//!
//! The locks are a fixed set of stripe files (the attachment's hash picks one): no lock
//! file is ever removed, so there is no window where two invocations lock different
//! inodes of "the same" file, and the directory never grows. Two attachments that share
//! a stripe merely wait for each other.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use netkit_api::EndpointId;
use nix::fcntl::{Flock, FlockArg};

/// Number of stripe files.
const STRIPES: u64 = 64;

#[derive(Debug, thiserror::Error)]
#[error("cannot lock {path}: {source}")]
pub struct LockError {
    path: PathBuf,
    source: std::io::Error,
}

/// Held for the invocation's lifetime; dropping it unlocks.
pub struct AttachmentLock {
    _lock: Flock<File>,
}

/// Block until this invocation holds the attachment's lock.
pub fn lock(state_dir: &Path, id: &EndpointId) -> Result<AttachmentLock, LockError> {
    let dir = state_dir.join("locks");
    let path = dir.join(format!("{:02}.lock", stripe(id)));
    let err = |source| LockError {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(err)?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(err)?;
    let lock = Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, errno)| err(std::io::Error::from(errno)))?;
    Ok(AttachmentLock { _lock: lock })
}

/// The stripe an attachment locks: FNV-1a of container id, a NUL, and ifname. Spelled
/// out rather than std's hasher, whose algorithm may change between builds: two plugin
/// versions running side by side during an upgrade must pick the same stripe.
fn stripe(id: &EndpointId) -> u64 {
    let bytes = id
        .container_id
        .bytes()
        .chain(std::iter::once(0))
        .chain(id.ifname.bytes());
    let hash = bytes.fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    hash % STRIPES
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_attachment_is_locked_by_one_holder_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let id = EndpointId::new("c1", "eth0");
        let held = lock(dir.path(), &id).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let path = dir.path().to_path_buf();
        let waiter = std::thread::spawn(move || {
            let _second = lock(&path, &EndpointId::new("c1", "eth0")).unwrap();
            tx.send(()).unwrap();
        });
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(200))
                .is_err(),
            "a second holder got the lock"
        );
        drop(held);
        rx.recv_timeout(std::time::Duration::from_secs(5))
            .expect("the waiter never got the lock");
        waiter.join().unwrap();
    }

    #[test]
    fn stripes_are_stable_and_bounded() {
        let id = EndpointId::new("abc", "eth0");
        assert_eq!(stripe(&id), stripe(&id.clone()));
        assert!(stripe(&id) < STRIPES);
    }
}
