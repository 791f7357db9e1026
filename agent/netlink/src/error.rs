//! The kernel error type: which operation failed, and the errno when the kernel gave one.

/// A failed kernel operation, named, with its errno when the kernel gave one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{op}: {message}")]
pub struct KernelError {
    pub op: String,
    pub errno: Option<i32>,
    pub message: String,
}

impl KernelError {
    pub fn new(
        op: impl Into<String>,
        errno: Option<i32>,
        message: impl Into<String>,
    ) -> KernelError {
        KernelError {
            op: op.into(),
            errno,
            message: message.into(),
        }
    }

    pub fn from_errno(op: impl Into<String>, errno: i32) -> KernelError {
        let message = std::io::Error::from_raw_os_error(errno).to_string();
        KernelError::new(op, Some(errno), message)
    }

    pub fn from_io(op: impl Into<String>, e: &std::io::Error) -> KernelError {
        KernelError::new(op, e.raw_os_error(), e.to_string())
    }

    /// An rtnetlink failure: the kernel's errno for a netlink error message, none for
    /// anything else (a closed connection, a message that did not parse).
    pub fn from_netlink(op: impl Into<String>, e: rtnetlink::Error) -> KernelError {
        match e {
            rtnetlink::Error::NetlinkError(msg) => {
                KernelError::from_errno(op, msg.raw_code().abs())
            }
            other => KernelError::new(op, None, other.to_string()),
        }
    }

    /// A namespace that could not be opened or entered, with the errno behind it.
    pub fn from_netns(op: impl Into<String>, e: &crate::netns::NetnsError) -> KernelError {
        use crate::netns::NetnsError;
        let errno = match e {
            NetnsError::NotFound { .. } => Some(libc::ENOENT),
            NetnsError::NotNetns { .. } => Some(libc::EINVAL),
            NetnsError::Open { source, .. } => source.raw_os_error(),
            NetnsError::Enter { source, .. } => Some(*source as i32),
            NetnsError::IsOwn { .. } | NetnsError::ThreadPanicked { .. } => None,
        };
        KernelError::new(op, errno, e.to_string())
    }

    /// A request we refuse to send: the kernel would answer `EINVAL`.
    pub fn invalid(op: impl Into<String>, why: impl std::fmt::Display) -> KernelError {
        KernelError::new(op, Some(libc::EINVAL), why.to_string())
    }

    pub fn is(&self, errno: i32) -> bool {
        self.errno == Some(errno)
    }

    /// The object is already gone (`ENODEV`, `ENOENT`, `ESRCH`).
    pub fn is_not_found(&self) -> bool {
        self.is(libc::ENODEV) || self.is(libc::ENOENT) || self.is(libc::ESRCH)
    }

    /// The same error, its operation suffixed with where it ran (`… (pod)`).
    pub fn within(mut self, place: &str) -> KernelError {
        self.op = format!("{} ({place})", self.op);
        self
    }
}

pub type KernelResult<T> = Result<T, KernelError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_know_their_errno() {
        let e = KernelError::from_errno("create link", libc::EEXIST);
        assert!(e.is(libc::EEXIST));
        assert!(!e.is_not_found());
        assert!(KernelError::from_errno("delete link", libc::ENODEV).is_not_found());
        assert!(e.to_string().starts_with("create link: "));
    }

    #[test]
    fn errors_name_where_they_ran() {
        let e = KernelError::from_errno("look up link eth0", libc::EPERM).within("pod");
        assert_eq!(e.op, "look up link eth0 (pod)");
        assert!(KernelError::invalid("add route", "bad prefix").is(libc::EINVAL));
    }
}
