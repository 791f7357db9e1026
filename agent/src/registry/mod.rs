//! The endpoint registry: every endpoint the agent serves, persisted so it survives agent
//! restarts and can be reconciled against the kernel. Built-in IPAM derives its
//! allocations from it, so an address is in use exactly as long as its endpoint is
//! registered.
//!
//! On disk it is one record per endpoint (`records`), the only copy: a change writes or
//! removes that one file, crash-atomically (`atomic_file`), and a start reads them all back.
//! Registries of earlier agents (one `endpoints.json`) are turned into records once
//! (`upgrade`).
//!
//! An endpoint whose DEL was answered before its teardown finished is *releasing*: out
//! of service (not listed, not found by CHECK), but still registered, so its addresses
//! and device stay taken until the teardown is done (see `Store::mark_releasing`).

mod atomic_file;
mod records;
mod upgrade;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use netkit_api::{Endpoint, EndpointId};

use records::Records;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is corrupt: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path} holds the record of another endpoint ({id})")]
    Misnamed { path: PathBuf, id: EndpointId },
    #[error("encoding the registry: {0}")]
    Encode(#[from] serde_json::Error),
    #[error(transparent)]
    File(#[from] atomic_file::FileError),
}

type Result<T> = std::result::Result<T, RegistryError>;

pub struct Registry {
    records: Records,
    endpoints: BTreeMap<EndpointId, Endpoint>,
    /// Who holds each registered address and each device: what built-in IPAM and the
    /// one-endpoint-per-device rule ask on every ADD, answered without a walk.
    addresses: HashMap<IpAddr, EndpointId>,
    devices: HashMap<u32, EndpointId>,
    /// Registered endpoints whose teardown is under way.
    releasing: HashSet<EndpointId>,
}

impl Registry {
    /// Load the registry kept in `state_dir` (empty when there is none yet).
    ///
    /// `pinned` names the endpoint pin directories: those are the endpoints whose
    /// datapath is in place, which only the upgrade of a corrupt registry file of an
    /// earlier agent needs (see `upgrade`). Reconciliation then checks every endpoint
    /// against the kernel, as after any start.
    pub fn load(state_dir: &Path, pinned: &[String]) -> Result<Self> {
        std::fs::create_dir_all(state_dir).map_err(|source| RegistryError::Io {
            what: "creating",
            path: state_dir.to_path_buf(),
            source,
        })?;
        let records = Records::new(state_dir);
        let interrupted = records.remove_interrupted_writes()?;
        if interrupted > 0 {
            tracing::info!(
                interrupted,
                "removed the temporary files of interrupted record writes"
            );
        }
        upgrade::migrate(state_dir, &records, pinned)?;
        let mut registry = Registry {
            records,
            endpoints: BTreeMap::new(),
            addresses: HashMap::new(),
            devices: HashMap::new(),
            releasing: HashSet::new(),
        };
        let records = registry.records.clone();
        let live = records.names()?.into_iter().map(|name| (name, false));
        let releasing = records
            .releasing_names()?
            .into_iter()
            .map(|name| (name, true));
        for (name, releasing) in live.chain(releasing) {
            let read = if releasing {
                records.read_releasing(&name)
            } else {
                records.read(&name)
            };
            match read {
                Ok(Some(endpoint)) => {
                    if releasing {
                        registry.releasing.insert(endpoint.id.clone());
                    }
                    registry.add(endpoint);
                }
                // Removed since it was listed: nobody else writes here, but no matter.
                Ok(None) => {}
                // Records are replaced atomically, so this is damage from outside (the
                // disk, a hand edit). The endpoint is not restored: reconciliation
                // removes its datapath, and its pod needs a new ADD.
                Err(e @ (RegistryError::Corrupt { .. } | RegistryError::Misnamed { .. })) => {
                    let aside = if releasing {
                        records.set_aside_releasing(&name)?
                    } else {
                        records.set_aside(&name)?
                    };
                    tracing::error!(
                        error = %e,
                        kept_as = %aside.display(),
                        "endpoint record unusable; the endpoint cannot be restored"
                    );
                }
                // A record that cannot be read now may be readable later: stop rather
                // than take its live endpoint for an orphan.
                Err(e) => return Err(e),
            }
        }
        Ok(registry)
    }

    /// A registered endpoint, releasing or not.
    pub fn get(&self, id: &EndpointId) -> Option<&Endpoint> {
        self.endpoints.get(id)
    }

    /// A registered endpoint that is in service (not releasing).
    pub fn get_live(&self, id: &EndpointId) -> Option<&Endpoint> {
        self.get(id).filter(|_| !self.is_releasing(id))
    }

    pub fn is_releasing(&self, id: &EndpointId) -> bool {
        self.releasing.contains(id)
    }

    pub fn releasing_count(&self) -> usize {
        self.releasing.len()
    }

    /// The endpoints in service (not releasing).
    pub fn live(&self) -> impl Iterator<Item = &Endpoint> {
        self.endpoints
            .values()
            .filter(|e| !self.releasing.contains(&e.id))
    }

    /// Take a registered endpoint out of service; its record says so durably.
    pub fn set_releasing(&mut self, marked: Marked) {
        if self.endpoints.contains_key(&marked.0) {
            self.releasing.insert(marked.0);
        }
    }

    /// The endpoint that holds `addr`, if a registered one does.
    pub fn address_owner(&self, addr: &IpAddr) -> Option<&EndpointId> {
        self.addresses.get(addr)
    }

    /// The endpoint on host device `ifindex`, if a registered one is.
    pub fn device_owner(&self, ifindex: u32) -> Option<&EndpointId> {
        self.devices.get(&ifindex)
    }

    /// Every registered endpoint, releasing ones included.
    pub fn all(&self) -> impl Iterator<Item = &Endpoint> {
        self.endpoints.values()
    }

    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The registry's files, for the slow half of a change — writing or unlinking a
    /// record — done without holding the registry.
    pub fn store(&self) -> Store {
        Store {
            records: self.records.clone(),
        }
    }

    /// Register (or replace) an endpoint whose record is written.
    pub fn insert(&mut self, recorded: Recorded) {
        self.add(recorded.0);
    }

    /// Forget an endpoint whose record is gone. Returns what was there.
    pub fn remove(&mut self, unrecorded: Unrecorded) -> Option<Endpoint> {
        self.releasing.remove(&unrecorded.0);
        let removed = self.endpoints.remove(&unrecorded.0)?;
        self.unindex(&removed);
        Some(removed)
    }

    fn add(&mut self, endpoint: Endpoint) {
        if let Some(previous) = self.endpoints.remove(&endpoint.id) {
            self.releasing.remove(&previous.id);
            self.unindex(&previous);
        }
        for addr in addresses(&endpoint) {
            self.addresses.insert(addr, endpoint.id.clone());
        }
        self.devices
            .insert(endpoint.host_ifindex, endpoint.id.clone());
        self.endpoints.insert(endpoint.id.clone(), endpoint);
    }

    /// Drop `endpoint`'s index entries (only its own: an entry another endpoint took
    /// over stays).
    fn unindex(&mut self, endpoint: &Endpoint) {
        for addr in addresses(endpoint) {
            if self.addresses.get(&addr) == Some(&endpoint.id) {
                self.addresses.remove(&addr);
            }
        }
        if self.devices.get(&endpoint.host_ifindex) == Some(&endpoint.id) {
            self.devices.remove(&endpoint.host_ifindex);
        }
    }
}

/// The addresses an endpoint holds (its `ips` parse: the service checks them on ADD).
fn addresses(endpoint: &Endpoint) -> impl Iterator<Item = IpAddr> + '_ {
    endpoint
        .ips
        .iter()
        .filter_map(|ip| netkit_api::parse_cidr(&ip.address).map(|(addr, _)| addr))
}

/// Writes and unlinks records: the disk half of a registry change. Each record is a file
/// of its own, so changes to different endpoints need no common lock; the caller keeps
/// anyone else from changing the same endpoint meanwhile (the service's claim).
#[derive(Clone)]
pub struct Store {
    records: Records,
}

/// An endpoint whose record is written, to be registered ([`Registry::insert`]).
pub struct Recorded(Endpoint);

/// An endpoint whose record is gone, to be forgotten ([`Registry::remove`]).
pub struct Unrecorded(EndpointId);

/// An endpoint whose record is marked releasing ([`Registry::set_releasing`]).
pub struct Marked(EndpointId);

impl Store {
    /// Write the record of `endpoint`, which is not registered (replace a registered
    /// endpoint by removing it first): one small file, whatever the number of
    /// endpoints. A failed write leaves no record of it behind.
    pub fn record(&self, endpoint: Endpoint) -> Result<Recorded> {
        if let Err(e) = self.records.write(&endpoint) {
            // Whatever step failed, a restart must not find an endpoint the agent
            // refused.
            if let Err(undo) = self.records.remove(&endpoint.id) {
                tracing::warn!(endpoint = %endpoint.id, error = %undo, "cannot remove the record of a failed registration");
            }
            return Err(e);
        }
        Ok(Recorded(endpoint))
    }

    /// Mark `id`'s record as releasing (a rename): after a crash the agent finishes the
    /// teardown rather than restore the endpoint.
    pub fn mark_releasing(&self, id: &EndpointId) -> Result<Marked> {
        self.records.mark_releasing(id)?;
        Ok(Marked(id.clone()))
    }

    /// Unlink the record of `id`. On an error the
    /// endpoint stays registered: a retry removes it.
    pub fn unrecord(&self, id: &EndpointId) -> Result<Unrecorded> {
        self.records.remove(id)?;
        Ok(Unrecorded(id.clone()))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use netkit_api::{IpConfig, LinkMode};

    pub fn endpoint(id: &str) -> Endpoint {
        Endpoint {
            id: EndpointId {
                container_id: id.into(),
                ifname: "eth0".into(),
            },
            netns: "/run/netns/x".into(),
            mode: LinkMode::Veth,
            host_ifname: "nv1".into(),
            host_ifindex: 7,
            pod_mac: None,
            host_mac: None,
            ips: vec![IpConfig {
                address: "10.0.0.2/24".into(),
                gateway: None,
            }],
            builtin_ipam: true,
            programs: vec![],
        }
    }

    pub fn name(container: &str) -> String {
        crate::endpoint_name::of(&endpoint(container).id)
    }

    /// Register `endpoint` as the service does: its record, then the registry.
    pub fn add(reg: &mut Registry, endpoint: Endpoint) -> Result<()> {
        let recorded = reg.store().record(endpoint)?;
        reg.insert(recorded);
        Ok(())
    }

    /// Forget `container`'s endpoint as the service does.
    pub fn forget(reg: &mut Registry, container: &str) -> Result<Option<Endpoint>> {
        let unrecorded = reg.store().unrecord(&endpoint(container).id)?;
        Ok(reg.remove(unrecorded))
    }

    pub fn record_names(dir: &Path) -> Vec<String> {
        let mut names = Records::new(dir).names().unwrap();
        names.sort();
        names
    }

    /// Every file in `dir`, sorted.
    fn files(dir: &Path) -> Vec<String> {
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        files
    }

    #[test]
    fn survives_a_reload() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let mut reg = Registry::load(dir, &[]).unwrap();
        add(&mut reg, endpoint("a")).unwrap();
        add(&mut reg, endpoint("b")).unwrap();
        let mut changed = endpoint("b");
        changed.host_ifindex = 8;
        forget(&mut reg, "b").unwrap();
        add(&mut reg, changed.clone()).unwrap();
        forget(&mut reg, "a").unwrap();
        let again = Registry::load(dir, &[]).unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again.get(&endpoint("b").id), Some(&changed));
        // One record per endpoint is all there is.
        assert_eq!(files(dir), [format!("endpoint.{}.json", name("b"))]);
    }

    #[test]
    fn addresses_and_devices_are_indexed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let mut reg = Registry::load(dir, &[]).unwrap();
        let mut b = endpoint("b");
        b.host_ifindex = 8;
        b.ips[0].address = "10.0.0.3/24".into();
        add(&mut reg, endpoint("a")).unwrap();
        add(&mut reg, b).unwrap();
        let a = endpoint("a").id;
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(reg.address_owner(&ip("10.0.0.2")), Some(&a));
        assert_eq!(reg.device_owner(7), Some(&a));
        assert_eq!(reg.device_owner(8), Some(&endpoint("b").id));
        // A reload indexes what it reads.
        let mut reg = Registry::load(dir, &[]).unwrap();
        assert_eq!(reg.address_owner(&ip("10.0.0.3")), Some(&endpoint("b").id));
        forget(&mut reg, "a").unwrap();
        assert_eq!(reg.address_owner(&ip("10.0.0.2")), None);
        assert_eq!(reg.device_owner(7), None);
        assert_eq!(reg.device_owner(8), Some(&endpoint("b").id));
    }

    #[test]
    fn a_change_costs_the_same_whatever_the_number_of_endpoints() {
        let tmp = tempfile::tempdir().unwrap();
        let mut reg = Registry::load(tmp.path(), &[]).unwrap();
        for n in 0..50 {
            let (touched, inserted) =
                atomic_file::counting::files_touched(|| add(&mut reg, endpoint(&format!("c{n}"))));
            inserted.unwrap();
            // The endpoint's own record, nothing else.
            assert_eq!(touched, 1, "insert with {n} endpoints registered");
        }
        let (touched, removed) = atomic_file::counting::files_touched(|| forget(&mut reg, "c7"));
        assert!(removed.unwrap().is_some());
        assert_eq!(touched, 1);
    }

    #[test]
    fn an_interrupted_write_leaves_the_previous_record() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let mut reg = Registry::load(dir, &[]).unwrap();
        add(&mut reg, endpoint("a")).unwrap();
        // A crash between creating the replacement and renaming it over the record,
        // and one in the first write of a record that never made it.
        let a = dir.join(format!("endpoint.{}.json", name("a")));
        std::fs::write(
            dir.join(format!("endpoint.{}.json.tmp", name("a"))),
            b"{\"id\":",
        )
        .unwrap();
        std::fs::write(dir.join(format!("endpoint.{}.json.tmp", name("b"))), b"").unwrap();
        let before = std::fs::read(&a).unwrap();
        let reg = Registry::load(dir, &[]).unwrap();
        assert_eq!(reg.len(), 1);
        assert_eq!(reg.get(&endpoint("a").id), Some(&endpoint("a")));
        assert_eq!(std::fs::read(&a).unwrap(), before);
        assert_eq!(files(dir), [format!("endpoint.{}.json", name("a"))]);
    }

    #[test]
    fn an_unusable_record_is_set_aside_and_the_others_load() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let mut reg = Registry::load(dir, &[]).unwrap();
        for c in ["a", "b", "c"] {
            add(&mut reg, endpoint(c)).unwrap();
        }
        let b = dir.join(format!("endpoint.{}.json", name("b")));
        std::fs::write(&b, b"{not json").unwrap();
        // A record copied by hand under another endpoint's name.
        std::fs::copy(
            dir.join(format!("endpoint.{}.json", name("a"))),
            dir.join(format!("endpoint.{}.json", name("x"))),
        )
        .unwrap();
        let reg = Registry::load(dir, &[]).unwrap();
        let ids: Vec<_> = reg.all().map(|e| e.id.container_id.as_str()).collect();
        assert_eq!(ids, ["a", "c"]);
        assert_eq!(record_names(dir), [name("a"), name("c")]);
        assert!(
            dir.join(format!("endpoint.{}.json.corrupt", name("b")))
                .exists()
        );
        assert!(
            dir.join(format!("endpoint.{}.json.corrupt", name("x")))
                .exists()
        );
    }

    #[test]
    fn a_releasing_endpoint_keeps_its_addresses_across_a_reload_until_forgotten() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let mut reg = Registry::load(dir, &[]).unwrap();
        add(&mut reg, endpoint("a")).unwrap();
        let mut b = endpoint("b");
        b.host_ifindex = 8;
        b.ips[0].address = "10.0.0.3/24".into();
        add(&mut reg, b).unwrap();
        let a = endpoint("a").id;
        let marked = reg.store().mark_releasing(&a);
        reg.set_releasing(marked.unwrap());
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        for reg in [reg, Registry::load(dir, &[]).unwrap()] {
            assert!(reg.is_releasing(&a));
            assert!(reg.get_live(&a).is_none() && reg.get(&a).is_some());
            assert_eq!(reg.address_owner(&ip("10.0.0.2")), Some(&a));
            assert_eq!(reg.device_owner(7), Some(&a));
            assert_eq!(reg.releasing_count(), 1);
            let live: Vec<_> = reg.live().map(|e| e.id.container_id.clone()).collect();
            assert_eq!(live, ["b"]);
        }
        let mut reg = Registry::load(dir, &[]).unwrap();
        forget(&mut reg, "a").unwrap();
        assert_eq!(reg.address_owner(&ip("10.0.0.2")), None);
        assert_eq!(reg.releasing_count(), 0);
        assert_eq!(files(dir), [format!("endpoint.{}.json", name("b"))]);
    }

    #[test]
    fn a_failed_write_leaves_memory_and_disk_as_they_were() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let mut reg = Registry::load(dir, &[]).unwrap();
        add(&mut reg, endpoint("a")).unwrap();
        // The temporary file cannot be created where a directory is in the way.
        std::fs::create_dir(dir.join(format!("endpoint.{}.json.tmp", name("b")))).unwrap();
        assert!(add(&mut reg, endpoint("b")).is_err());
        assert!(reg.get(&endpoint("b").id).is_none());
        assert_eq!(record_names(dir), [name("a")]);
    }
}
