//! A second copy of each endpoint's record, one file per endpoint beside the registry
//! file (`endpoint.<name>.json`, `<name>` being the endpoint's pin directory name). When
//! the registry file is found corrupt at start, the pins say which endpoints are live and
//! these files hold what the kernel does not: the netns path, the addresses as IPAM gave
//! them (prefix, gateway) and who allocated them.

use std::path::{Path, PathBuf};

use netkit_api::{Endpoint, EndpointId};

use super::durable;
use super::{RegistryError, Result};
use crate::endpoint_name;

const PREFIX: &str = "endpoint.";
const SUFFIX: &str = ".json";

pub struct Records {
    dir: PathBuf,
}

impl Records {
    pub fn new(dir: &Path) -> Self {
        Records {
            dir: dir.to_path_buf(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{PREFIX}{name}{SUFFIX}"))
    }

    /// Write an endpoint's record (durable once the directory is synced).
    pub fn write(&self, endpoint: &Endpoint) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(endpoint)?;
        durable::replace(&self.path(&endpoint_name::of(&endpoint.id)), &bytes)?;
        Ok(())
    }

    pub fn exists(&self, id: &EndpointId) -> bool {
        self.path(&endpoint_name::of(id)).exists()
    }

    pub fn remove(&self, id: &EndpointId) -> Result<()> {
        self.remove_named(&endpoint_name::of(id))
    }

    pub fn remove_named(&self, name: &str) -> Result<()> {
        durable::remove(&self.path(name))?;
        Ok(())
    }

    /// The record of the endpoint named `name`, `None` when there is none.
    pub fn read(&self, name: &str) -> Result<Option<Endpoint>> {
        let path = self.path(name);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(RegistryError::Io {
                    what: "reading",
                    path,
                    source,
                });
            }
        };
        let endpoint: Endpoint = serde_json::from_slice(&bytes)
            .map_err(|source| RegistryError::Corrupt { path, source })?;
        // A record copied or renamed by hand must not pass for another endpoint.
        Ok((endpoint_name::of(&endpoint.id) == name).then_some(endpoint))
    }

    /// Names of the endpoints that have a record.
    pub fn names(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter_map(|file| {
                let name = file.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
                Some(name.to_string())
            })
            .collect()
    }
}
