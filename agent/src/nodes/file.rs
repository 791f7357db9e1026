//! The static node file: every node of a standalone cluster, in YAML (or JSON, which
//! YAML reads too):
//!
//! ```yaml
//! nodes:
//!   - name: node-a
//!     addresses: [192.168.50.1, "fd00:50::1"]
//!     podCIDRs: [10.244.1.0/24, "fd00:244:1::/64"]
//! ```
//!
//! A file is taken whole or not at all: anything wrong is an error naming the field (and,
//! where the parser knows it, the line), and the caller keeps the last good node list.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use ipnetwork::IpNetwork;
use serde::Deserialize;

use super::{Node, NodeList};

/// A node file larger than this is refused (a 5,000-node cluster fits in well under it).
const MAX_FILE_BYTES: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum NodeFileError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: larger than {MAX_FILE_BYTES} bytes")]
    TooLarge { path: PathBuf },
    #[error("{path}: {field}: {message}")]
    Syntax {
        path: PathBuf,
        field: String,
        message: String,
    },
    #[error("{path}: {field}: {message}")]
    Invalid {
        path: PathBuf,
        field: String,
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    nodes: Vec<FileNode>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileNode {
    name: String,
    #[serde(default)]
    addresses: Vec<String>,
    #[serde(default, rename = "podCIDRs")]
    pod_cidrs: Vec<String>,
}

/// Parse and check a node file's contents; `path` only names it in errors.
pub fn parse(path: &Path, text: &str) -> Result<NodeList, NodeFileError> {
    let deserializer = serde_norway::Deserializer::from_str(text);
    let doc: FileDoc = serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let field = match e.path().to_string() {
            p if p == "." => "(document)".to_string(),
            p => p,
        };
        NodeFileError::Syntax {
            path: path.to_path_buf(),
            field,
            message: e.into_inner().to_string(),
        }
    })?;
    let invalid = |field: String, message: String| NodeFileError::Invalid {
        path: path.to_path_buf(),
        field,
        message,
    };
    let mut nodes = Vec::with_capacity(doc.nodes.len());
    for (i, raw) in doc.nodes.into_iter().enumerate() {
        let at = |field: &str| format!("nodes[{i}].{field}");
        if raw.name.trim().is_empty() {
            return Err(invalid(at("name"), "empty".into()));
        }
        let mut addresses = Vec::new();
        for (j, text) in raw.addresses.iter().enumerate() {
            let addr: IpAddr = text.trim().parse().map_err(|_| {
                invalid(
                    at(&format!("addresses[{j}]")),
                    format!("{text:?} is not an IP address"),
                )
            })?;
            addresses.push(addr);
        }
        let mut pod_cidrs = Vec::new();
        for (j, text) in raw.pod_cidrs.iter().enumerate() {
            let field = at(&format!("podCIDRs[{j}]"));
            let cidr: IpNetwork = text
                .trim()
                .parse()
                .map_err(|_| invalid(field.clone(), format!("{text:?} is not a CIDR")))?;
            if cidr.ip() != cidr.network() {
                return Err(invalid(
                    field,
                    format!(
                        "{text} has host bits set (the network is {})",
                        cidr.network()
                    ),
                ));
            }
            pod_cidrs.push(cidr);
        }
        nodes.push(Node {
            name: raw.name.trim().to_string(),
            addresses,
            pod_cidrs,
        });
    }
    let list = NodeList { nodes };
    list.check()
        .map_err(|(field, message)| invalid(field, message))?;
    Ok(list)
}

/// Read and parse the file at `path`.
pub fn load(path: &Path) -> Result<NodeList, NodeFileError> {
    let read_err = |source| NodeFileError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(NodeFileError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    let bytes = std::fs::read(path).map_err(read_err)?;
    let text = String::from_utf8(bytes).map_err(|e| NodeFileError::Syntax {
        path: path.to_path_buf(),
        field: "(document)".into(),
        message: format!("not UTF-8 (byte {})", e.utf8_error().valid_up_to()),
    })?;
    parse(path, &text)
}

/// Notices changes to the file. Polled rather than watched with inotify: the usual ways
/// of replacing such a file (an atomic rename, a ConfigMap's symlink swap, an editor's
/// save) all change what a stat of the path returns, and a poll needs no watch to be
/// re-established after the file it watched was replaced.
pub struct FileWatch {
    path: PathBuf,
    seen: Option<(SystemTime, u64, u64)>,
}

/// How often the file is checked.
pub const POLL_EVERY: Duration = Duration::from_secs(1);

impl FileWatch {
    pub fn new(path: &Path) -> Self {
        FileWatch {
            path: path.to_path_buf(),
            seen: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file looks different from the last time this returned true (the
    /// first call always does). Modification time, size and inode are compared.
    pub fn changed(&mut self) -> bool {
        use std::os::unix::fs::MetadataExt as _;
        let now = std::fs::metadata(&self.path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len(), m.ino())));
        if now.is_some() && now != self.seen {
            self.seen = now;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<NodeList, NodeFileError> {
        parse(Path::new("nodes.yaml"), text)
    }

    #[test]
    fn yaml_and_json_give_the_same_nodes() {
        let yaml = "nodes:\n  - name: node-a\n    addresses: [192.168.50.1, \"fd00:50::1\"]\n    podCIDRs: [10.244.1.0/24, \"fd00:244:1::/64\"]\n  - name: node-b\n    addresses: [192.168.50.2]\n    podCIDRs: [10.244.2.0/24]\n";
        let json = r#"{"nodes":[{"name":"node-a","addresses":["192.168.50.1","fd00:50::1"],"podCIDRs":["10.244.1.0/24","fd00:244:1::/64"]},{"name":"node-b","addresses":["192.168.50.2"],"podCIDRs":["10.244.2.0/24"]}]}"#;
        let a = parse_str(yaml).unwrap();
        assert_eq!(a, parse_str(json).unwrap());
        assert_eq!(a.nodes.len(), 2);
        assert_eq!(a.nodes[0].pod_cidrs.len(), 2);
        assert_eq!(a.nodes[1].addresses, vec![IpAddr::from([192, 168, 50, 2])]);
    }

    /// Each bad file is refused with the field (and where known the line) named.
    #[test]
    fn bad_files_name_the_problem() {
        let cases: &[(&str, &str)] = &[
            ("nodes: [", "line"),
            (
                "nodes:\n  - name: a\n    addresses: [not-an-ip]\n",
                "nodes[0].addresses[0]",
            ),
            (
                "nodes:\n  - name: a\n    podCIDRs: [10.1.0.0/33]\n",
                "nodes[0].podCIDRs[0]",
            ),
            (
                "nodes:\n  - name: a\n    podCIDRs: [10.1.0.5/24]\n",
                "host bits",
            ),
            (
                "nodes:\n  - name: a\n    podCidrs: [10.1.0.0/24]\n",
                "podCidrs",
            ),
            ("nodes:\n  - name: \"\"\n", "nodes[0].name"),
            ("nodes:\n  - addresses: [10.0.0.1]\n", "name"),
            ("nodes:\n  - name: a\n  - name: a\n", "nodes[1].name"),
            (
                "nodes:\n  - name: a\n    podCIDRs: [10.1.0.0/16]\n  - name: b\n    podCIDRs: [10.1.2.0/24]\n",
                "nodes[1].podCIDRs[0]",
            ),
            ("nodes: 7\n", "nodes"),
            (
                "{\"nodes\": [{\"name\": \"a\", \"addresses\": {\"x\": 1}}]}",
                "nodes[0].addresses",
            ),
        ];
        for (text, expect) in cases {
            let err = parse_str(text).expect_err(text).to_string();
            assert!(
                err.contains(expect),
                "{text:?}: {err:?} does not name {expect:?}"
            );
            assert!(err.starts_with("nodes.yaml: "), "{err}");
        }
    }

    #[test]
    fn a_watch_sees_replacement() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nodes.yaml");
        let mut watch = FileWatch::new(&path);
        assert!(!watch.changed(), "no file yet");
        std::fs::write(&path, "nodes: []\n").unwrap();
        assert!(watch.changed());
        assert!(!watch.changed());
        let tmp = dir.path().join("new");
        std::fs::write(&tmp, "nodes: []\n# replaced\n").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert!(watch.changed(), "an atomic replacement is a change");
    }
}
