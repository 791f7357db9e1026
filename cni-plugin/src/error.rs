//! The plugin's error, gathering every module's, and the one place where each maps to
//! a CNI error code.

use netkit_api::{ClientError, ErrorKind};

use crate::agent::AgentError;
use crate::cmd::check::CheckError;
use crate::connector::ConnectorError;
use crate::delqueue::QueueError;
use crate::ipam::IpamError;
use crate::lock::LockError;
use crate::netlink::{KernelError, NetnsError};
use crate::spec::config::ConfigError;
use crate::spec::env::EnvError;
use crate::spec::error::{CniError, code};
use crate::spec::result::ResultError;
use crate::spec::version::VersionError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Version(#[from] VersionError),
    #[error(transparent)]
    Result(#[from] ResultError),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Check(#[from] CheckError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("cannot read the network configuration from stdin: {0}")]
    Stdin(std::io::Error),
    #[error("the agent programmed the endpoint but returned no addresses")]
    NoAddresses,
    #[error("the agent is not ready: {reason}")]
    AgentNotReady { reason: String },
    /// STATUS: the plugin cannot service ADD.
    #[error("netkit-cni is not available: {0}")]
    Unavailable(Box<Error>),
    /// A failed ADD whose roll-back left something behind.
    #[error("{cause}")]
    RollbackIncomplete {
        cause: Box<Error>,
        leftovers: Vec<String>,
    },
    /// Several independent failures (DEL, GC); the first decides the code.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Several(Vec<Error>),
}

impl Error {
    /// `Ok` for no errors, the error for one, `Several` for more.
    pub fn from_many(mut errors: Vec<Error>) -> Result<(), Error> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(Error::Several(errors)),
        }
    }

    /// The CNI error code. The spec's codes keep the spec's meaning; the rest are this
    /// plugin's (`spec::error::code`, 100+).
    pub fn code(&self) -> u32 {
        match self {
            Error::Env(_) => code::INVALID_ENVIRONMENT,
            Error::Config(ConfigError::Decode(_)) => code::DECODING_FAILURE,
            Error::Config(ConfigError::Version(_)) | Error::Version(_) => {
                code::INCOMPATIBLE_VERSION
            }
            Error::Config(ConfigError::Invalid { .. }) => code::INVALID_CONFIG,
            Error::Result(_) => code::DECODING_FAILURE,
            Error::Netns(e) => match e {
                NetnsError::NotFound { .. } => code::UNKNOWN_CONTAINER,
                NetnsError::IsOwn { .. } | NetnsError::NotNetns { .. } => code::INVALID_ENVIRONMENT,
                NetnsError::Open { .. }
                | NetnsError::Enter { .. }
                | NetnsError::ThreadPanicked { .. } => code::IO_FAILURE,
            },
            Error::Kernel(_) => code::KERNEL,
            Error::Connector(e) => match e {
                ConnectorError::NetkitUnsupported => code::INVALID_CONFIG,
                ConnectorError::Exists { .. } => code::INTERFACE_EXISTS,
                ConnectorError::NoPodNetns | ConnectorError::Kernel(_) => code::KERNEL,
            },
            Error::Agent(e) => agent_code(e),
            Error::Ipam(e) => match e {
                IpamError::NoCniPath { .. } => code::INVALID_ENVIRONMENT,
                IpamError::NotFound { .. } | IpamError::NoAddresses { .. } => code::INVALID_CONFIG,
                IpamError::Spawn { .. } | IpamError::Failed { .. } => code::IO_FAILURE,
                // The delegated plugin's own code, passed through.
                IpamError::Plugin { error, .. } => error.code,
                IpamError::BadResult(_) => code::DECODING_FAILURE,
            },
            Error::Queue(_) | Error::Stdin(_) | Error::Lock(_) => code::IO_FAILURE,
            Error::Check(CheckError::NoPrevResult) => code::INVALID_CONFIG,
            Error::Check(CheckError::Mismatch(_)) => code::CHECK_FAILED,
            Error::NoAddresses => code::AGENT,
            Error::AgentNotReady { .. } => code::TRY_AGAIN_LATER,
            Error::Unavailable(_) => code::NOT_AVAILABLE,
            Error::RollbackIncomplete { cause, .. } => cause.code(),
            Error::Several(errors) => errors.first().map_or(code::IO_FAILURE, Error::code),
        }
    }

    /// Longer context for the error document's `details`.
    fn details(&self) -> String {
        match self {
            Error::Ipam(IpamError::Plugin { error, .. }) => {
                error.details.clone().unwrap_or_default()
            }
            Error::RollbackIncomplete { cause, leftovers } => {
                let inner = cause.details();
                let left = format!("roll-back left behind: {}", leftovers.join("; "));
                if inner.is_empty() {
                    left
                } else {
                    format!("{inner}; {left}")
                }
            }
            Error::Unavailable(inner) => inner.details(),
            Error::Several(errors) => errors.first().map(Error::details).unwrap_or_default(),
            _ => String::new(),
        }
    }

    pub fn to_cni(&self) -> CniError {
        CniError::new(self.code(), self.to_string()).with_details(self.details())
    }
}

/// Transient trouble (unreachable, timed out, not ready, no free address yet) is 11;
/// refusals are 7 when our request was invalid, else the plugin's agent code.
fn agent_code(e: &AgentError) -> u32 {
    match &e.source {
        ClientError::Connect { .. } | ClientError::Io(_) | ClientError::NoReply => {
            code::TRY_AGAIN_LATER
        }
        ClientError::Decode(_) => code::DECODING_FAILURE,
        ClientError::Unexpected(_) => code::AGENT,
        ClientError::Agent(api) => match api.kind {
            ErrorKind::NotReady | ErrorKind::PoolExhausted => code::TRY_AGAIN_LATER,
            ErrorKind::InvalidRequest => code::INVALID_CONFIG,
            ErrorKind::NotFound | ErrorKind::Conflict | ErrorKind::Internal => code::AGENT,
        },
    }
}

#[cfg(test)]
mod tests {
    use netkit_api::ApiError;

    use super::*;

    fn agent(source: ClientError) -> Error {
        Error::Agent(AgentError {
            op: "add endpoint",
            source,
        })
    }

    #[test]
    fn agent_failures_map_by_kind() {
        let connect = ClientError::Connect {
            path: "/x".into(),
            source: std::io::ErrorKind::NotFound.into(),
        };
        assert_eq!(agent(connect).code(), 11);
        assert_eq!(agent(ClientError::NoReply).code(), 11);
        let api = |kind| agent(ClientError::Agent(ApiError::new(kind, "m")));
        assert_eq!(api(ErrorKind::PoolExhausted).code(), 11);
        assert_eq!(api(ErrorKind::NotReady).code(), 11);
        assert_eq!(api(ErrorKind::InvalidRequest).code(), 7);
        assert_eq!(api(ErrorKind::Internal).code(), 102);
        assert_eq!(api(ErrorKind::Conflict).code(), 102);
    }

    #[test]
    fn wrapped_errors_keep_their_cause_code() {
        let cause = Error::Connector(ConnectorError::Exists {
            name: "eth0".into(),
            ns: "pod",
        });
        let wrapped = Error::RollbackIncomplete {
            cause: Box::new(cause),
            leftovers: vec!["link nk1".into()],
        };
        let doc = wrapped.to_cni();
        assert_eq!(doc.code, 100);
        assert!(doc.details.unwrap().contains("link nk1"));
        let several = Error::Several(vec![
            Error::Kernel(KernelError::from_errno("delete link", libc::EBUSY)),
            Error::Queue(QueueError {
                path: "/q".into(),
                source: std::io::ErrorKind::Other.into(),
            }),
        ]);
        assert_eq!(several.code(), 101);
        assert!(several.to_string().contains("delete link") && several.to_string().contains("/q"));
        assert_eq!(Error::Unavailable(Box::new(Error::NoAddresses)).code(), 50);
    }

    #[test]
    fn ipam_errors_pass_the_plugin_code_through() {
        let e = Error::Ipam(IpamError::Plugin {
            plugin: "host-local".into(),
            command: crate::spec::env::Command::Add,
            error: CniError::new(7, "bad range").with_details("10.0.0.0/33"),
        });
        let doc = e.to_cni();
        assert_eq!((doc.code, doc.details.as_deref()), (7, Some("10.0.0.0/33")));
        assert!(doc.msg.contains("host-local") && doc.msg.contains("bad range"));
    }
}
