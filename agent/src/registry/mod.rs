//! The endpoint registry: every endpoint the agent serves, persisted as one JSON file so
//! it survives agent restarts and can be reconciled against the kernel. Built-in IPAM
//! derives its allocations from it, so an address is in use exactly as long as its
//! endpoint is registered.
//!
//! Every write is crash-atomic (`durable`), and each endpoint also has a record file of
//! its own (`records`): a registry file found corrupt at start is rebuilt from those of
//! the endpoints still pinned, instead of stopping the agent or forgetting live pods.

mod durable;
mod records;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use netkit_api::{Endpoint, EndpointId};
use serde::{Deserialize, Serialize};

use records::Records;

const FILE: &str = "endpoints.json";
/// Where a corrupt registry file is moved for inspection (replacing an older one).
const CORRUPT_COPY: &str = "endpoints.json.corrupt";

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
    #[error("encoding the registry: {0}")]
    Encode(#[from] serde_json::Error),
    #[error(transparent)]
    Durable(#[from] durable::DurableError),
}

type Result<T> = std::result::Result<T, RegistryError>;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Stored {
    endpoints: Vec<Endpoint>,
}

pub struct Registry {
    dir: PathBuf,
    path: PathBuf,
    records: Records,
    endpoints: BTreeMap<EndpointId, Endpoint>,
}

impl Registry {
    /// Load `<state_dir>/endpoints.json`, or start empty when it does not exist yet.
    ///
    /// A corrupt file is reported, kept aside as `endpoints.json.corrupt`, and rebuilt
    /// from the records of the endpoints in `pinned` (the names of the endpoint pin
    /// directories): those are the endpoints whose datapath is in place. Reconciliation
    /// then checks each against the kernel, as after any start.
    pub fn load(state_dir: &Path, pinned: &[String]) -> Result<Self> {
        std::fs::create_dir_all(state_dir).map_err(|source| RegistryError::Io {
            what: "creating",
            path: state_dir.to_path_buf(),
            source,
        })?;
        let mut registry = Registry {
            dir: state_dir.to_path_buf(),
            path: state_dir.join(FILE),
            records: Records::new(state_dir),
            endpoints: BTreeMap::new(),
        };
        match read_stored(&registry.path) {
            Ok(stored) => {
                registry.endpoints = stored
                    .endpoints
                    .into_iter()
                    .map(|e| (e.id.clone(), e))
                    .collect();
                registry.sync_records()?;
            }
            Err(RegistryError::Corrupt { path, source }) => {
                tracing::error!(
                    path = %path.display(),
                    error = %source,
                    pinned = pinned.len(),
                    "the endpoint registry is corrupt; rebuilding it from the pinned endpoints"
                );
                registry.rebuild(pinned)?;
            }
            Err(e) => return Err(e),
        }
        Ok(registry)
    }

    pub fn get(&self, id: &EndpointId) -> Option<&Endpoint> {
        self.endpoints.get(id)
    }

    pub fn all(&self) -> impl Iterator<Item = &Endpoint> {
        self.endpoints.values()
    }

    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Record (or replace) an endpoint and persist before returning.
    pub fn insert(&mut self, endpoint: Endpoint) -> Result<()> {
        // The record first: a registry entry always has one to be rebuilt from.
        self.records.write(&endpoint)?;
        let id = endpoint.id.clone();
        let previous = self.endpoints.insert(id.clone(), endpoint);
        self.save().inspect_err(|_| {
            // Memory stays what the file says: the caller rolls the endpoint back.
            match previous {
                Some(previous) => self.endpoints.insert(id.clone(), previous),
                None => self.endpoints.remove(&id),
            };
        })
    }

    /// Forget an endpoint and persist. Returns what was there.
    pub fn remove(&mut self, id: &EndpointId) -> Result<Option<Endpoint>> {
        let Some(removed) = self.endpoints.remove(id) else {
            return Ok(None);
        };
        if let Err(e) = self.save() {
            self.endpoints.insert(id.clone(), removed);
            return Err(e);
        }
        // After the registry, and not an error of the removal: a leftover record of an
        // unpinned endpoint is harmless (a rebuild reads only those of pinned endpoints,
        // a load drops it), while a registry entry without a record is not.
        let removal = self
            .records
            .remove(id)
            .and_then(|()| Ok(durable::sync_dir(&self.dir)?));
        if let Err(e) = removal {
            tracing::warn!(endpoint = %id, error = %e, "cannot remove the endpoint's record");
        }
        Ok(Some(removed))
    }

    /// Write the registry file and make it, and every record written before, durable.
    fn save(&self) -> Result<()> {
        let stored = Stored {
            endpoints: self.endpoints.values().cloned().collect(),
        };
        let bytes = serde_json::to_vec_pretty(&stored)?;
        durable::replace(&self.path, &bytes)?;
        durable::sync_dir(&self.dir)?;
        Ok(())
    }

    /// Give every registered endpoint a record (those registered by an agent that kept
    /// none) and drop records of endpoints no longer registered.
    fn sync_records(&self) -> Result<()> {
        let mut changed = false;
        for endpoint in self.endpoints.values() {
            if !self.records.exists(&endpoint.id) {
                self.records.write(endpoint)?;
                changed = true;
            }
        }
        let registered: std::collections::HashSet<String> = self
            .endpoints
            .keys()
            .map(crate::endpoint_name::of)
            .collect();
        for name in self.records.names() {
            if !registered.contains(&name) {
                self.records.remove_named(&name)?;
                changed = true;
            }
        }
        if changed {
            durable::sync_dir(&self.dir)?;
        }
        Ok(())
    }

    fn rebuild(&mut self, pinned: &[String]) -> Result<()> {
        let aside = self.dir.join(CORRUPT_COPY);
        std::fs::rename(&self.path, &aside).map_err(|source| RegistryError::Io {
            what: "moving aside",
            path: self.path.clone(),
            source,
        })?;
        for name in pinned {
            match self.records.read(name) {
                Ok(Some(endpoint)) => {
                    tracing::info!(endpoint = %endpoint.id, "endpoint restored from its record");
                    self.endpoints.insert(endpoint.id.clone(), endpoint);
                }
                // Pinned before its registration completed (the ADD was never
                // acknowledged), or left by an agent that kept no records.
                Ok(None) => tracing::error!(
                    pin = %name,
                    "pinned endpoint has no record; it cannot be restored"
                ),
                Err(e) => {
                    tracing::error!(pin = %name, error = %e, "endpoint record unreadable; it cannot be restored")
                }
            }
        }
        self.save()?;
        self.sync_records()?;
        tracing::warn!(
            restored = self.endpoints.len(),
            corrupt_copy = %aside.display(),
            "endpoint registry rebuilt"
        );
        Ok(())
    }
}

fn read_stored(path: &Path) -> Result<Stored> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| RegistryError::Corrupt {
            path: path.to_path_buf(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Stored::default()),
        Err(source) => Err(RegistryError::Io {
            what: "reading",
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netkit_api::{IpConfig, LinkMode};

    fn endpoint(id: &str) -> Endpoint {
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

    #[test]
    fn survives_a_reload() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let mut reg = Registry::load(dir, &[]).unwrap();
        reg.insert(endpoint("a")).unwrap();
        reg.insert(endpoint("b")).unwrap();
        reg.remove(&endpoint("a").id).unwrap();
        let again = Registry::load(dir, &[]).unwrap();
        assert_eq!(again.len(), 1);
        assert!(again.get(&endpoint("b").id).is_some());
        assert_eq!(record_names(dir), [name("b")]);
    }

    fn name(container: &str) -> String {
        crate::endpoint_name::of(&endpoint(container).id)
    }

    fn record_names(dir: &Path) -> Vec<String> {
        let mut names = Records::new(dir).names();
        names.sort();
        names
    }

    /// A registry of `a`, `b` and `c` whose file is then replaced by `damage(original)`;
    /// the directory goes when the returned guard drops.
    fn damaged_registry(damage: impl Fn(&[u8]) -> Vec<u8>) -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let mut reg = Registry::load(dir, &[]).unwrap();
        for c in ["a", "b", "c"] {
            reg.insert(endpoint(c)).unwrap();
        }
        let file = dir.join(FILE);
        let original = std::fs::read(&file).unwrap();
        std::fs::write(&file, damage(&original)).unwrap();
        tmp
    }

    #[test]
    fn a_corrupt_file_is_rebuilt_from_the_records_of_pinned_endpoints() {
        type Damage = fn(&[u8]) -> Vec<u8>;
        let damages: [Damage; 3] = [
            |b| b[..b.len() / 2].to_vec(),
            |_| Vec::new(),
            |_| b"{not json".to_vec(),
        ];
        for damage in damages {
            let tmp = damaged_registry(damage);
            let dir = tmp.path();
            // `c` is no longer pinned (its datapath is gone); `d` is pinned but was never
            // registered (a crash before its ADD was acknowledged).
            let pinned = [name("a"), name("b"), name("d")];
            let reg = Registry::load(dir, &pinned).unwrap();
            let ids: Vec<_> = reg.all().map(|e| e.id.container_id.as_str()).collect();
            assert_eq!(ids, ["a", "b"]);
            assert_eq!(reg.get(&endpoint("a").id), Some(&endpoint("a")));
            assert!(dir.join(CORRUPT_COPY).exists(), "the corrupt file is kept");
            assert_eq!(record_names(dir), [name("a"), name("b")]);
            // The rebuilt file is whole again.
            let again = Registry::load(dir, &[]).unwrap();
            assert_eq!(again.len(), 2);
        }
    }

    #[test]
    fn endpoints_of_an_agent_without_records_get_them_on_load() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let stored = Stored {
            endpoints: vec![endpoint("old")],
        };
        std::fs::write(dir.join(FILE), serde_json::to_vec(&stored).unwrap()).unwrap();
        let reg = Registry::load(dir, &[]).unwrap();
        assert_eq!(reg.len(), 1);
        assert_eq!(record_names(dir), [name("old")]);
    }

    #[test]
    fn a_record_under_another_endpoints_name_is_not_restored() {
        let tmp = damaged_registry(|_| Vec::new());
        let dir = tmp.path();
        let records = Records::new(dir);
        std::fs::copy(
            dir.join(format!("endpoint.{}.json", name("a"))),
            dir.join(format!("endpoint.{}.json", name("x"))),
        )
        .unwrap();
        assert!(records.read(&name("x")).unwrap().is_none());
        let reg = Registry::load(dir, &[name("x")]).unwrap();
        assert_eq!(reg.len(), 0);
    }
}
