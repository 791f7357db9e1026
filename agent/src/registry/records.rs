//! The registry on disk: one file per endpoint in the state directory,
//! `endpoint.<name>.json`, `<name>` being the endpoint's pin directory name. A change
//! writes or removes one small file, so its cost does not grow with the number of
//! endpoints on the node; each write is crash-atomic and not fsynced (`atomic_file`
//! says why).
//!
//! An endpoint being torn down after its DEL was answered has its record renamed to
//! `releasing.<name>.json`: one rename marks it, so a restart finishes the teardown
//! instead of taking the endpoint for a live one.

use std::path::{Path, PathBuf};

use netkit_api::{Endpoint, EndpointId};

use super::atomic_file;
use super::{RegistryError, Result};
use crate::endpoint_name;

const PREFIX: &str = "endpoint.";
/// The record of an endpoint whose teardown is under way.
const RELEASING_PREFIX: &str = "releasing.";
const SUFFIX: &str = ".json";
/// Appended to a record that cannot be loaded: kept for inspection, never read again.
const SET_ASIDE: &str = ".corrupt";

#[derive(Clone)]
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

    fn releasing_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{RELEASING_PREFIX}{name}{SUFFIX}"))
    }

    /// Mark the endpoint `id` as being torn down: its record renamed.
    pub fn mark_releasing(&self, id: &EndpointId) -> Result<()> {
        let name = endpoint_name::of(id);
        let (from, to) = (self.path(&name), self.releasing_path(&name));
        std::fs::rename(&from, &to).map_err(|source| RegistryError::Io {
            what: "marking as releasing",
            path: from,
            source,
        })
    }

    /// Write an endpoint's record: a temporary file renamed over the record.
    pub fn write(&self, endpoint: &Endpoint) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(endpoint)?;
        atomic_file::replace(&self.path(&endpoint_name::of(&endpoint.id)), &bytes)?;
        Ok(())
    }

    /// Write several records.
    pub fn write_all<'a>(&self, endpoints: impl IntoIterator<Item = &'a Endpoint>) -> Result<()> {
        endpoints
            .into_iter()
            .try_for_each(|endpoint| self.write(endpoint))
    }

    /// Remove an endpoint's record (if any, live or releasing).
    pub fn remove(&self, id: &EndpointId) -> Result<()> {
        self.remove_named(&endpoint_name::of(id))
    }

    /// Remove the record named `name`, live or releasing.
    pub fn remove_named(&self, name: &str) -> Result<()> {
        atomic_file::remove(&self.path(name))?;
        atomic_file::remove(&self.releasing_path(name))?;
        Ok(())
    }

    /// The record of the endpoint named `name`, `None` when there is none.
    pub fn read(&self, name: &str) -> Result<Option<Endpoint>> {
        self.read_at(self.path(name), name)
    }

    /// The releasing record of the endpoint named `name`, `None` when there is none.
    pub fn read_releasing(&self, name: &str) -> Result<Option<Endpoint>> {
        self.read_at(self.releasing_path(name), name)
    }

    fn read_at(&self, path: PathBuf, name: &str) -> Result<Option<Endpoint>> {
        let Some(bytes) = atomic_file::read_if_exists(&path)? else {
            return Ok(None);
        };
        let endpoint: Endpoint =
            serde_json::from_slice(&bytes).map_err(|source| RegistryError::Corrupt {
                path: path.clone(),
                source,
            })?;
        // A record copied or renamed by hand must not pass for another endpoint.
        if endpoint_name::of(&endpoint.id) != name {
            return Err(RegistryError::Misnamed {
                path,
                id: endpoint.id,
            });
        }
        Ok(Some(endpoint))
    }

    /// Rename the record named `name` out of the way (`….json.corrupt`, replacing an older
    /// one), so it is neither loaded nor mistaken for a live endpoint's again.
    pub fn set_aside(&self, name: &str) -> Result<PathBuf> {
        self.set_aside_at(self.path(name))
    }

    /// [`Records::set_aside`] for a releasing record.
    pub fn set_aside_releasing(&self, name: &str) -> Result<PathBuf> {
        self.set_aside_at(self.releasing_path(name))
    }

    fn set_aside_at(&self, path: PathBuf) -> Result<PathBuf> {
        let mut aside = path.clone().into_os_string();
        aside.push(SET_ASIDE);
        let aside = PathBuf::from(aside);
        std::fs::rename(&path, &aside).map_err(|source| RegistryError::Io {
            what: "setting aside",
            path,
            source,
        })?;
        Ok(aside)
    }

    /// Names of the endpoints that have a record. An unreadable directory is an error,
    /// not an empty registry: the agent would take every live endpoint for an orphan.
    pub fn names(&self) -> Result<Vec<String>> {
        self.names_with(PREFIX)
    }

    /// Names of the endpoints whose teardown is under way.
    pub fn releasing_names(&self) -> Result<Vec<String>> {
        self.names_with(RELEASING_PREFIX)
    }

    fn names_with(&self, prefix: &str) -> Result<Vec<String>> {
        Ok(self
            .files()?
            .into_iter()
            .filter_map(|file| Some(file.strip_prefix(prefix)?.strip_suffix(SUFFIX)?.to_string()))
            .collect())
    }

    /// Remove the temporary files of record writes a crash interrupted before their
    /// rename: the record they were to replace (if any) is still whole. Returns how many.
    pub fn remove_interrupted_writes(&self) -> Result<usize> {
        let tmp_suffix = format!("{SUFFIX}{}", atomic_file::TMP_SUFFIX);
        let leftovers: Vec<String> = self
            .files()?
            .into_iter()
            .filter(|file| file.starts_with(PREFIX) && file.ends_with(&tmp_suffix))
            .collect();
        for file in &leftovers {
            atomic_file::remove(&self.dir.join(file))?;
        }
        Ok(leftovers.len())
    }

    fn files(&self) -> Result<Vec<String>> {
        let io = |source| RegistryError::Io {
            what: "listing",
            path: self.dir.clone(),
            source,
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(io)? {
            // Names that are not UTF-8 are no record of ours.
            if let Ok(name) = entry.map_err(io)?.file_name().into_string() {
                files.push(name);
            }
        }
        Ok(files)
    }
}
