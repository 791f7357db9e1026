//! What the agent does for each request: the endpoint lifecycle (built-in IPAM,
//! datapath programming, registry) and reconciliation against the kernel. Every change
//! either completes — maps written, programs attached, registry persisted — or is rolled
//! back before the error is returned.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use ipnetwork::IpNetwork;
use netkit_api::{
    AddEndpoint, AgentStatus, ApiError, Counter, Endpoint, EndpointId, ErrorKind, IpConfig,
    Request, Response,
};

use crate::datapath::{self, DatapathOps, EndpointSpec};
use crate::fault;
use crate::ipam;
use crate::registry::{Registry, Store};

/// The agent's state and the datapath, shared by every request it serves at once.
///
/// Locking: `state` (registry, allocations, attachments in flight) is held only for
/// bookkeeping — never across the slow work: an attach or the release of a live link (a
/// netkit link's waits for an RCU grace period under the rtnl lock), a record written or
/// unlinked. An attachment being added or deleted is marked in flight, so another request
/// for the same attachment waits for it, while requests for other attachments proceed;
/// addresses are reserved while their endpoint is in flight, so two concurrent ADDs
/// never get the same one, and stay registered until their endpoint's datapath and
/// record are gone.
///
/// DEL with `take_link` answers once the endpoint is durably marked releasing, and
/// tears it down on a thread of its own afterwards (`release_endpoint`,
/// `finish_release`): deleting a device with programs attached waits for an RCU grace
/// period under the rtnl lock, which no pod's DEL should wait for. The endpoint stays
/// registered, addresses and device included, until that teardown is done.
pub struct Agent {
    datapath: Box<dyn DatapathOps>,
    /// The registry's files, written and unlinked without the state lock.
    store: Store,
    pools: Vec<IpNetwork>,
    uplink: Option<String>,
    state: Mutex<State>,
    /// Signalled whenever an attachment leaves `State::in_flight`.
    settled: Condvar,
    /// How routing to other nodes stands, for `status` (see `routing`).
    nodes_note: Mutex<Option<String>>,
    /// Teardowns handed over by DELs, waiting for a teardown thread.
    teardowns: Mutex<Teardowns>,
}

/// At most this many teardown threads at once: each deletion holds the rtnl lock for a
/// grace period, so more would only queue in the kernel instead of here.
const TEARDOWN_THREADS: usize = 4;

#[derive(Default)]
struct Teardowns {
    queue: std::collections::VecDeque<EndpointId>,
    threads: usize,
}

struct State {
    registry: Registry,
    /// The last addresses built-in IPAM handed out (one per pool): allocation continues
    /// after them rather than reusing a just-released address.
    last_allocated: Vec<IpAddr>,
    /// Attachments some request is changing right now.
    in_flight: HashSet<EndpointId>,
    /// Addresses of endpoints in flight, not yet (or no longer) in the registry.
    reserved: HashSet<IpAddr>,
}

type ApiResult<T> = Result<T, ApiError>;

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorKind::Internal, e.to_string())
}

/// Marks an attachment in flight for its lifetime; dropping it settles the attachment
/// and releases its reserved addresses, on every path out of a request.
struct InFlight<'a> {
    agent: &'a Agent,
    id: EndpointId,
    reserved: Vec<IpAddr>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut state = self.agent.state();
        state.in_flight.remove(&self.id);
        for addr in &self.reserved {
            state.reserved.remove(addr);
        }
        drop(state);
        self.agent.settled.notify_all();
    }
}

impl Agent {
    pub fn new(
        datapath: Box<dyn DatapathOps>,
        registry: Registry,
        pools: Vec<IpNetwork>,
        uplink: Option<String>,
    ) -> Self {
        Agent {
            datapath,
            store: registry.store(),
            pools,
            uplink,
            state: Mutex::new(State {
                registry,
                last_allocated: Vec::new(),
                in_flight: HashSet::new(),
                reserved: HashSet::new(),
            }),
            settled: Condvar::new(),
            nodes_note: Mutex::new(None),
            teardowns: Mutex::new(Teardowns::default()),
        }
    }

    pub fn datapath(&self) -> &dyn DatapathOps {
        self.datapath.as_ref()
    }

    /// The uplink's ifindex, when the agent has one and it exists.
    pub fn uplink_ifindex(&self) -> Option<u32> {
        self.uplink
            .as_deref()
            .and_then(|name| self.datapath.link_index(name))
    }

    pub fn set_nodes_note(&self, note: String) {
        *self
            .nodes_note
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(note);
    }

    /// The state. Every change to it is completed before its lock is released (a panic
    /// mid-change would have unwound through the registry's own error handling), so a
    /// poisoned lock is taken over rather than turned into a second panic.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wait until no other request is changing `id`, then claim it. The claim takes the
    /// state lock when dropped: callers lock the state *after* claiming, so that on every
    /// path out the guard is dropped before the claim.
    fn claim(&self, id: &EndpointId) -> InFlight<'_> {
        let mut state = self.state();
        while state.in_flight.contains(id) {
            state = self
                .settled
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        state.in_flight.insert(id.clone());
        InFlight {
            agent: self,
            id: id.clone(),
            reserved: Vec::new(),
        }
    }

    /// Endpoints in service (releasing ones not counted).
    pub fn endpoint_count(&self) -> usize {
        let state = self.state();
        state.registry.len() - state.registry.releasing_count()
    }

    /// Endpoints deleted whose teardown is under way.
    pub fn releasing_count(&self) -> usize {
        self.state().registry.releasing_count()
    }

    /// Serve one request, teardowns included (tests; the socket server uses
    /// [`Agent::handle_deferring`] to start them after its reply is sent).
    pub fn handle(self: &Arc<Self>, request: Request) -> Response {
        let (response, teardown) = self.handle_deferring(request);
        if let Some(id) = teardown {
            self.spawn_teardown(id);
        }
        response
    }

    /// Serve one request; a DEL that handed over its link also returns the endpoint
    /// whose teardown the caller starts ([`Agent::spawn_teardown`]) once the reply is
    /// on its way, so the teardown's netlink work does not delay the reply.
    pub fn handle_deferring(&self, request: Request) -> (Response, Option<EndpointId>) {
        let mut teardown = None;
        let result = match request {
            Request::Status => Ok(Response::Status(self.status())),
            Request::AddEndpoint(add) => self.add_endpoint(add).map(Response::Endpoint),
            Request::DelEndpoint {
                id,
                take_link: false,
            } => self.del_endpoint(&id).map(|_| Response::Done),
            Request::DelEndpoint {
                id,
                take_link: true,
            } => self.release_endpoint(&id).map(|taken| {
                if taken {
                    teardown = Some(id);
                    Response::Releasing
                } else {
                    Response::Done
                }
            }),
            Request::SettleEndpoint { id } => {
                self.finish_release(&id);
                Ok(Response::Done)
            }
            Request::GetEndpoint { id } => self
                .state()
                .registry
                .get_live(&id)
                .cloned()
                .map(Response::Endpoint)
                .ok_or_else(|| ApiError::new(ErrorKind::NotFound, format!("no endpoint {id}"))),
            Request::ListEndpoints => Ok(Response::Endpoints {
                endpoints: self.state().registry.live().cloned().collect(),
            }),
            Request::Gc { valid } => self.gc(&valid).map(|removed| Response::Removed { removed }),
            Request::Stats => self.counters().map(|counters| Response::Stats { counters }),
        };
        (result.unwrap_or_else(Response::Error), teardown)
    }

    pub fn status(&self) -> AgentStatus {
        AgentStatus {
            ready: true,
            version: env!("CARGO_PKG_VERSION").to_string(),
            endpoints: self.endpoint_count(),
            mapped_addresses: self.datapath.mapped_count(),
            translation_check: self.datapath.translation_check(),
            pod_cidrs: self.pools.iter().map(|p| p.to_string()).collect(),
            uplink: self.uplink.clone(),
            reason: None,
            nodes: self
                .nodes_note
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            remote_routes: self.datapath.remote_route_count(),
            releasing: self.releasing_count(),
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

    fn add_endpoint(&self, add: AddEndpoint) -> ApiResult<Endpoint> {
        let started = std::time::Instant::now();
        validate_id(&add.id)?;
        let actual = self.datapath.link_index(&add.host_ifname).ok_or_else(|| {
            ApiError::new(
                ErrorKind::NotFound,
                format!("interface {} not found", add.host_ifname),
            )
        })?;
        if actual != add.host_ifindex {
            return Err(ApiError::new(
                ErrorKind::InvalidRequest,
                format!(
                    "{} has ifindex {actual}, not {}",
                    add.host_ifname, add.host_ifindex
                ),
            ));
        }
        let mut claim = self.claim(&add.id);
        // A repeated ADD for the same attachment replaces the old one (the runtime may
        // retry after a failure we already rolled back, or after a reboot of the pod).
        let old = self.state().registry.get(&add.id).cloned();
        if let Some(old) = old {
            self.remove_registered(&old)?;
        }
        let mut state = self.state();
        // One endpoint per device: a second would attach a second program and map its
        // addresses to a device that carries another pod.
        if let Some(owner) = state
            .registry
            .device_owner(add.host_ifindex)
            .filter(|owner| **owner != add.id)
        {
            return Err(ApiError::new(
                ErrorKind::Conflict,
                format!(
                    "{} (ifindex {}) already carries endpoint {}",
                    add.host_ifname, add.host_ifindex, owner
                ),
            ));
        }
        let builtin_ipam = add.ips.is_empty();
        let ips = if builtin_ipam {
            self.allocate(&state)?
        } else {
            add.ips.clone()
        };
        let addresses = addresses_of(&ips)?;
        refuse_addresses_in_use(&state, &add.id, &addresses)?;
        state.reserved.extend(addresses.iter().copied());
        claim.reserved = addresses.clone();
        if builtin_ipam {
            state.last_allocated = addresses.clone();
        }
        drop(state);

        let endpoint = Endpoint {
            id: add.id,
            netns: add.netns,
            mode: add.mode,
            host_ifname: add.host_ifname,
            host_ifindex: add.host_ifindex,
            pod_mac: add.pod_mac,
            host_mac: add.host_mac,
            ips,
            builtin_ipam,
            programs: datapath::attachments(add.mode),
        };
        let pin_name = pin_name(&endpoint.id);
        fault::point("before-attach");
        // The record first (one small file, no fsync: see `registry::atomic_file`), then
        // the datapath. Without the state lock: the claim keeps everyone else from this
        // endpoint, and its addresses stay reserved until it is registered. A crash after
        // the record leaves one whose link reconciliation re-attaches (or removes, once
        // the link is gone).
        let recorded = self.store.record(endpoint.clone()).map_err(internal)?;
        let program_started = std::time::Instant::now();
        let programmed = self.program(&endpoint, &addresses);
        let program_time = program_started.elapsed();
        if let Err(e) = programmed {
            self.rollback_datapath(&pin_name, &addresses);
            if let Err(e) = self.store.unrecord(&endpoint.id) {
                tracing::error!(endpoint = %endpoint.id, error = %e, "cannot remove the record of a failed endpoint");
            }
            return Err(internal(e));
        }
        // Attached, mapped and recorded, not yet registered, no reply sent: the worst
        // moment to die.
        fault::point("after-attach");
        self.state().registry.insert(recorded);
        drop(claim);
        tracing::info!(
            endpoint = %endpoint.id,
            host = %endpoint.host_ifname,
            ips = ?endpoint.ips,
            elapsed_us = started.elapsed().as_micros() as u64,
            // The attach and the map updates: what the benchmarks separate from the
            // rest of the agent's work.
            program_us = program_time.as_micros() as u64,
            "endpoint programmed"
        );
        Ok(endpoint)
    }

    /// Attach an endpoint's programs and map its addresses.
    fn program(&self, endpoint: &Endpoint, addresses: &[IpAddr]) -> datapath::Result<()> {
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

    fn rollback_datapath(&self, pin_name: &str, addresses: &[IpAddr]) {
        if let Err(e) = self.datapath.remove_endpoint(pin_name, addresses) {
            tracing::error!(error = %e, pin_name, "rollback of a failed endpoint left state behind");
        }
    }

    fn allocate(&self, state: &State) -> ApiResult<Vec<IpConfig>> {
        let in_use =
            |a: IpAddr| state.registry.address_owner(&a).is_some() || state.reserved.contains(&a);
        let chosen =
            ipam::allocate(&self.pools, in_use, &state.last_allocated).map_err(|e| match e {
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

    fn del_endpoint(&self, id: &EndpointId) -> ApiResult<()> {
        let _claim = self.claim(id);
        let Some(endpoint) = self.state().registry.get(id).cloned() else {
            return Ok(());
        };
        self.remove_registered(&endpoint)
    }

    /// The first half of a DEL with `take_link`: take the endpoint out of service and
    /// mark it releasing (one rename). `false`: the agent has no such
    /// endpoint, and the link (if any) stays the caller's. The teardown itself is
    /// [`Agent::finish_release`].
    pub fn release_endpoint(&self, id: &EndpointId) -> ApiResult<bool> {
        let _claim = self.claim(id);
        {
            let state = self.state();
            if state.registry.get(id).is_none() {
                return Ok(false);
            }
            if state.registry.is_releasing(id) {
                return Ok(true);
            }
        }
        let marked = self.store.mark_releasing(id).map_err(internal)?;
        self.state().registry.set_releasing(marked);
        tracing::info!(endpoint = %id, "endpoint out of service; tearing it down");
        Ok(true)
    }

    /// Finish a releasing endpoint's teardown: its link, programs, map entries, record,
    /// and only then its addresses. A failure leaves it releasing for the next
    /// reconciliation to retry.
    pub fn finish_release(&self, id: &EndpointId) {
        let _claim = self.claim(id);
        let endpoint = {
            let state = self.state();
            match state.registry.get(id) {
                Some(endpoint) if state.registry.is_releasing(id) => endpoint.clone(),
                // Finished meanwhile (a GC, a repeated ADD, another teardown).
                _ => return,
            }
        };
        fault::point("before-teardown");
        if let Err(e) = self.remove_registered(&endpoint) {
            tracing::error!(endpoint = %id, error = %e.message, "teardown failed; the next reconciliation retries it");
        }
    }

    /// Queue [`Agent::finish_release`] for a teardown thread (started here when fewer
    /// than [`TEARDOWN_THREADS`] run), after the reply.
    pub fn spawn_teardown(self: &Arc<Self>, id: EndpointId) {
        let mut teardowns = self.teardowns();
        teardowns.queue.push_back(id);
        if teardowns.threads >= TEARDOWN_THREADS {
            return;
        }
        let agent = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("teardown".into())
            .spawn(move || agent.run_teardowns());
        match spawned {
            Ok(_) => teardowns.threads += 1,
            // Still releasing: the periodic reconciliation finishes it.
            Err(e) => tracing::error!(error = %e, "cannot start a teardown thread"),
        }
    }

    fn teardowns(&self) -> MutexGuard<'_, Teardowns> {
        self.teardowns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A teardown thread: finish queued teardowns until there are none.
    fn run_teardowns(&self) {
        loop {
            let next = {
                let mut teardowns = self.teardowns();
                let next = teardowns.queue.pop_front();
                if next.is_none() {
                    teardowns.threads -= 1;
                }
                next
            };
            match next {
                Some(id) => self.finish_release(&id),
                None => return,
            }
        }
    }

    /// Remove a registered endpoint from the datapath, then its record, then from the
    /// registry: its addresses are free only once nothing uses them. The slow parts
    /// (unpinning a live netkit link waits for an RCU grace period) run without the
    /// state lock; the caller holds the endpoint's claim.
    ///
    /// A releasing endpoint's link is the agent's: it goes first, so that the pinned
    /// links are defunct by the time they are unpinned.
    fn remove_registered(&self, endpoint: &Endpoint) -> ApiResult<()> {
        if self.state().registry.is_releasing(&endpoint.id) {
            self.datapath
                .delete_link(&endpoint.host_ifname, endpoint.host_ifindex)
                .map_err(internal)?;
        }
        let addresses = addresses_of(&endpoint.ips).unwrap_or_default();
        self.datapath
            .remove_endpoint(&pin_name(&endpoint.id), &addresses)
            .map_err(internal)?;
        let unrecorded = self.store.unrecord(&endpoint.id).map_err(internal)?;
        self.state().registry.remove(unrecorded);
        tracing::info!(endpoint = %endpoint.id, "endpoint removed");
        Ok(())
    }

    fn gc(&self, valid: &[EndpointId]) -> ApiResult<Vec<EndpointId>> {
        let stale: Vec<EndpointId> = self
            .state()
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
    pub fn reconcile(&self, reprogram: bool) {
        let (endpoints, releasing): (Vec<Endpoint>, Vec<EndpointId>) = {
            let state = self.state();
            (
                state.registry.live().cloned().collect(),
                state
                    .registry
                    .all()
                    .filter(|e| state.registry.is_releasing(&e.id))
                    .map(|e| e.id.clone())
                    .collect(),
            )
        };
        // Teardowns a crash (or a failure) interrupted.
        for id in &releasing {
            self.finish_release(id);
        }
        for endpoint in &endpoints {
            let alive =
                self.datapath.link_index(&endpoint.host_ifname) == Some(endpoint.host_ifindex);
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
        // Pins and map entries nobody registered: leftovers of a crash mid-change. Held
        // under the state lock so no ADD is between its map writes and its registry
        // insert meanwhile (in flight, its names and addresses count as known).
        let state = self.state();
        let known: HashSet<String> = state
            .registry
            .all()
            .map(|e| &e.id)
            .chain(state.in_flight.iter())
            .map(pin_name)
            .collect();
        for name in self.datapath.pinned_endpoints() {
            if !known.contains(&name) {
                tracing::info!(pin = %name, "removing orphaned endpoint pins");
                self.rollback_datapath(&name, &[]);
            }
        }
        let mapped: HashSet<_> = state
            .registry
            .all()
            .flat_map(|e| addresses_of(&e.ips).unwrap_or_default())
            .chain(state.reserved.iter().copied())
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

fn refuse_addresses_in_use(state: &State, id: &EndpointId, addresses: &[IpAddr]) -> ApiResult<()> {
    if let Some(a) = addresses.iter().find(|a| state.reserved.contains(a)) {
        return Err(ApiError::new(
            ErrorKind::Conflict,
            format!("address {a} is being given to another endpoint"),
        ));
    }
    for a in addresses {
        if let Some(owner) = state.registry.address_owner(a).filter(|owner| *owner != id) {
            return Err(ApiError::new(
                ErrorKind::Conflict,
                format!("address {a} already belongs to endpoint {owner}"),
            ));
        }
    }
    Ok(())
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
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Arc;

    use netkit_api::LinkMode;
    use netkit_common::{EndpointKey, Stat};

    use super::*;

    fn id(c: &str, i: &str) -> EndpointId {
        EndpointId::new(c, i)
    }

    /// The datapath in memory: links by name, map entries, pins; `fail_program` makes the
    /// next attach fail, as the kernel can. Clones share one state: the agent owns one,
    /// the test inspects another.
    #[derive(Default, Clone)]
    struct FakeDatapath {
        state: Arc<Mutex<FakeState>>,
    }

    #[derive(Default)]
    struct FakeState {
        links: BTreeMap<String, u32>,
        mapped: BTreeMap<[u8; 16], u32>,
        pins: BTreeSet<String>,
        fail_program: bool,
        fail_delete_link: bool,
        /// Walks of a whole map (reconciliation's, never a request's).
        walks: usize,
    }

    impl FakeDatapath {
        fn with(&self) -> MutexGuard<'_, FakeState> {
            self.state.lock().unwrap()
        }
    }

    impl crate::routing::RouteMap for FakeDatapath {
        fn entries(&self) -> Vec<(IpNetwork, IpAddr)> {
            self.with().walks += 1;
            Vec::new()
        }
        fn set(&self, _: IpNetwork, _: IpAddr) -> Result<(), String> {
            Ok(())
        }
        fn remove(&self, _: IpNetwork) -> Result<(), String> {
            Ok(())
        }
    }

    impl DatapathOps for FakeDatapath {
        fn program_endpoint(&self, spec: &EndpointSpec<'_>) -> datapath::Result<()> {
            let mut s = self.with();
            for a in spec.addresses {
                s.mapped
                    .insert(datapath::endpoint_key(a).addr, spec.host_ifindex);
            }
            if std::mem::take(&mut s.fail_program) {
                return Err(datapath::DatapathError::NoInterface("injected".into()));
            }
            s.pins.insert(spec.pin_name.to_string());
            Ok(())
        }
        fn remove_endpoint(&self, pin: &str, addresses: &[IpAddr]) -> datapath::Result<()> {
            let mut s = self.with();
            for a in addresses {
                s.mapped.remove(&datapath::endpoint_key(a).addr);
            }
            s.pins.remove(pin);
            Ok(())
        }
        fn mapped_addresses(&self) -> Vec<EndpointKey> {
            let mut s = self.with();
            s.walks += 1;
            s.mapped
                .keys()
                .map(|addr| EndpointKey { addr: *addr })
                .collect()
        }
        fn mapped_count(&self) -> usize {
            self.with().mapped.len()
        }
        fn remote_route_count(&self) -> usize {
            0
        }
        fn unmap(&self, key: &EndpointKey) -> datapath::Result<()> {
            self.with().mapped.remove(&key.addr);
            Ok(())
        }
        fn pinned_endpoints(&self) -> Vec<String> {
            self.with().pins.iter().cloned().collect()
        }
        fn counters(&self) -> datapath::Result<Vec<(Stat, u64)>> {
            Ok(Stat::ALL.iter().map(|s| (*s, 0)).collect())
        }
        fn translation_check(&self) -> String {
            "conntrack".into()
        }
        fn link_index(&self, name: &str) -> Option<u32> {
            self.with().links.get(name).copied()
        }
        fn delete_link(&self, name: &str, ifindex: u32) -> datapath::Result<()> {
            let mut s = self.with();
            if std::mem::take(&mut s.fail_delete_link) {
                return Err(datapath::DatapathError::NoInterface("injected".into()));
            }
            if s.links.get(name) == Some(&ifindex) {
                s.links.remove(name);
            }
            Ok(())
        }
    }

    /// An agent over a fake datapath with `links` (name → ifindex) and a /29 + /125 pool.
    fn agent(dir: &std::path::Path, links: &[(&str, u32)]) -> (Agent, FakeDatapath) {
        let fake = FakeDatapath::default();
        fake.with()
            .links
            .extend(links.iter().map(|(n, i)| (n.to_string(), *i)));
        let registry = Registry::load(dir, &[]).unwrap();
        let pools = vec![
            "10.9.0.0/29".parse().unwrap(),
            "fd00:9::/125".parse().unwrap(),
        ];
        let agent = Agent::new(Box::new(fake.clone()), registry, pools, None);
        (agent, fake)
    }

    fn add(container: &str, host: &str, index: u32) -> AddEndpoint {
        AddEndpoint {
            id: id(container, "eth0"),
            netns: "/run/netns/x".into(),
            mode: LinkMode::Netkit,
            host_ifname: host.into(),
            host_ifindex: index,
            pod_mac: None,
            host_mac: None,
            ips: Vec::new(),
        }
    }

    #[test]
    fn a_failed_attach_leaves_no_entry_no_registration_and_frees_the_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let (agent, fake) = agent(dir.path(), &[("nk1", 11), ("nk2", 12)]);
        fake.with().fail_program = true;
        let err = agent.add_endpoint(add("c1", "nk1", 11)).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Internal);
        assert_eq!(agent.endpoint_count(), 0);
        assert!(
            fake.with().mapped.is_empty(),
            "map entries left by the rollback"
        );
        assert!(fake.with().pins.is_empty());
        assert!(agent.state().reserved.is_empty() && agent.state().in_flight.is_empty());
        // The addresses it had are handed out again.
        let ok = agent.add_endpoint(add("c2", "nk2", 12)).unwrap();
        assert_eq!(ok.ips.len(), 2);
    }

    /// Fill the /29 + /125 pools with endpoints on links nk1..; returns how many.
    fn fill(agent: &Agent) -> u32 {
        let mut n = 0;
        loop {
            let index = n + 1;
            match agent.add_endpoint(add(&format!("c{index}"), &format!("nk{index}"), index)) {
                Ok(_) => n += 1,
                Err(e) => {
                    assert_eq!(e.kind, ErrorKind::PoolExhausted, "{e:?}");
                    return n;
                }
            }
        }
    }

    fn links(n: u32) -> Vec<(String, u32)> {
        (1..=n).map(|i| (format!("nk{i}"), i)).collect()
    }

    fn agent_with_links(dir: &std::path::Path, n: u32) -> (Agent, FakeDatapath) {
        let links = links(n);
        let refs: Vec<(&str, u32)> = links.iter().map(|(n, i)| (n.as_str(), *i)).collect();
        agent(dir, &refs)
    }

    #[test]
    fn a_released_endpoint_is_out_of_service_but_its_addresses_stay_taken_until_torn_down() {
        let dir = tempfile::tempdir().unwrap();
        let (agent, fake) = agent_with_links(dir.path(), 12);
        let full = fill(&agent);
        let c1 = id("c1", "eth0");
        let addresses = agent.state().registry.get(&c1).unwrap().ips.clone();

        assert!(agent.release_endpoint(&c1).unwrap());
        // A repeated DEL finds it releasing: nothing more to do.
        assert!(agent.release_endpoint(&c1).unwrap());
        assert_eq!(agent.endpoint_count(), full as usize - 1);
        assert_eq!(agent.releasing_count(), 1);
        assert!(agent.state().registry.get_live(&c1).is_none());
        // Link, programs and map entries are all still there, and so the addresses
        // are not handed out: the pool stays exhausted.
        assert!(fake.with().links.contains_key("nk1"));
        assert!(fake.with().pins.contains(&pin_name(&c1)));
        let next = full + 1;
        let err = agent
            .add_endpoint(add(&format!("c{next}"), &format!("nk{next}"), next))
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::PoolExhausted);

        agent.finish_release(&c1);
        assert!(
            !fake.with().links.contains_key("nk1"),
            "the link is the agent's"
        );
        assert!(!fake.with().pins.contains(&pin_name(&c1)));
        assert_eq!(agent.releasing_count(), 0);
        let reused = agent
            .add_endpoint(add(&format!("c{next}"), &format!("nk{next}"), next))
            .unwrap();
        // The IPv4 /29 is the pool that ran out: its address is the one freed.
        assert_eq!(
            reused.ips[0], addresses[0],
            "free once the teardown is done"
        );
    }

    #[test]
    fn releasing_an_unknown_endpoint_leaves_its_link_to_the_caller() {
        let dir = tempfile::tempdir().unwrap();
        let (agent, fake) = agent(dir.path(), &[("nk1", 11)]);
        assert!(!agent.release_endpoint(&id("c1", "eth0")).unwrap());
        assert!(fake.with().links.contains_key("nk1"));
    }

    #[test]
    fn a_teardown_a_crash_interrupted_is_finished_on_start() {
        let dir = tempfile::tempdir().unwrap();
        let fake = {
            let (agent, fake) = agent(dir.path(), &[("nk1", 11), ("nk2", 12)]);
            agent.add_endpoint(add("c1", "nk1", 11)).unwrap();
            agent.add_endpoint(add("c2", "nk2", 12)).unwrap();
            assert!(agent.release_endpoint(&id("c1", "eth0")).unwrap());
            // The agent dies here, before its teardown thread ran.
            fake
        };
        let registry = Registry::load(dir.path(), &[]).unwrap();
        assert!(registry.is_releasing(&id("c1", "eth0")));
        let pools = vec!["10.9.0.0/29".parse().unwrap()];
        let agent = Agent::new(Box::new(fake.clone()), registry, pools, None);
        agent.reconcile(true);
        assert_eq!(agent.releasing_count(), 0);
        assert_eq!(agent.endpoint_count(), 1);
        assert_eq!(
            fake.with().links.keys().cloned().collect::<Vec<_>>(),
            ["nk2"]
        );
        assert_eq!(
            fake.with().pins.iter().cloned().collect::<Vec<_>>(),
            [pin_name(&id("c2", "eth0"))]
        );
        assert_eq!(Registry::load(dir.path(), &[]).unwrap().len(), 1);
    }

    #[test]
    fn a_failed_teardown_stays_releasing_and_reconciliation_retries_it() {
        let dir = tempfile::tempdir().unwrap();
        let (agent, fake) = agent(dir.path(), &[("nk1", 11)]);
        agent.add_endpoint(add("c1", "nk1", 11)).unwrap();
        let c1 = id("c1", "eth0");
        assert!(agent.release_endpoint(&c1).unwrap());
        fake.with().fail_delete_link = true;
        agent.finish_release(&c1);
        assert_eq!(agent.releasing_count(), 1);
        assert!(agent.state().in_flight.is_empty());
        agent.reconcile(false);
        assert_eq!(agent.releasing_count(), 0);
        assert!(fake.with().links.is_empty() && fake.with().pins.is_empty());
    }

    #[test]
    fn del_with_take_link_answers_releasing_and_tears_down_after() {
        let dir = tempfile::tempdir().unwrap();
        let (agent, fake) = agent(dir.path(), &[("nk1", 11)]);
        let agent = Arc::new(agent);
        agent.add_endpoint(add("c1", "nk1", 11)).unwrap();
        let del = |take_link| Request::DelEndpoint {
            id: id("c1", "eth0"),
            take_link,
        };
        assert_eq!(agent.handle(del(true)), Response::Releasing);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while agent.releasing_count() > 0 {
            assert!(std::time::Instant::now() < deadline, "teardown never ran");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(fake.with().links.is_empty() && fake.with().pins.is_empty());
        // Unknown now: the caller owns whatever link there is.
        assert_eq!(agent.handle(del(true)), Response::Done);
        fake.with().links.insert("nk1".into(), 11);
        agent.add_endpoint(add("c1", "nk1", 11)).unwrap();
        // Settling an endpoint in service changes nothing.
        let settle = Request::SettleEndpoint {
            id: id("c1", "eth0"),
        };
        assert_eq!(agent.handle(settle.clone()), Response::Done);
        assert_eq!(agent.endpoint_count(), 1);
        assert!(agent.release_endpoint(&id("c1", "eth0")).unwrap());
        // ...and finishes a teardown that has not run yet.
        assert_eq!(agent.handle(settle), Response::Done);
        assert_eq!(agent.releasing_count(), 0);
        assert!(fake.with().links.is_empty());
        assert_eq!(agent.handle(del(false)), Response::Done);
    }

    #[test]
    fn a_burst_of_teardowns_all_finish_on_a_bounded_number_of_threads() {
        let dir = tempfile::tempdir().unwrap();
        let (agent, fake) = agent_with_links(dir.path(), 12);
        let agent = Arc::new(agent);
        let n = fill(&agent);
        for i in 1..=n {
            let del = Request::DelEndpoint {
                id: id(&format!("c{i}"), "eth0"),
                take_link: true,
            };
            assert_eq!(agent.handle(del), Response::Releasing);
            assert!(agent.teardowns().threads <= TEARDOWN_THREADS);
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while agent.releasing_count() > 0 || agent.teardowns().threads > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "teardowns never finished"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(fake.with().pins.is_empty());
        assert!((1..=n).all(|i| !fake.with().links.contains_key(&format!("nk{i}"))));
        assert_eq!(agent.endpoint_count(), 0);
    }

    #[test]
    fn a_failed_registration_rolls_the_datapath_back() {
        let dir = tempfile::tempdir().unwrap();
        let (agent, fake) = agent(dir.path(), &[("nk1", 11)]);
        // The record's temporary file cannot be made where a directory is in the way.
        let name = crate::endpoint_name::of(&id("c1", "eth0"));
        let blocker = dir.path().join(format!("endpoint.{name}.json.tmp"));
        std::fs::create_dir(&blocker).unwrap();
        let err = agent.add_endpoint(add("c1", "nk1", 11)).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Internal);
        assert_eq!(agent.endpoint_count(), 0);
        assert!(fake.with().mapped.is_empty() && fake.with().pins.is_empty());
        assert!(agent.state().reserved.is_empty() && agent.state().in_flight.is_empty());
        std::fs::remove_dir(&blocker).unwrap();
        agent.add_endpoint(add("c1", "nk1", 11)).unwrap();
        assert_eq!(Registry::load(dir.path(), &[]).unwrap().len(), 1);
    }

    #[test]
    fn addresses_are_distinct_and_the_pool_runs_out_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let links: Vec<(String, u32)> = (1..=8).map(|i| (format!("nk{i}"), i)).collect();
        let refs: Vec<(&str, u32)> = links.iter().map(|(n, i)| (n.as_str(), *i)).collect();
        let (agent, fake) = agent(dir.path(), &refs);
        let mut seen = BTreeSet::new();
        let mut added = 0;
        for (name, index) in &links {
            match agent.add_endpoint(add(&format!("c{index}"), name, *index)) {
                Ok(e) => {
                    added += 1;
                    for ip in e.ips {
                        assert!(
                            seen.insert(ip.address.clone()),
                            "{} handed out twice",
                            ip.address
                        );
                    }
                }
                Err(e) => {
                    assert_eq!(e.kind, ErrorKind::PoolExhausted, "{e:?}");
                    break;
                }
            }
        }
        assert!(added >= 5, "a /29 gave only {added}");
        assert_eq!(fake.with().pins.len(), added);
        assert!(agent.state().reserved.is_empty());
    }

    #[test]
    fn one_device_carries_one_endpoint() {
        let dir = tempfile::tempdir().unwrap();
        let (agent, _) = agent(dir.path(), &[("nk1", 11)]);
        agent.add_endpoint(add("c1", "nk1", 11)).unwrap();
        let err = agent.add_endpoint(add("c2", "nk1", 11)).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Conflict);
        // The same attachment again replaces itself.
        agent.add_endpoint(add("c1", "nk1", 11)).unwrap();
        assert_eq!(agent.endpoint_count(), 1);
    }

    #[test]
    fn an_address_belongs_to_one_endpoint() {
        let dir = tempfile::tempdir().unwrap();
        let (agent, _) = agent(dir.path(), &[("nk1", 11), ("nk2", 12)]);
        let first = agent.add_endpoint(add("c1", "nk1", 11)).unwrap();
        // Delegated IPAM handing out an address an endpoint holds.
        let mut again = add("c2", "nk2", 12);
        again.ips = vec![first.ips[0].clone()];
        let err = agent.add_endpoint(again.clone()).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Conflict);
        assert!(err.message.contains("c1"), "{}", err.message);
        // Free once its endpoint is gone.
        agent.del_endpoint(&id("c1", "eth0")).unwrap();
        agent.add_endpoint(again).unwrap();
    }

    #[test]
    fn reconcile_removes_vanished_endpoints_and_orphans_only() {
        let dir = tempfile::tempdir().unwrap();
        let (agent, fake) = agent(dir.path(), &[("nk1", 11), ("nk2", 12)]);
        agent.add_endpoint(add("c1", "nk1", 11)).unwrap();
        agent.add_endpoint(add("c2", "nk2", 12)).unwrap();
        // nk1 vanishes (its pod netns was destroyed); a crash left an orphan pin and entry.
        fake.with().links.remove("nk1");
        fake.with().pins.insert("orphan".into());
        fake.with()
            .mapped
            .insert(EndpointKey::from_v4([10, 9, 9, 9]).addr, 99);
        agent.reconcile(false);
        assert_eq!(agent.endpoint_count(), 1);
        let s = fake.with();
        assert_eq!(s.pins.len(), 1, "{:?}", s.pins);
        assert!(!s.pins.contains("orphan"));
        assert_eq!(s.mapped.len(), 2, "c2's two addresses stay, the rest go");
        assert!(s.mapped.values().all(|i| *i == 12));
    }

    #[test]
    fn requests_walk_no_map() {
        let dir = tempfile::tempdir().unwrap();
        let (agent, fake) = agent(dir.path(), &[("nk1", 11), ("nk2", 12)]);
        agent.add_endpoint(add("c1", "nk1", 11)).unwrap();
        agent.add_endpoint(add("c2", "nk2", 12)).unwrap();
        let status = agent.status();
        assert_eq!((status.endpoints, status.mapped_addresses), (2, 4));
        agent.del_endpoint(&id("c1", "eth0")).unwrap();
        assert_eq!(agent.status().mapped_addresses, 2);
        assert_eq!(fake.with().walks, 0);
        agent.reconcile(false);
        assert!(fake.with().walks > 0, "reconciliation does walk the map");
    }

    #[test]
    fn del_and_gc_are_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let (agent, fake) = agent(dir.path(), &[("nk1", 11), ("nk2", 12)]);
        agent.add_endpoint(add("c1", "nk1", 11)).unwrap();
        agent.add_endpoint(add("c2", "nk2", 12)).unwrap();
        agent.del_endpoint(&id("c1", "eth0")).unwrap();
        agent.del_endpoint(&id("c1", "eth0")).unwrap();
        assert_eq!(
            agent.gc(&[id("c9", "eth0")]).unwrap(),
            vec![id("c2", "eth0")]
        );
        assert_eq!(agent.endpoint_count(), 0);
        assert!(fake.with().mapped.is_empty() && fake.with().pins.is_empty());
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
