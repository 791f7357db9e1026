//! The endpoint registry: every endpoint the agent serves, persisted as one JSON file
//! (written atomically) so it survives agent restarts and can be reconciled against
//! the kernel. Built-in IPAM derives its allocations from it, so an address is in use
//! exactly as long as its endpoint is registered.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use netkit_api::{Endpoint, EndpointId};
use serde::{Deserialize, Serialize};

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
}

type Result<T> = std::result::Result<T, RegistryError>;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Stored {
    endpoints: Vec<Endpoint>,
}

pub struct Registry {
    path: PathBuf,
    endpoints: BTreeMap<EndpointId, Endpoint>,
}

impl Registry {
    /// Load `<state_dir>/endpoints.json`, or start empty when it does not exist yet.
    pub fn load(state_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(state_dir).map_err(|source| RegistryError::Io {
            what: "creating",
            path: state_dir.to_path_buf(),
            source,
        })?;
        let path = state_dir.join("endpoints.json");
        let stored = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<Stored>(&bytes).map_err(|source| {
                RegistryError::Corrupt {
                    path: path.clone(),
                    source,
                }
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Stored::default(),
            Err(source) => {
                return Err(RegistryError::Io {
                    what: "reading",
                    path,
                    source,
                });
            }
        };
        let endpoints = stored
            .endpoints
            .into_iter()
            .map(|e| (e.id.clone(), e))
            .collect();
        Ok(Registry { path, endpoints })
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

    /// Record (or replace) an endpoint and persist before returning.
    pub fn insert(&mut self, endpoint: Endpoint) -> Result<()> {
        self.endpoints.insert(endpoint.id.clone(), endpoint);
        self.save()
    }

    /// Forget an endpoint and persist. Returns what was there.
    pub fn remove(&mut self, id: &EndpointId) -> Result<Option<Endpoint>> {
        let removed = self.endpoints.remove(id);
        if removed.is_some() {
            self.save()?;
        }
        Ok(removed)
    }

    fn save(&self) -> Result<()> {
        let stored = Stored {
            endpoints: self.endpoints.values().cloned().collect(),
        };
        let tmp = self.path.with_extension("json.tmp");
        let bytes =
            serde_json::to_vec_pretty(&stored).map_err(|source| RegistryError::Corrupt {
                path: self.path.clone(),
                source,
            })?;
        std::fs::write(&tmp, bytes).map_err(|source| RegistryError::Io {
            what: "writing",
            path: tmp.clone(),
            source,
        })?;
        // rename(2) is atomic: a crash leaves the old or the new registry, never half.
        std::fs::rename(&tmp, &self.path).map_err(|source| RegistryError::Io {
            what: "renaming",
            path: tmp,
            source,
        })
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
        let dir = tempdir();
        let mut reg = Registry::load(&dir).unwrap();
        reg.insert(endpoint("a")).unwrap();
        reg.insert(endpoint("b")).unwrap();
        reg.remove(&endpoint("a").id).unwrap();
        let again = Registry::load(&dir).unwrap();
        assert_eq!(again.len(), 1);
        assert!(again.get(&endpoint("b").id).is_some());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_corrupt_file_is_reported_not_ignored() {
        let dir = tempdir();
        std::fs::write(dir.join("endpoints.json"), b"{not json").unwrap();
        let err = Registry::load(&dir).err().unwrap();
        assert!(err.to_string().contains("corrupt"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempdir() -> PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "netkit-registry-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
