//! An endpoint: one pod interface the agent serves.

use serde::{Deserialize, Serialize};

/// CNI's key for an attachment: container id + interface name.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointId {
    pub container_id: String,
    pub ifname: String,
}

impl EndpointId {
    pub fn new(container_id: impl Into<String>, ifname: impl Into<String>) -> Self {
        EndpointId {
            container_id: container_id.into(),
            ifname: ifname.into(),
        }
    }
}

impl std::fmt::Display for EndpointId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.container_id, self.ifname)
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LinkMode {
    Netkit,
    Veth,
}

impl LinkMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkMode::Netkit => "netkit",
            LinkMode::Veth => "veth",
        }
    }
}

/// One address of a pod with its gateway, as a CNI result carries it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct IpConfig {
    /// `10.0.0.5/24` style: the pool's prefix length, as IPAM returned it.
    pub address: String,
    pub gateway: Option<String>,
}

/// An endpoint as the agent records it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Endpoint {
    pub id: EndpointId,
    pub netns: String,
    pub mode: LinkMode,
    pub host_ifname: String,
    pub host_ifindex: u32,
    pub pod_mac: Option<String>,
    pub host_mac: Option<String>,
    pub ips: Vec<IpConfig>,
    /// The agent allocated `ips` (and releases them on delete).
    pub builtin_ipam: bool,
    /// Names of the programs attached for this endpoint.
    pub programs: Vec<String>,
}
