//! Where things are pinned under the bpffs root (one root per agent, so several agents
//! can share a machine in tests):
//!
//! ```text
//! <root>/maps/NK_STATS, NK_ENDPOINTS      shared maps (pinned by name)
//! <root>/uplink/<ifname>                  tcx ingress link on the uplink
//! <root>/endpoints/<name>/                 one directory per endpoint
//! <root>/endpoints/<name>/egress          its pod egress link (netkit; a veth endpoint's
//!                                         program is a cls_bpf filter on its host end,
//!                                         kept by the device, so nothing is pinned)
//! ```

use std::path::{Path, PathBuf};

use super::{DatapathError, Result};

/// The pin of an endpoint's egress link, in its directory.
pub const EGRESS: &str = "egress";
/// The pin of the ingress link agents before the single-attach datapath made.
pub const LEGACY_INGRESS: &str = "ingress";

#[derive(Debug, Clone)]
pub struct PinLayout {
    root: PathBuf,
}

impl PinLayout {
    pub fn new(root: &Path) -> Self {
        PinLayout {
            root: root.to_path_buf(),
        }
    }

    pub fn maps_dir(&self) -> PathBuf {
        self.root.join("maps")
    }

    pub fn uplink_link(&self, ifname: &str) -> PathBuf {
        self.root.join("uplink").join(ifname)
    }

    pub fn endpoints_dir(&self) -> PathBuf {
        self.root.join("endpoints")
    }

    pub fn endpoint_dir(&self, name: &str) -> PathBuf {
        self.endpoints_dir().join(name)
    }

    pub fn create_dirs(&self) -> Result<()> {
        for dir in [
            self.maps_dir(),
            self.root.join("uplink"),
            self.endpoints_dir(),
        ] {
            std::fs::create_dir_all(&dir).map_err(|source| DatapathError::Io {
                what: "creating",
                path: dir.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// Names of the endpoint pin directories present (for reconciliation).
    pub fn pinned_endpoints(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.endpoints_dir()) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect()
    }
}
