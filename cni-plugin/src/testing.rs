//! Test doubles for the agent and delegated IPAM plugins, and `World`: a fake node
//! (kernel + agent + IPAM plugin + state dir) that runs commands like the binary does.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use netkit_api::{
    AgentStatus, ApiError, ClientError, Endpoint, EndpointId, ErrorKind, IpConfig, Request,
    Response,
};
use serde_json::{Value, json};

use crate::agent::AgentApi;
use crate::cmd::{self, Ctx};
use crate::delqueue::DeletionQueue;
use crate::error::Error;
use crate::ipam::{IpamError, PluginExec};
use crate::netlink::fake::FakeKernel;
use crate::spec::config::NetConf;
use crate::spec::env::{Command, Invocation};
use crate::spec::error::CniError;

#[derive(Debug, Default)]
pub struct AgentState {
    pub up: bool,
    pub ready: bool,
    pub endpoints: BTreeMap<EndpointId, Endpoint>,
    /// Built-in IPAM: the next host number to hand out.
    pub next_host: u8,
    /// Answer the next AddEndpoint with this error (the agent rolled itself back).
    pub refuse_add: Option<ApiError>,
    /// Program the next AddEndpoint, then act as if the reply was lost.
    pub lose_add_reply: bool,
    pub deleted: Vec<EndpointId>,
    /// Endpoints a DEL handed over with their link (`take_link`), whose teardown the
    /// real agent would finish after replying; `World::run` plays that part.
    pub releasing: Vec<EndpointId>,
    /// Answer `take_link` as an agent from before it did: remove, reply `Done`.
    pub old_agent: bool,
    pub requests: Vec<Request>,
}

/// An agent whose built-in IPAM hands out 10.22.0.N/24 and fd00:22::N/64.
pub struct FakeAgent {
    state: RefCell<AgentState>,
}

impl FakeAgent {
    pub fn new() -> FakeAgent {
        FakeAgent {
            state: RefCell::new(AgentState {
                up: true,
                ready: true,
                next_host: 2,
                ..AgentState::default()
            }),
        }
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut AgentState) -> T) -> T {
        f(&mut self.state.borrow_mut())
    }
}

impl AgentApi for FakeAgent {
    fn call(&self, request: &Request) -> Result<Response, ClientError> {
        let mut s = self.state.borrow_mut();
        s.requests.push(request.clone());
        if !s.up {
            return Err(ClientError::Connect {
                path: "/fake/agent.sock".into(),
                source: std::io::ErrorKind::ConnectionRefused.into(),
            });
        }
        let not_ready = || ClientError::Agent(ApiError::new(ErrorKind::NotReady, "loading"));
        match request {
            Request::Status => Ok(Response::Status(AgentStatus {
                ready: s.ready,
                version: "test".into(),
                endpoints: s.endpoints.len(),
                mapped_addresses: s.endpoints.len(),
                translation_check: "conntrack".into(),
                pod_cidrs: vec!["10.22.0.0/24".into(), "fd00:22::/64".into()],
                uplink: Some("eth0".into()),
                reason: (!s.ready).then(|| "loading programs".to_string()),
                nodes: None,
                remote_routes: 0,
                releasing: s.releasing.len(),
            })),
            Request::AddEndpoint(add) => {
                if !s.ready {
                    return Err(not_ready());
                }
                if let Some(e) = s.refuse_add.take() {
                    return Err(ClientError::Agent(e));
                }
                let ips = if add.ips.is_empty() {
                    let n = s.next_host;
                    s.next_host += 1;
                    vec![
                        IpConfig {
                            address: format!("10.22.0.{n}/24"),
                            gateway: None,
                        },
                        IpConfig {
                            address: format!("fd00:22::{n:x}/64"),
                            gateway: None,
                        },
                    ]
                } else {
                    add.ips.clone()
                };
                let endpoint = Endpoint {
                    id: add.id.clone(),
                    netns: add.netns.clone(),
                    mode: add.mode,
                    host_ifname: add.host_ifname.clone(),
                    host_ifindex: add.host_ifindex,
                    pod_mac: add.pod_mac.clone(),
                    host_mac: add.host_mac.clone(),
                    builtin_ipam: add.ips.is_empty(),
                    ips,
                    programs: vec!["pod_egress@netkit_peer".into()],
                };
                s.endpoints.insert(add.id.clone(), endpoint.clone());
                if std::mem::take(&mut s.lose_add_reply) {
                    return Err(ClientError::NoReply);
                }
                Ok(Response::Endpoint(endpoint))
            }
            Request::DelEndpoint { id, take_link } => {
                let known = s.endpoints.remove(id).is_some();
                s.deleted.push(id.clone());
                if *take_link && known && !s.old_agent {
                    s.releasing.push(id.clone());
                    Ok(Response::Releasing)
                } else {
                    Ok(Response::Done)
                }
            }
            Request::SettleEndpoint { .. } => Ok(Response::Done),
            Request::GetEndpoint { id } => s
                .endpoints
                .get(id)
                .cloned()
                .map(Response::Endpoint)
                .ok_or_else(|| {
                    ClientError::Agent(ApiError::new(
                        ErrorKind::NotFound,
                        format!("no endpoint {id}"),
                    ))
                }),
            Request::ListEndpoints => Ok(Response::Endpoints {
                endpoints: s.endpoints.values().cloned().collect(),
            }),
            Request::Gc { valid } => {
                let stale: Vec<EndpointId> = s
                    .endpoints
                    .keys()
                    .filter(|id| !valid.contains(id))
                    .cloned()
                    .collect();
                for id in &stale {
                    s.endpoints.remove(id);
                }
                Ok(Response::Removed { removed: stale })
            }
            Request::Stats => Ok(Response::Stats { counters: vec![] }),
        }
    }
}

#[derive(Debug, Default)]
pub struct IpamState {
    /// Container id → host number in 10.33.0.0/24.
    pub allocated: BTreeMap<String, u8>,
    pub next_host: u8,
    pub calls: Vec<(Command, String)>,
    /// Fail this command with this error document.
    pub fail: Option<(Command, CniError)>,
}

/// A host-local-like IPAM plugin named `fake-ipam`.
pub struct FakeIpam {
    state: RefCell<IpamState>,
}

impl FakeIpam {
    pub fn new() -> FakeIpam {
        FakeIpam {
            state: RefCell::new(IpamState {
                next_host: 2,
                ..IpamState::default()
            }),
        }
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut IpamState) -> T) -> T {
        f(&mut self.state.borrow_mut())
    }
}

impl PluginExec for FakeIpam {
    fn exec(
        &self,
        plugin: &str,
        command: Command,
        inv: &Invocation,
        _stdin: &[u8],
    ) -> Result<Vec<u8>, IpamError> {
        let mut s = self.state.borrow_mut();
        s.calls.push((command, inv.container_id.clone()));
        if plugin != "fake-ipam" {
            return Err(IpamError::NotFound {
                plugin: plugin.to_string(),
                path: "/fake".into(),
            });
        }
        if let Some((cmd, error)) = &s.fail
            && *cmd == command
        {
            return Err(IpamError::Plugin {
                plugin: plugin.to_string(),
                command,
                error: error.clone(),
            });
        }
        let out = match command {
            Command::Add => {
                let n = s.next_host;
                s.next_host += 1;
                s.allocated.insert(inv.container_id.clone(), n);
                json!({
                    "cniVersion": "1.0.0",
                    "ips": [{"address": format!("10.33.0.{n}/24"), "gateway": "10.33.0.1"}],
                    "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.50.0/24"}],
                    "dns": {"nameservers": ["10.33.0.10"]}
                })
                .to_string()
            }
            Command::Del => {
                s.allocated.remove(&inv.container_id);
                String::new()
            }
            Command::Check if !s.allocated.contains_key(&inv.container_id) => {
                let error = CniError::new(7, "no allocation");
                return Err(IpamError::Plugin {
                    plugin: plugin.to_string(),
                    command,
                    error,
                });
            }
            _ => String::new(),
        };
        Ok(out.into_bytes())
    }
}

pub const POD: &str = "/run/netns/pod1";
pub const POD2: &str = "/run/netns/pod2";

/// The attachment of container `c` on `eth0` (`World`'s default `CNI_IFNAME`).
pub fn id(c: &str) -> EndpointId {
    EndpointId {
        container_id: c.into(),
        ifname: "eth0".into(),
    }
}

/// A fake node.
pub struct World {
    pub kernel: FakeKernel,
    pub agent: FakeAgent,
    pub ipam: FakeIpam,
    pub state: tempfile::TempDir,
    /// `CNI_IFNAME` of the commands `run` makes.
    pub ifname: String,
    /// After each command, finish the teardowns the agent took over (delete their host
    /// links), as the real agent does right after replying.
    pub finish_teardowns: bool,
}

impl World {
    /// A node without netkit (like our test machines) and two pod namespaces.
    pub fn new() -> World {
        let mut kernel = FakeKernel::new();
        kernel.netkit_supported = false;
        kernel.add_pod(POD);
        kernel.add_pod(POD2);
        World {
            kernel,
            agent: FakeAgent::new(),
            ipam: FakeIpam::new(),
            state: tempfile::tempdir().unwrap_or_else(|e| panic!("{e}")),
            ifname: "eth0".into(),
            finish_teardowns: true,
        }
    }

    /// Names of the plugin's host links (`nk…`).
    pub fn host_links(&self) -> Vec<String> {
        self.kernel
            .host
            .links
            .values()
            .filter(|l| l.name.starts_with("nk"))
            .map(|l| l.name.clone())
            .collect()
    }

    /// What the agent does after answering a DEL that handed it the link.
    pub fn finish_teardowns(&mut self) {
        use crate::netlink::{Kernel as _, Ns};
        for id in self.agent.with(|s| std::mem::take(&mut s.releasing)) {
            let name = crate::connector::host_ifname(&id);
            if let Ok(Some(link)) = self.kernel.link_by_name(Ns::Host, &name) {
                let _ = self.kernel.delete_link(Ns::Host, link.index);
            }
        }
    }

    /// A configuration with the state dir in a temp dir, plus `extra` keys.
    pub fn conf(&self, extra: Value) -> Value {
        let mut conf = json!({
            "cniVersion": "1.1.0",
            "name": "pods",
            "type": "netkit-cni",
            "stateDir": self.state.path().display().to_string(),
        });
        if let (Some(conf), Some(extra)) = (conf.as_object_mut(), extra.as_object()) {
            conf.extend(extra.clone());
        }
        conf
    }

    pub fn queue(&self) -> DeletionQueue {
        DeletionQueue::new(self.state.path())
    }

    pub fn run(
        &mut self,
        command: Command,
        container: &str,
        netns: Option<&str>,
        conf: &Value,
    ) -> Result<Option<Value>, Error> {
        let inv = Invocation {
            command,
            container_id: container.to_string(),
            netns: netns.map(Into::into),
            ifname: self.ifname.clone(),
            args: String::new(),
            cni_path: Some("/fake".to_string()),
        };
        let stdin = conf.to_string().into_bytes();
        let parsed = NetConf::parse(&stdin)?;
        let queue = self.queue();
        let mut ctx = Ctx {
            inv: &inv,
            conf: &parsed,
            stdin: &stdin,
            kernel: &mut self.kernel,
            agent: &self.agent,
            exec: &self.ipam,
            queue: &queue,
        };
        let result = cmd::dispatch(&mut ctx);
        if self.finish_teardowns {
            self.finish_teardowns();
        }
        result
    }

    pub fn add(&mut self, container: &str, netns: &str, conf: &Value) -> Result<Value, Error> {
        self.run(Command::Add, container, Some(netns), conf)
            .map(|doc| doc.unwrap_or(Value::Null))
    }

    /// Links, addresses, routes; agent endpoints; IPAM allocations; queued deletions.
    pub fn snapshot(&self) -> String {
        let pods: BTreeSet<String> = self
            .kernel
            .pods
            .keys()
            .map(|p| p.display().to_string())
            .collect();
        format!(
            "host={:?}\npods={:?}\n{}\nagent={:?}\nipam={:?}\nqueue={:?}",
            self.kernel.host,
            pods,
            self.kernel
                .pods
                .values()
                .map(|p| format!("{p:?}"))
                .collect::<Vec<_>>()
                .join("\n"),
            self.agent
                .with(|s| s.endpoints.keys().cloned().collect::<Vec<_>>()),
            self.ipam.with(|s| s.allocated.clone()),
            self.queue().pending().unwrap_or_default(),
        )
    }
}
