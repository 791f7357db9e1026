//! Crash-atomic file replacement: whoever reads a file — the agent itself after a crash
//! or a restart — finds its old content or its new content, never a mix.
//!
//! No fsync, on purpose. What the state directory describes (the pods' devices, the
//! BPF maps and pins in bpffs, the addresses in those maps) lives in the running kernel
//! and is gone after a power loss or a kernel crash, the only events an fsync guards
//! against. An agent that crashes or is replaced leaves the kernel running, and the
//! kernel's page cache holds every completed write and rename for the next agent to
//! read. On the ext4 of the development VM the two fsyncs a record took (file and
//! directory) were 0.7 ms of the agent's 1.2 ms per ADD, and on a DEL they queued
//! behind the teardowns' own in the journal. After a reboot the start-up reconcile
//! drops records whose device is gone, and sets aside one that a power loss left torn.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// What a file being replaced is called until it is renamed over the real one.
pub const TMP_SUFFIX: &str = ".tmp";

/// Which step of a file replacement failed.
#[derive(Debug, thiserror::Error)]
#[error("{what} {path}: {source}")]
pub struct FileError {
    pub what: &'static str,
    pub path: PathBuf,
    pub source: std::io::Error,
}

fn failed(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> FileError {
    let path = path.to_path_buf();
    move |source| FileError { what, path, source }
}

/// The content of `path`; `None` when there is no such file (a record or registry that
/// was never written, or already removed).
pub fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, FileError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(failed("reading", path)(source)),
    }
}

/// Replace `path` with `bytes`: write a temporary file beside it, then rename it over
/// `path` (atomic: a reader sees the whole old file or the whole new one).
pub fn replace(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(TMP_SUFFIX);
    let tmp = PathBuf::from(tmp_name);
    let mut file = File::create(&tmp).map_err(failed("creating", &tmp))?;
    file.write_all(bytes).map_err(failed("writing", &tmp))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(failed("renaming", &tmp))?;
    #[cfg(test)]
    counting::touched();
    Ok(())
}

/// Remove `path` if it exists.
pub fn remove(path: &Path) -> Result<(), FileError> {
    match std::fs::remove_file(path) {
        Ok(()) => {
            #[cfg(test)]
            counting::touched();
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(failed("removing", path)(e)),
    }
}

/// The files this thread replaced or removed, so tests can hold each change to its
/// cost.
#[cfg(test)]
pub mod counting {
    use std::cell::Cell;

    thread_local! {
        static TOUCHED: Cell<usize> = const { Cell::new(0) };
    }

    pub(super) fn touched() {
        TOUCHED.with(|n| n.set(n.get() + 1));
    }

    /// The files `f` replaced or removed on this thread, and its result.
    pub fn files_touched<T>(f: impl FnOnce() -> T) -> (usize, T) {
        let before = TOUCHED.with(Cell::get);
        let out = f();
        (TOUCHED.with(Cell::get) - before, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replacement_leaves_the_whole_new_file_and_no_temporary() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("record.json");
        replace(&path, b"old").unwrap();
        replace(&path, b"new").unwrap();
        assert_eq!(read_if_exists(&path).unwrap().as_deref(), Some(&b"new"[..]));
        let files: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
        assert_eq!(files.len(), 1, "a temporary file is left");
        remove(&path).unwrap();
        remove(&path).unwrap();
        assert_eq!(read_if_exists(&path).unwrap(), None);
    }
}
