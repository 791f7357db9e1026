//! The agent's socket protocol, shared by the agent, its CLI and the CNI plugin.
//!
//! One request per connection: the client writes one JSON object and a newline, the
//! agent answers with one JSON object and a newline, then closes. An `Ok` reply to a
//! change means the change is *installed* (maps written, programs attached), not
//! merely accepted — the CNI plugin reports success to the runtime only after it.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod endpoint;
pub use endpoint::{Endpoint, EndpointId, IpConfig, LinkMode};

/// Default path of the agent socket.
pub const DEFAULT_SOCKET: &str = "/run/netkit/agent.sock";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Is the agent ready to program endpoints?
    Status,
    /// Program the datapath for a wired pod. With `ips` empty the agent allocates from
    /// its pod CIDRs (built-in IPAM) and returns what it chose.
    AddEndpoint(AddEndpoint),
    /// Remove an endpoint: detach programs, delete map entries, release built-in IPs.
    /// Succeeds when the endpoint is unknown.
    ///
    /// With `take_link` the agent also deletes the endpoint's host link, and may finish
    /// after replying [`Response::Releasing`]: the endpoint is then out of service and
    /// durably marked, its addresses stay allocated (never handed out) until the link,
    /// the programs, the map entries and the record are all gone, and a restart
    /// finishes what a crash interrupted. A `Done` reply means the agent did not have
    /// the endpoint (or predates `take_link`): the link, if any, is the caller's.
    DelEndpoint {
        id: EndpointId,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        take_link: bool,
    },
    /// Wait until the teardown of `id` that a DEL handed over (`take_link`) is done,
    /// doing it now if it has not started; `Done`. Changes nothing else: an endpoint in
    /// service stays. For an ADD that finds the attachment's old link still there.
    SettleEndpoint { id: EndpointId },
    /// One endpoint, as the agent has it.
    GetEndpoint { id: EndpointId },
    /// Every endpoint.
    ListEndpoints,
    /// Remove every endpoint not in `valid` (CNI GC).
    Gc { valid: Vec<EndpointId> },
    /// The datapath counters, summed over CPUs.
    Stats,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AddEndpoint {
    pub id: EndpointId,
    /// Pod network namespace path as the runtime gave it.
    pub netns: String,
    pub mode: LinkMode,
    /// Host-side device: netkit primary or host veth.
    pub host_ifname: String,
    pub host_ifindex: u32,
    /// Pod-side MAC (veth only).
    pub pod_mac: Option<String>,
    /// Host-side MAC (veth only).
    pub host_mac: Option<String>,
    /// Addresses from a delegated IPAM plugin; empty asks for built-in IPAM.
    pub ips: Vec<IpConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Status(AgentStatus),
    Endpoint(Endpoint),
    Endpoints {
        endpoints: Vec<Endpoint>,
    },
    Removed {
        removed: Vec<EndpointId>,
    },
    Stats {
        counters: Vec<Counter>,
    },
    Done,
    /// The agent took the endpoint and its link down (see `DelEndpoint::take_link`).
    Releasing,
    Error(ApiError),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AgentStatus {
    pub ready: bool,
    pub version: String,
    pub endpoints: usize,
    /// Pod addresses in the datapath's endpoint map (one per endpoint address when the
    /// kernel and the registry agree).
    pub mapped_addresses: usize,
    /// How flows the host stack translated (Service DNAT, NodePort, masquerade) are kept
    /// off the fast path: "conntrack" (asked per packet), or "stack-only (<why>)" where
    /// conntrack cannot be asked and every pod-bound TCP/UDP packet takes the stack.
    pub translation_check: String,
    pub pod_cidrs: Vec<String>,
    pub uplink: Option<String>,
    /// Why the agent is not ready, when it is not.
    pub reason: Option<String>,
    /// Where the node list comes from, and how its last reading went ("node file
    /// /etc/netkit/nodes.yaml: 3 nodes, 4 routes"), when the agent routes to other nodes.
    #[serde(default)]
    pub nodes: Option<String>,
    /// Other nodes' pod CIDRs on the fast path (entries of the remote-route map).
    #[serde(default)]
    pub remote_routes: usize,
    /// Endpoints deleted but not yet torn down (link, programs, map entries, record):
    /// their addresses are held until they are.
    #[serde(default)]
    pub releasing: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Counter {
    pub name: String,
    pub value: u64,
}

/// What went wrong, in terms the CNI plugin can map to a CNI error code.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request was malformed or named something invalid.
    InvalidRequest,
    /// Built-in IPAM has no free address.
    PoolExhausted,
    /// The endpoint or its link does not exist.
    NotFound,
    /// The endpoint exists with different parameters.
    Conflict,
    /// The agent is not ready (datapath not loaded yet).
    NotReady,
    /// A kernel operation failed.
    Internal,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            message: message.into(),
        }
    }
}

/// Failures of the client side of the socket.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to the agent at {path}: {source}")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("agent socket I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("agent sent an unreadable reply: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("agent closed the connection without replying")]
    NoReply,
    #[error("agent: {0}")]
    Agent(ApiError),
    #[error("agent sent an unexpected reply: {0}")]
    Unexpected(String),
}

/// How long a client waits for a reply. Programming an endpoint loads and verifies
/// two programs, which takes milliseconds; this only bounds a wedged agent.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Send one request and read the reply (blocking). `Response::Error` becomes
/// `ClientError::Agent`.
pub fn call(socket: &Path, request: &Request, timeout: Duration) -> Result<Response, ClientError> {
    let stream = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
        path: socket.display().to_string(),
        source,
    })?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    (&stream).write_all(&line)?;
    let mut reply = String::new();
    if BufReader::new(&stream).read_line(&mut reply)? == 0 {
        return Err(ClientError::NoReply);
    }
    match serde_json::from_str(&reply)? {
        Response::Error(e) => Err(ClientError::Agent(e)),
        other => Ok(other),
    }
}

/// Parse an address as the API carries it (`10.0.0.5/32`, `fd00::5/128`).
pub fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, len) = s.split_once('/')?;
    let addr: IpAddr = addr.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((addr, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_as_tagged_json() {
        let id = EndpointId {
            container_id: "c1".into(),
            ifname: "eth0".into(),
        };
        let req = Request::DelEndpoint {
            id: id.clone(),
            take_link: false,
        };
        let text = serde_json::to_string(&req).unwrap();
        assert!(text.contains(r#""op":"del_endpoint""#), "{text}");
        // Without `take_link` the request is what agents before it understand.
        assert!(!text.contains("take_link"), "{text}");
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), req);
        let req = Request::DelEndpoint {
            id,
            take_link: true,
        };
        let text = serde_json::to_string(&req).unwrap();
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), req);
    }

    #[test]
    fn errors_carry_their_kind() {
        let resp = Response::Error(ApiError::new(ErrorKind::PoolExhausted, "no address"));
        let text = serde_json::to_string(&resp).unwrap();
        assert_eq!(serde_json::from_str::<Response>(&text).unwrap(), resp);
    }

    #[test]
    fn cidrs_parse_with_family_bounds() {
        assert!(parse_cidr("10.0.0.1/32").is_some());
        assert!(parse_cidr("fd00::1/128").is_some());
        assert!(parse_cidr("10.0.0.1/33").is_none());
        assert!(parse_cidr("10.0.0.1").is_none());
    }

    #[test]
    fn a_missing_socket_is_a_connect_error() {
        let err = call(
            Path::new("/nonexistent/agent.sock"),
            &Request::Status,
            DEFAULT_TIMEOUT,
        )
        .unwrap_err();
        assert!(matches!(err, ClientError::Connect { .. }), "{err}");
    }
}
