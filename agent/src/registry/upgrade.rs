//! The registry file of earlier agents: every endpoint in one `endpoints.json`, rewritten
//! whole on each change, with a record per endpoint beside it as a second copy. Found at
//! start, it is read once and turned into records, then removed.
//!
//! The file was the source of truth then: its endpoints get a record each (replacing the
//! second copy, which can be stale: the file was written first), and records of
//! endpoints it does not hold go. A file found corrupt is rebuilt as those agents did:
//! from the records of the endpoints still pinned, the pins saying which are live. The
//! file goes only once every record is written, so a crash mid-way repeats the upgrade.

use std::collections::HashSet;
use std::path::Path;

use netkit_api::Endpoint;
use serde::Deserialize;

use super::records::Records;
use super::{RegistryError, Result, atomic_file};
use crate::endpoint_name;

const FILE: &str = "endpoints.json";
/// Where a corrupt registry file is moved for inspection (replacing an older one).
const CORRUPT_COPY: &str = "endpoints.json.corrupt";

#[derive(Deserialize)]
struct Stored {
    endpoints: Vec<Endpoint>,
}

/// Turn `<dir>/endpoints.json`, if there is one, into records; `pinned` names the
/// endpoint pin directories. Returns how many endpoints it held (or were restored).
pub fn migrate(dir: &Path, records: &Records, pinned: &[String]) -> Result<Option<usize>> {
    let path = dir.join(FILE);
    let Some(bytes) = atomic_file::read_if_exists(&path)? else {
        return Ok(None);
    };
    let (endpoints, corrupt) = match serde_json::from_slice::<Stored>(&bytes) {
        Ok(stored) => (stored.endpoints, false),
        Err(e) => {
            tracing::error!(
                path = %path.display(),
                error = %e,
                pinned = pinned.len(),
                "the endpoint registry file is corrupt; rebuilding it from the pinned endpoints"
            );
            (restore_pinned(records, pinned), true)
        }
    };
    records.write_all(&endpoints)?;
    let kept: HashSet<String> = endpoints.iter().map(|e| endpoint_name::of(&e.id)).collect();
    for name in records.names()? {
        if !kept.contains(&name) {
            records.remove_named(&name)?;
        }
    }
    // Every record is in place: now the file may go.
    if corrupt {
        let aside = dir.join(CORRUPT_COPY);
        std::fs::rename(&path, &aside).map_err(|source| RegistryError::Io {
            what: "moving aside",
            path: path.clone(),
            source,
        })?;
        tracing::warn!(corrupt_copy = %aside.display(), "corrupt registry file kept aside");
    } else {
        atomic_file::remove(&path)?;
    }
    tracing::info!(
        endpoints = endpoints.len(),
        "the endpoint registry file was turned into one record per endpoint"
    );
    Ok(Some(endpoints.len()))
}

/// The endpoints of `pinned` that have a readable record of their own.
fn restore_pinned(records: &Records, pinned: &[String]) -> Vec<Endpoint> {
    let mut restored = Vec::new();
    for name in pinned {
        match records.read(name) {
            Ok(Some(endpoint)) => {
                tracing::info!(endpoint = %endpoint.id, "endpoint restored from its record");
                restored.push(endpoint);
            }
            // Pinned before its registration completed (the ADD was never
            // acknowledged), or left by an agent that kept no records.
            Ok(None) => tracing::error!(
                pin = %name,
                "pinned endpoint has no record; it cannot be restored"
            ),
            Err(e) => {
                tracing::error!(pin = %name, error = %e, "endpoint record unusable; it cannot be restored")
            }
        }
    }
    restored
}

#[cfg(test)]
mod tests {
    use super::super::tests::{endpoint, name, record_names};
    use super::super::{Registry, atomic_file};
    use super::*;

    /// What an earlier agent left: `endpoints.json` holding `registered` (damaged by
    /// `damage`), and a record of each of `recorded`.
    fn earlier_agent(
        dir: &Path,
        registered: &[&str],
        recorded: &[Endpoint],
        damage: impl Fn(Vec<u8>) -> Vec<u8>,
    ) {
        let endpoints: Vec<Endpoint> = registered.iter().map(|c| endpoint(c)).collect();
        let file = serde_json::json!({ "endpoints": endpoints });
        let bytes = serde_json::to_vec_pretty(&file).unwrap();
        std::fs::write(dir.join(FILE), damage(bytes)).unwrap();
        Records::new(dir).write_all(recorded).unwrap();
    }

    #[test]
    fn the_file_is_the_truth_and_goes_once_migrated() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        // `a`'s record is stale (written before a re-ADD changed it), `c`'s outlived its
        // endpoint (the old agent removed records after the file), `b` has none (an agent
        // from before records).
        let mut stale_a = endpoint("a");
        stale_a.host_ifindex = 99;
        earlier_agent(dir, &["a", "b"], &[stale_a, endpoint("c")], |b| b);
        let reg = Registry::load(dir, &[]).unwrap();
        let ids: Vec<_> = reg.all().map(|e| e.id.container_id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(reg.get(&endpoint("a").id), Some(&endpoint("a")));
        assert_eq!(record_names(dir), [name("a"), name("b")]);
        assert!(!dir.join(FILE).exists(), "the registry file is gone");
        // From now on the records alone say it.
        let again = Registry::load(dir, &[]).unwrap();
        assert_eq!(again.len(), 2);
        assert_eq!(again.get(&endpoint("a").id), Some(&endpoint("a")));
    }

    #[test]
    fn a_corrupt_file_is_rebuilt_from_the_records_of_pinned_endpoints() {
        type Damage = fn(Vec<u8>) -> Vec<u8>;
        let damages: [Damage; 3] = [
            |b| b[..b.len() / 2].to_vec(),
            |_| Vec::new(),
            |_| b"{not json".to_vec(),
        ];
        for damage in damages {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path();
            let all = [endpoint("a"), endpoint("b"), endpoint("c")];
            earlier_agent(dir, &["a", "b", "c"], &all, damage);
            // `c` is no longer pinned (its datapath is gone); `d` is pinned but was never
            // registered (a crash before its ADD was acknowledged).
            let pinned = [name("a"), name("b"), name("d")];
            let reg = Registry::load(dir, &pinned).unwrap();
            let ids: Vec<_> = reg.all().map(|e| e.id.container_id.as_str()).collect();
            assert_eq!(ids, ["a", "b"]);
            assert_eq!(reg.get(&endpoint("a").id), Some(&endpoint("a")));
            assert!(dir.join(CORRUPT_COPY).exists(), "the corrupt file is kept");
            assert!(!dir.join(FILE).exists());
            assert_eq!(record_names(dir), [name("a"), name("b")]);
            let again = Registry::load(dir, &[]).unwrap();
            assert_eq!(again.len(), 2);
        }
    }

    #[test]
    fn a_record_under_another_endpoints_name_is_not_restored() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        earlier_agent(dir, &["a"], &[endpoint("a")], |_| Vec::new());
        std::fs::copy(
            dir.join(format!("endpoint.{}.json", name("a"))),
            dir.join(format!("endpoint.{}.json", name("x"))),
        )
        .unwrap();
        let reg = Registry::load(dir, &[name("x")]).unwrap();
        assert_eq!(reg.len(), 0);
    }

    #[test]
    fn migrating_writes_each_record_once_and_removes_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        earlier_agent(dir, &["a", "b", "c"], &[], |b| b);
        let records = Records::new(dir);
        let (touched, migrated) =
            atomic_file::counting::files_touched(|| migrate(dir, &records, &[]));
        assert_eq!(migrated.unwrap(), Some(3));
        // One per record, then the registry file removed.
        assert_eq!(touched, 3 + 1);
    }
}
