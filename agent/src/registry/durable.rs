//! Crash-atomic file replacement: after a crash or power loss a file holds its old
//! content or its new content, never a mix, and a completed write survives.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// What a file being replaced is called until it is renamed over the real one.
pub const TMP_SUFFIX: &str = ".tmp";

/// Which step of a durable write failed.
#[derive(Debug, thiserror::Error)]
#[error("{what} {path}: {source}")]
pub struct DurableError {
    pub what: &'static str,
    pub path: PathBuf,
    pub source: std::io::Error,
}

fn failed(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DurableError {
    let path = path.to_path_buf();
    move |source| DurableError { what, path, source }
}

/// The content of `path`; `None` when there is no such file (a record or registry that
/// was never written, or already removed).
pub fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, DurableError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(failed("reading", path)(source)),
    }
}

/// Replace `path` with `bytes`: write a temporary file beside it, fsync it, then rename
/// it over `path`. The rename is durable only once the directory is synced
/// ([`sync_dir`]); callers replacing several files in one directory sync it once.
pub fn replace(path: &Path, bytes: &[u8]) -> Result<(), DurableError> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(TMP_SUFFIX);
    let tmp = PathBuf::from(tmp_name);
    let mut file = File::create(&tmp).map_err(failed("creating", &tmp))?;
    file.write_all(bytes).map_err(failed("writing", &tmp))?;
    // Without this, the rename can reach the disk before the data: a crash would leave
    // an empty or partial file under the final name.
    fsync(&file).map_err(failed("fsync of", &tmp))?;
    std::fs::rename(&tmp, path).map_err(failed("renaming", &tmp))
}

/// Remove `path` if it exists (durable once the directory is synced).
pub fn remove(path: &Path) -> Result<(), DurableError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(failed("removing", path)(e)),
    }
}

/// Make the renames and removals in `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<(), DurableError> {
    File::open(dir)
        .and_then(|d| fsync(&d))
        .map_err(failed("fsync of", dir))
}

fn fsync(file: &File) -> std::io::Result<()> {
    #[cfg(test)]
    counting::FSYNCS.with(|n| n.set(n.get() + 1));
    file.sync_all()
}

/// The fsyncs this thread made, so tests can hold each change to its cost.
#[cfg(test)]
pub mod counting {
    use std::cell::Cell;

    thread_local! {
        pub(super) static FSYNCS: Cell<usize> = const { Cell::new(0) };
    }

    /// The fsyncs `f` made on this thread, and its result.
    pub fn fsyncs<T>(f: impl FnOnce() -> T) -> (usize, T) {
        let before = FSYNCS.with(Cell::get);
        let out = f();
        (FSYNCS.with(Cell::get) - before, out)
    }
}
