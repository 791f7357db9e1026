//! The hand-off to the agent: typed calls over `netkit_api`, behind a trait so the
//! decision logic runs against a fake agent in unit tests.

use std::path::{Path, PathBuf};
use std::time::Duration;

use netkit_api::{
    AddEndpoint, AgentStatus, ClientError, Endpoint, EndpointId, ErrorKind, Request, Response,
};

/// One request, one reply.
pub trait AgentApi {
    fn call(&self, request: &Request) -> Result<Response, ClientError>;
}

/// The agent on its unix socket.
pub struct SocketAgent {
    socket: PathBuf,
    timeout: Duration,
}

impl SocketAgent {
    pub fn new(socket: &Path) -> SocketAgent {
        SocketAgent {
            socket: socket.to_path_buf(),
            timeout: netkit_api::DEFAULT_TIMEOUT,
        }
    }
}

impl AgentApi for SocketAgent {
    fn call(&self, request: &Request) -> Result<Response, ClientError> {
        netkit_api::call(&self.socket, request, self.timeout)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("agent {op}: {source}")]
pub struct AgentError {
    pub op: &'static str,
    #[source]
    pub source: ClientError,
}

impl AgentError {
    /// The agent cannot be reached, did not answer, or is not ready: retrying later
    /// can succeed (and a deletion can wait in the queue).
    pub fn is_unavailable(&self) -> bool {
        match &self.source {
            ClientError::Connect { .. } | ClientError::Io(_) | ClientError::NoReply => true,
            ClientError::Agent(e) => e.kind == ErrorKind::NotReady,
            ClientError::Decode(_) | ClientError::Unexpected(_) => false,
        }
    }

    /// The request may have taken effect: it reached the agent and no error reply came
    /// back (the agent rolls back its own failures before replying).
    pub fn may_have_applied(&self) -> bool {
        !matches!(
            self.source,
            ClientError::Connect { .. } | ClientError::Agent(_)
        )
    }
}

fn unexpected(op: &'static str, reply: Response) -> AgentError {
    AgentError {
        op,
        source: ClientError::Unexpected(format!("{reply:?}")),
    }
}

fn call(api: &dyn AgentApi, op: &'static str, request: &Request) -> Result<Response, AgentError> {
    api.call(request)
        .map_err(|source| AgentError { op, source })
}

/// Program the endpoint; `Ok` means the datapath is installed.
pub fn add_endpoint(api: &dyn AgentApi, add: AddEndpoint) -> Result<Endpoint, AgentError> {
    const OP: &str = "add endpoint";
    match call(api, OP, &Request::AddEndpoint(add))? {
        Response::Endpoint(endpoint) => Ok(endpoint),
        other => Err(unexpected(OP, other)),
    }
}

/// Remove the endpoint; succeeds when it is unknown.
pub fn del_endpoint(api: &dyn AgentApi, id: &EndpointId) -> Result<(), AgentError> {
    const OP: &str = "delete endpoint";
    let request = Request::DelEndpoint {
        id: id.clone(),
        take_link: false,
    };
    match call(api, OP, &request)? {
        Response::Done | Response::Removed { .. } => Ok(()),
        other => Err(unexpected(OP, other)),
    }
}

/// Hand the endpoint *and its host link* to the agent, which tears both down after
/// replying. `true`: the agent took them; `false`: it had no such endpoint (or is an
/// agent from before this request), so any link is still the caller's to delete.
pub fn release_endpoint(api: &dyn AgentApi, id: &EndpointId) -> Result<bool, AgentError> {
    const OP: &str = "release endpoint";
    let request = Request::DelEndpoint {
        id: id.clone(),
        take_link: true,
    };
    match call(api, OP, &request)? {
        Response::Releasing => Ok(true),
        Response::Done | Response::Removed { .. } => Ok(false),
        other => Err(unexpected(OP, other)),
    }
}

/// Wait for the agent to finish a teardown of `id` that a DEL handed over.
pub fn settle_endpoint(api: &dyn AgentApi, id: &EndpointId) -> Result<(), AgentError> {
    const OP: &str = "settle endpoint";
    match call(api, OP, &Request::SettleEndpoint { id: id.clone() })? {
        Response::Done => Ok(()),
        other => Err(unexpected(OP, other)),
    }
}

/// The endpoint, or `None` when the agent does not know it.
pub fn get_endpoint(api: &dyn AgentApi, id: &EndpointId) -> Result<Option<Endpoint>, AgentError> {
    const OP: &str = "get endpoint";
    match api.call(&Request::GetEndpoint { id: id.clone() }) {
        Ok(Response::Endpoint(endpoint)) => Ok(Some(endpoint)),
        Ok(other) => Err(unexpected(OP, other)),
        Err(ClientError::Agent(e)) if e.kind == ErrorKind::NotFound => Ok(None),
        Err(source) => Err(AgentError { op: OP, source }),
    }
}

pub fn status(api: &dyn AgentApi) -> Result<AgentStatus, AgentError> {
    const OP: &str = "status";
    match call(api, OP, &Request::Status)? {
        Response::Status(status) => Ok(status),
        other => Err(unexpected(OP, other)),
    }
}

/// Remove every endpoint not in `valid`; returns the removed ones.
pub fn gc(api: &dyn AgentApi, valid: &[EndpointId]) -> Result<Vec<EndpointId>, AgentError> {
    const OP: &str = "gc";
    match call(
        api,
        OP,
        &Request::Gc {
            valid: valid.to_vec(),
        },
    )? {
        Response::Removed { removed } => Ok(removed),
        other => Err(unexpected(OP, other)),
    }
}

#[cfg(test)]
mod tests {
    use netkit_api::ApiError;

    use super::*;

    fn err(source: ClientError) -> AgentError {
        AgentError { op: "x", source }
    }

    #[test]
    fn unavailability_is_told_apart_from_refusal() {
        let connect = err(ClientError::Connect {
            path: "/x".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
        assert!(connect.is_unavailable() && !connect.may_have_applied());
        let timeout = err(ClientError::Io(std::io::Error::from(
            std::io::ErrorKind::WouldBlock,
        )));
        assert!(timeout.is_unavailable() && timeout.may_have_applied());
        let not_ready = err(ClientError::Agent(ApiError::new(
            ErrorKind::NotReady,
            "loading",
        )));
        assert!(not_ready.is_unavailable() && !not_ready.may_have_applied());
        let refused = err(ClientError::Agent(ApiError::new(
            ErrorKind::Conflict,
            "taken",
        )));
        assert!(!refused.is_unavailable() && !refused.may_have_applied());
    }
}
