//! The deletion queue: a DEL that arrives while the agent is unreachable still
//! succeeds — its agent half is written here and replayed by the next ADD, DEL, GC or
//! STATUS that finds the agent up. Each entry is one small JSON file (the endpoint id),
//! written to a temporary name and renamed into place; replays hold an exclusive
//! `flock` so two plugins never replay the same entry at once.
//!
//! The agent also reconciles on its own (endpoints whose link vanished), so a lost
//! queue costs time, not correctness.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use netkit_api::EndpointId;
use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest as _, Sha256};

use crate::agent::{self, AgentApi};

#[derive(Debug, thiserror::Error)]
#[error("deletion queue {}: {source}", path.display())]
pub struct QueueError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> QueueError + '_ {
    move |source| QueueError {
        path: path.to_path_buf(),
        source,
    }
}

pub struct DeletionQueue {
    dir: PathBuf,
}

impl DeletionQueue {
    /// The queue under the plugin's state directory.
    pub fn new(state_dir: &Path) -> DeletionQueue {
        DeletionQueue {
            dir: state_dir.join("del-queue"),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn entry_path(&self, id: &EndpointId) -> PathBuf {
        let digest = Sha256::digest(format!("{}/{}", id.container_id, id.ifname));
        let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{hex}.json"))
    }

    /// Remember that the agent must forget `id`.
    pub fn enqueue(&self, id: &EndpointId) -> Result<(), QueueError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io_error(&self.dir))?;
        let path = self.entry_path(id);
        let tmp = path.with_extension("tmp");
        let body = serde_json::to_vec(id).map_err(|e| QueueError {
            path: path.clone(),
            source: e.into(),
        })?;
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_error(&tmp))?;
        file.write_all(&body)
            .and_then(|()| file.sync_all())
            .map_err(io_error(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_error(&path))?;
        tracing::info!(endpoint = %id, "agent unavailable; endpoint deletion queued");
        Ok(())
    }

    /// The queued ids (unordered).
    pub fn pending(&self) -> Result<Vec<EndpointId>, QueueError> {
        Ok(self
            .entries()?
            .into_iter()
            .filter_map(|path| read_entry(&path))
            .collect())
    }

    fn entries(&self) -> Result<Vec<PathBuf>, QueueError> {
        let read = match fs::read_dir(&self.dir) {
            Ok(read) => read,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error(&self.dir)(e)),
        };
        let mut paths = Vec::new();
        for entry in read {
            let path = entry.map_err(io_error(&self.dir))?.path();
            if path.extension().is_some_and(|e| e == "json") {
                paths.push(path);
            }
        }
        Ok(paths)
    }

    /// Replay queued deletions; stops at the first sign the agent is still away.
    /// Returns how many were replayed.
    pub fn flush(&self, api: &dyn AgentApi) -> Result<usize, QueueError> {
        if self.entries()?.is_empty() {
            return Ok(0);
        }
        let lock_path = self.dir.join(".lock");
        let lock_file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io_error(&lock_path))?;
        let _lock =
            Flock::lock(lock_file, FlockArg::LockExclusive).map_err(|(_, errno)| QueueError {
                path: lock_path.clone(),
                source: errno.into(),
            })?;
        let mut replayed = 0;
        // Listed again under the lock: another plugin may have replayed some meanwhile.
        for path in self.entries()? {
            let Some(id) = read_entry(&path) else {
                tracing::warn!(path = %path.display(), "dropping an unreadable deletion queue entry");
                let _ = fs::remove_file(&path);
                continue;
            };
            match agent::del_endpoint(api, &id) {
                Ok(()) => {
                    fs::remove_file(&path).map_err(io_error(&path))?;
                    replayed += 1;
                    tracing::info!(endpoint = %id, "queued endpoint deletion replayed");
                }
                Err(e) if e.is_unavailable() => break,
                Err(e) => {
                    tracing::warn!(endpoint = %id, error = %e, "queued endpoint deletion failed; keeping it")
                }
            }
        }
        Ok(replayed)
    }
}

fn read_entry(path: &Path) -> Option<EndpointId> {
    serde_json::from_slice(&fs::read(path).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{FakeAgent, id};

    #[test]
    fn entries_wait_until_the_agent_is_back() {
        let dir = tempfile::tempdir().unwrap();
        let queue = DeletionQueue::new(dir.path());
        let agent = FakeAgent::new();
        agent.with(|s| s.up = false);
        queue.enqueue(&id("a")).unwrap();
        queue.enqueue(&id("b")).unwrap();
        queue.enqueue(&id("a")).unwrap();
        assert_eq!(queue.pending().unwrap().len(), 2);
        assert_eq!(queue.flush(&agent).unwrap(), 0);
        assert_eq!(queue.pending().unwrap().len(), 2);

        agent.with(|s| s.up = true);
        assert_eq!(queue.flush(&agent).unwrap(), 2);
        assert!(queue.pending().unwrap().is_empty());
        let deleted = agent.with(|s| s.deleted.clone());
        assert!(deleted.contains(&id("a")) && deleted.contains(&id("b")));
    }

    #[test]
    fn an_absent_queue_is_empty_and_costs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let queue = DeletionQueue::new(&dir.path().join("never-created"));
        assert_eq!(queue.flush(&FakeAgent::new()).unwrap(), 0);
        assert!(!queue.dir().exists());
    }

    #[test]
    fn unreadable_entries_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let queue = DeletionQueue::new(dir.path());
        queue.enqueue(&id("a")).unwrap();
        fs::write(queue.dir().join("junk.json"), b"{").unwrap();
        assert_eq!(queue.flush(&FakeAgent::new()).unwrap(), 1);
        assert!(queue.entries().unwrap().is_empty());
    }
}
