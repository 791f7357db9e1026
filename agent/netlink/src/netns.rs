//! Network namespaces without ever moving a shared thread: work that must happen
//! inside another namespace (creating a netlink socket bound to it) runs on a
//! dedicated short-lived thread that `setns()`es and exits. A netlink socket stays
//! bound to the namespace it was created in, so the socket outlives the thread.
//!
//! Only the socket is made in the other namespace, never a tokio runtime: the first
//! runtime with I/O a process builds opens tokio's process-wide signal socketpair in
//! the namespace of the building thread and keeps it until exit, which would keep that
//! namespace alive after everything else let go of it.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("network namespace {} does not exist", path.display())]
    NotFound { path: PathBuf },
    #[error("CNI_NETNS={} is the plugin's own network namespace", path.display())]
    IsOwn { path: PathBuf },
    #[error("CNI_NETNS={} is not a network namespace", path.display())]
    NotNetns { path: PathBuf },
    #[error("cannot open network namespace {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot enter network namespace {}: {source}", path.display())]
    Enter { path: PathBuf, source: nix::Error },
    #[error("the thread working in network namespace {} panicked", path.display())]
    ThreadPanicked { path: PathBuf },
}

/// Open a network namespace file, refusing the plugin's own namespace (the runtime
/// must hand us the pod's, and wiring the host to itself would be destructive).
pub fn open(path: &Path) -> Result<OwnedFd, NetnsError> {
    let file = open_file(path)?;
    let theirs = file.metadata().map_err(|source| NetnsError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    if let Ok(ours) = std::fs::metadata("/proc/thread-self/ns/net")
        && ours.dev() == theirs.dev()
        && ours.ino() == theirs.ino()
    {
        return Err(NetnsError::IsOwn {
            path: path.to_path_buf(),
        });
    }
    Ok(OwnedFd::from(file))
}

/// Open a network namespace file, whichever namespace it is.
pub fn open_any(path: &Path) -> Result<OwnedFd, NetnsError> {
    open_file(path).map(OwnedFd::from)
}

fn open_file(path: &Path) -> Result<File, NetnsError> {
    File::open(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => NetnsError::NotFound {
            path: path.to_path_buf(),
        },
        _ => NetnsError::Open {
            path: path.to_path_buf(),
            source,
        },
    })
}

/// Run `f` on a fresh thread inside the namespace `fd`; the calling thread stays
/// where it is, and the helper thread ends with `f`.
pub fn run_in<T, F>(path: &Path, fd: &OwnedFd, f: F) -> Result<T, NetnsError>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    std::thread::scope(|scope| {
        let worker = scope.spawn(|| {
            setns(fd.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|source| match source {
                nix::Error::EINVAL => NetnsError::NotNetns {
                    path: path.to_path_buf(),
                },
                source => NetnsError::Enter {
                    path: path.to_path_buf(),
                    source,
                },
            })?;
            Ok(f())
        });
        worker.join().unwrap_or_else(|_| {
            Err(NetnsError::ThreadPanicked {
                path: path.to_path_buf(),
            })
        })
    })
}

/// A netlink connection whose socket lives in the namespace `fd` (made by a helper
/// thread there), driven by a task on `runtime`.
pub fn connect_in(
    path: &Path,
    fd: &OwnedFd,
    runtime: &tokio::runtime::Handle,
) -> Result<rtnetlink::Handle, NetnsError> {
    let rt = runtime.clone();
    let made = run_in(path, fd, move || {
        let _entered = rt.enter();
        rtnetlink::new_connection()
    })?;
    let (connection, handle, _) = made.map_err(|source| NetnsError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    runtime.spawn(connection);
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_namespace_is_not_found() {
        let err = open(Path::new("/nonexistent/netns")).unwrap_err();
        assert!(matches!(err, NetnsError::NotFound { .. }), "{err}");
    }

    #[test]
    fn our_own_namespace_is_refused() {
        let err = open(Path::new("/proc/self/ns/net")).unwrap_err();
        assert!(matches!(err, NetnsError::IsOwn { .. }), "{err}");
    }

    #[test]
    fn a_plain_file_is_not_a_namespace() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let fd = open(file.path()).unwrap();
        let err = run_in(file.path(), &fd, || ()).unwrap_err();
        // Unprivileged test runs get EPERM instead of EINVAL.
        assert!(
            matches!(err, NetnsError::NotNetns { .. } | NetnsError::Enter { .. }),
            "{err}"
        );
    }
}
