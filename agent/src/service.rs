//! What the agent does for each request: the endpoint lifecycle (built-in IPAM,
//! datapath programming, registry) and reconciliation against the kernel. Every change
//! either completes — maps written, programs attached, registry persisted — or is rolled
//! back before the error is returned.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use netkit_api::{
    AddEndpoint, AgentStatus, ApiError, Counter, Endpoint, EndpointId, ErrorKind, IpConfig,
    Request, Response,
};

use crate::datapath::{self, Datapath, EndpointSpec};
use crate::ipam;
use crate::registry::Registry;

pub struct Agent {
    datapath: Datapath,
    registry: Registry,
    pools: Vec<IpNetwork>,
    uplink: Option<String>,
    /// The last addresses built-in IPAM handed out (one per pool): allocation continues
    /// after them rather than reusing a just-released address.
    last_allocated: Vec<IpAddr>,
}

type ApiResult<T> = Result<T, ApiError>;

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorKind::Internal, e.to_string())
}

impl Agent {
    pub fn new(
        datapath: Datapath,
        registry: Registry,
        pools: Vec<IpNetwork>,
        uplink: Option<String>,
    ) -> Self {
        Agent {
            datapath,
            registry,
            pools,
            uplink,
            last_allocated: Vec::new(),
        }
    }

    pub fn endpoint_count(&self) -> usize {
        self.registry.len()
    }

    pub fn handle(&mut self, request: Request) -> Response {
        let result = match request {
            Request::Status => Ok(Response::Status(self.status())),
            Request::AddEndpoint(add) => self.add_endpoint(add).map(Response::Endpoint),
            Request::DelEndpoint { id } => self.del_endpoint(&id).map(|_| Response::Done),
            Request::GetEndpoint { id } => self
                .registry
                .get(&id)
                .cloned()
                .map(Response::Endpoint)
                .ok_or_else(|| ApiError::new(ErrorKind::NotFound, format!("no endpoint {id}"))),
            Request::ListEndpoints => Ok(Response::Endpoints {
                endpoints: self.registry.all().cloned().collect(),
            }),
            Request::Gc { valid } => self.gc(&valid).map(|removed| Response::Removed { removed }),
            Request::Stats => self.counters().map(|counters| Response::Stats { counters }),
        };
        result.unwrap_or_else(Response::Error)
    }

    pub fn status(&self) -> AgentStatus {
        AgentStatus {
            ready: true,
            version: env!("CARGO_PKG_VERSION").to_string(),
            endpoints: self.registry.len(),
            mapped_addresses: self.datapath.mapped_addresses().len(),
            translation_check: self.datapath.translation_check().to_string(),
            pod_cidrs: self.pools.iter().map(|p| p.to_string()).collect(),
            uplink: self.uplink.clone(),
            reason: None,
        }
    }

    pub fn counters(&self) -> ApiResult<Vec<Counter>> {
        let counters = self.datapath.counters().map_err(internal)?;
        Ok(counters
            .into_iter()
            .map(|(stat, value)| Counter {
                name: stat.name().to_string(),
                value,
            })
            .collect())
    }

    fn add_endpoint(&mut self, add: AddEndpoint) -> ApiResult<Endpoint> {
        let started = std::time::Instant::now();
        validate_id(&add.id)?;
        let actual = datapath::ifindex_of(&add.host_ifname)
            .map_err(|e| ApiError::new(ErrorKind::NotFound, e.to_string()))?;
        if actual != add.host_ifindex {
            return Err(ApiError::new(
                ErrorKind::InvalidRequest,
                format!(
                    "{} has ifindex {actual}, not {}",
                    add.host_ifname, add.host_ifindex
                ),
            ));
        }
        // A repeated ADD for the same attachment replaces the old one (the runtime may
        // retry after a failure we already rolled back, or after a reboot of the pod).
        if self.registry.get(&add.id).is_some() {
            self.del_endpoint(&add.id)?;
        }
        let builtin_ipam = add.ips.is_empty();
        let ips = if builtin_ipam {
            self.allocate()?
        } else {
            add.ips.clone()
        };
        let addresses = addresses_of(&ips)?;
        self.refuse_addresses_in_use(&add.id, &addresses)?;

        let mut endpoint = Endpoint {
            id: add.id,
            netns: add.netns,
            mode: add.mode,
            host_ifname: add.host_ifname,
            host_ifindex: add.host_ifindex,
            pod_mac: add.pod_mac,
            host_mac: add.host_mac,
            ips,
            builtin_ipam,
            programs: Vec::new(),
        };
        let pin_name = pin_name(&endpoint.id);
        endpoint.programs = match self.program(&endpoint, &addresses) {
            Ok(programs) => programs,
            Err(e) => {
                self.rollback_datapath(&pin_name, &addresses);
                return Err(internal(e));
            }
        };
        if let Err(e) = self.registry.insert(endpoint.clone()) {
            self.rollback_datapath(&pin_name, &addresses);
            return Err(internal(e));
        }
        if builtin_ipam {
            self.last_allocated = addresses;
        }
        tracing::info!(
            endpoint = %endpoint.id,
            host = %endpoint.host_ifname,
            ips = ?endpoint.ips,
            elapsed_us = started.elapsed().as_micros() as u64,
            "endpoint programmed"
        );
        Ok(endpoint)
    }

    /// Attach an endpoint's programs and map its addresses; returns the attachments.
    fn program(
        &mut self,
        endpoint: &Endpoint,
        addresses: &[IpAddr],
    ) -> datapath::Result<Vec<String>> {
        let pin_name = pin_name(&endpoint.id);
        self.datapath.program_endpoint(&EndpointSpec {
            pin_name: &pin_name,
            mode: endpoint.mode,
            host_ifindex: endpoint.host_ifindex,
            pod_mac: endpoint.pod_mac.as_deref(),
            host_mac: endpoint.host_mac.as_deref(),
            addresses,
        })
    }

    fn rollback_datapath(&mut self, pin_name: &str, addresses: &[IpAddr]) {
        if let Err(e) = self.datapath.remove_endpoint(pin_name, addresses) {
            tracing::error!(error = %e, pin_name, "rollback of a failed endpoint left state behind");
        }
    }

    fn allocate(&self) -> ApiResult<Vec<IpConfig>> {
        let in_use: HashSet<IpAddr> = self
            .registry
            .all()
            .flat_map(|e| e.ips.iter())
            .filter_map(|ip| netkit_api::parse_cidr(&ip.address).map(|(a, _)| a))
            .collect();
        let chosen =
            ipam::allocate(&self.pools, &in_use, &self.last_allocated).map_err(|e| match e {
                ipam::IpamError::Exhausted(_) => {
                    ApiError::new(ErrorKind::PoolExhausted, e.to_string())
                }
                ipam::IpamError::NoPools => ApiError::new(ErrorKind::NotReady, e.to_string()),
            })?;
        Ok(chosen
            .into_iter()
            .map(|n| IpConfig {
                address: n.to_string(),
                gateway: None,
            })
            .collect())
    }

    fn refuse_addresses_in_use(&self, id: &EndpointId, addresses: &[IpAddr]) -> ApiResult<()> {
        for other in self.registry.all().filter(|e| &e.id != id) {
            for ip in &other.ips {
                if let Some((a, _)) = netkit_api::parse_cidr(&ip.address)
                    && addresses.contains(&a)
                {
                    return Err(ApiError::new(
                        ErrorKind::Conflict,
                        format!("address {a} already belongs to endpoint {}", other.id),
                    ));
                }
            }
        }
        Ok(())
    }

    fn del_endpoint(&mut self, id: &EndpointId) -> ApiResult<()> {
        let Some(endpoint) = self.registry.get(id).cloned() else {
            return Ok(());
        };
        let addresses = addresses_of(&endpoint.ips).unwrap_or_default();
        self.datapath
            .remove_endpoint(&pin_name(id), &addresses)
            .map_err(internal)?;
        self.registry.remove(id).map_err(internal)?;
        tracing::info!(endpoint = %id, "endpoint removed");
        Ok(())
    }

    fn gc(&mut self, valid: &[EndpointId]) -> ApiResult<Vec<EndpointId>> {
        let stale: Vec<EndpointId> = self
            .registry
            .all()
            .map(|e| e.id.clone())
            .filter(|id| !valid.contains(id))
            .collect();
        for id in &stale {
            self.del_endpoint(id)?;
        }
        Ok(stale)
    }

    /// Bring kernel and registry into agreement. With `reprogram`, (re)attach every
    /// endpoint's programs — on start, this is what moves pinned links to the programs of
    /// a new agent build with `BPF_LINK_UPDATE`.
    pub fn reconcile(&mut self, reprogram: bool) {
        let endpoints: Vec<Endpoint> = self.registry.all().cloned().collect();
        for endpoint in &endpoints {
            let alive =
                datapath::ifindex_of(&endpoint.host_ifname).ok() == Some(endpoint.host_ifindex);
            if !alive {
                tracing::info!(endpoint = %endpoint.id, link = %endpoint.host_ifname, "link is gone; removing endpoint");
                if let Err(e) = self.del_endpoint(&endpoint.id) {
                    tracing::error!(endpoint = %endpoint.id, error = %e.message, "cannot remove vanished endpoint");
                }
                continue;
            }
            if reprogram {
                let addresses = addresses_of(&endpoint.ips).unwrap_or_default();
                if let Err(e) = self.program(endpoint, &addresses) {
                    tracing::error!(endpoint = %endpoint.id, error = %e, "cannot re-program endpoint");
                }
            }
        }
        // Pins and map entries nobody registered: leftovers of a crash mid-change.
        let known: HashSet<String> = self.registry.all().map(|e| pin_name(&e.id)).collect();
        for name in self.datapath.pins().pinned_endpoints() {
            if !known.contains(&name) {
                tracing::info!(pin = %name, "removing orphaned endpoint pins");
                self.rollback_datapath(&name, &[]);
            }
        }
        let mapped: HashSet<_> = self
            .registry
            .all()
            .flat_map(|e| addresses_of(&e.ips).unwrap_or_default())
            .map(|a| datapath::endpoint_key(&a))
            .collect();
        for key in self.datapath.mapped_addresses() {
            if !mapped.contains(&key)
                && let Err(e) = self.datapath.unmap(&key)
            {
                tracing::error!(error = %e, "cannot remove orphaned endpoint map entry");
            }
        }
    }
}

/// The pin directory of an endpoint (distinct for distinct ids; see `endpoint_name`).
fn pin_name(id: &EndpointId) -> String {
    crate::endpoint_name::of(id)
}

fn validate_id(id: &EndpointId) -> ApiResult<()> {
    let ok_id = !id.container_id.is_empty()
        && id.container_id.len() <= 200
        && id
            .container_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !ok_id {
        return Err(ApiError::new(
            ErrorKind::InvalidRequest,
            format!(
                "invalid container id {:?}: want 1-200 of [A-Za-z0-9_.-]",
                id.container_id
            ),
        ));
    }
    let ok_if = !id.ifname.is_empty()
        && id.ifname.len() <= 15
        && id
            .ifname
            .chars()
            .all(|c| !c.is_whitespace() && c != '/' && c != ':')
        && id.ifname != "."
        && id.ifname != "..";
    if !ok_if {
        return Err(ApiError::new(
            ErrorKind::InvalidRequest,
            format!("invalid interface name {:?}", id.ifname),
        ));
    }
    Ok(())
}

fn addresses_of(ips: &[IpConfig]) -> ApiResult<Vec<IpAddr>> {
    ips.iter()
        .map(|ip| {
            netkit_api::parse_cidr(&ip.address)
                .map(|(a, _)| a)
                .ok_or_else(|| {
                    ApiError::new(
                        ErrorKind::InvalidRequest,
                        format!("invalid address {:?}", ip.address),
                    )
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(c: &str, i: &str) -> EndpointId {
        EndpointId::new(c, i)
    }

    #[test]
    fn ids_are_checked_before_they_become_file_names() {
        assert!(validate_id(&id("abc-1.2_3", "eth0")).is_ok());
        assert!(validate_id(&id("", "eth0")).is_err());
        assert!(validate_id(&id("../etc", "eth0")).is_err());
        assert!(validate_id(&id("a/b", "eth0")).is_err());
        assert!(validate_id(&id("abc", "")).is_err());
        assert!(validate_id(&id("abc", "..")).is_err());
        assert!(validate_id(&id("abc", "a/b")).is_err());
        assert!(validate_id(&id("abc", "sixteen-chars-xx")).is_err());
    }

    #[test]
    fn addresses_must_parse() {
        let ok = [IpConfig {
            address: "10.0.0.1/24".into(),
            gateway: None,
        }];
        assert_eq!(
            addresses_of(&ok).unwrap(),
            vec!["10.0.0.1".parse::<IpAddr>().unwrap()]
        );
        let bad = [IpConfig {
            address: "10.0.0.1".into(),
            gateway: None,
        }];
        assert_eq!(
            addresses_of(&bad).unwrap_err().kind,
            ErrorKind::InvalidRequest
        );
    }
}
